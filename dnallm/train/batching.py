"""Micro-batches by a token budget (``train.max_tokens``) instead of a sample count.

A packed row's cost is its token count, not its number of samples: a budget of a few thousand
tokens per micro-batch keeps the GPU busy whatever the sample lengths. As fairseq's
``batch_by_size`` does, the micro-batches are formed once (samples in a seeded random order,
each micro-batch filled until the next sample would pass the budget) and each epoch shuffles
their order. So every epoch has the same number of micro-batches, every sample is in exactly
one of them, and ranks, which all compute the same plan, agree on the number of steps: the plan
splits its largest micro-batches until their count is a multiple of the number of ranks, and
deals them out in turn.
"""

from __future__ import annotations

import torch


class TokenBudgetBatches:
    def __init__(self, lengths: list[int], max_tokens: int, seed: int, world: int = 1):
        """``lengths``: tokens of each sample. A sample longer than the budget is a micro-batch alone."""
        if max_tokens < 1:
            raise ValueError(f"train.max_tokens must be at least 1, got {max_tokens}")
        self.seed, self.world = seed, world
        order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(seed)).tolist()
        self.batches = balance(fill(order, lengths, max_tokens), lengths, world)

    def __len__(self) -> int:
        """Micro-batches of one epoch on each rank."""
        return len(self.batches) // self.world

    def for_rank(self, epoch: int, rank: int) -> list[list[int]]:
        """``rank``'s micro-batches of ``epoch`` (sample indices), in order: a function of (seed, epoch)."""
        shuffled = torch.randperm(len(self.batches), generator=torch.Generator().manual_seed(self.seed + 1 + epoch))
        return [self.batches[i] for i in shuffled[rank :: self.world].tolist()]


def fill(order: list[int], lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Samples in ``order``, each micro-batch taking them until the next would pass ``max_tokens``."""
    batches, current, used = [], [], 0
    for i in order:
        if current and used + lengths[i] > max_tokens:
            batches.append(current)
            current, used = [], 0
        current.append(i)
        used += lengths[i]
    return batches + ([current] if current else [])


def balance(batches: list[list[int]], lengths: list[int], world: int) -> list[list[int]]:
    """Split the micro-batches with the most tokens in two until their count is a multiple of ``world``."""
    batches = list(batches)
    while len(batches) % world:
        splittable = [b for b in batches if len(b) > 1]
        if not splittable:
            raise ValueError(
                f"{len(batches)} samples cannot be dealt out evenly to {world} ranks, one micro-batch "
                "each; use fewer ranks or more data"
            )
        largest = max(splittable, key=lambda b: sum(lengths[i] for i in b))
        at = batches.index(largest)
        half = len(largest) // 2
        batches[at : at + 1] = [largest[:half], largest[half:]]
    return batches
