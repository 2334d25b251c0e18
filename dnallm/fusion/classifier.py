"""A classifier over (reference, variant) pairs: the fusion model's pair encoder plus a class layer.

It serves twice:
- the **DNA-only baseline** (``dnallm baselines``): the frozen encoder alone, read the way the
  fusion model reads it, so that the comparison is fair;
- the fusion model's **first stage** (``projector.pretrain_epochs``): the variant summary's
  pair encoder is trained on the task's labels before the LLM sees it, as LLaVA aligns its
  projector first. The LLM then starts from a summary that already tells the classes apart
  instead of having to shape it through its own attention.

The encoder runs once over every pair (``encode_pairs``); only the small classifier trains.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from dnallm.fusion.processor import dna_inputs
from dnallm.fusion.summary import SUMMARY_WIDTH, PairEncoder, pair_views


class PairClassifier(nn.Module):
    """``pair_views`` of (reference, variant) pairs -> class logits. (n_pairs, n_classes)"""

    def __init__(self, dna_hidden: int, n_classes: int, kind: str, context: int, dropout: float = 0.1):
        super().__init__()
        self.encoder = PairEncoder(dna_hidden, kind, context)
        self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(SUMMARY_WIDTH, n_classes))

    def forward(self, views: dict) -> torch.Tensor:
        return self.out(self.encoder(views))


@torch.no_grad()
def encode_pairs(
    encoder, references: list[str], variants: list[str], batch_size: int, context: int
) -> dict[str, torch.Tensor]:
    """-> ``pair_views`` of every (reference, variant) pair, on the CPU in float32, reference and
    variant rows interleaved (2 * n rows). The frozen encoder (or its cache) runs once."""
    parts: list[dict] = []
    for start in tqdm(range(0, len(references), batch_size), desc="encoding DNA pairs", unit="batch"):
        sequences = [
            s
            for pair in zip(references[start : start + batch_size], variants[start : start + batch_size])
            for s in pair
        ]
        dna = dna_inputs(encoder, sequences, batch_size)
        views = pair_views(dna["dna_embeds"].float(), dna["dna_mask"], dna["dna_spans"], context)
        parts.append({k: v.cpu() for k, v in views.items()})
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def pair_rows(views: dict, pairs: torch.Tensor) -> dict:
    """The views of ``pairs`` (indices of pairs): both rows of each pair, in order."""
    rows = torch.stack([2 * pairs, 2 * pairs + 1], 1).flatten()
    return {k: v[rows] for k, v in views.items()}


def train_classifier(
    views: dict,
    targets: torch.Tensor,
    n_classes: int,
    *,
    kind: str,
    context: int,
    epochs: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    dropout: float = 0.1,
    seed: int = 0,
    device: str = "cpu",
    desc: str = "training the pair classifier",
) -> tuple[PairClassifier, list[float]]:
    """Minibatch AdamW on the gathered views, on ``device``. -> (classifier in eval mode on the CPU, mean loss per epoch)"""
    generator = torch.Generator().manual_seed(seed)
    views, targets = {k: v.to(device) for k, v in views.items()}, targets.to(device)
    devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # its own random stream: the caller's (dropout, data order) stays
        torch.manual_seed(seed)
        head = PairClassifier(views["pooled"].shape[-1], n_classes, kind, context, dropout).to(device)
        optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
        losses = []
        for _ in tqdm(range(epochs), desc=desc, unit="epoch"):
            order = torch.randperm(len(targets), generator=generator).to(device)
            total = torch.zeros((), device=device)
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                loss = F.cross_entropy(head(pair_rows(views, idx)), targets[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.detach() * len(idx)
            losses.append(float(total) / len(order))  # one host sync an epoch
    return head.cpu().eval(), losses


@torch.no_grad()
def accuracy(head: PairClassifier, views: dict, targets: torch.Tensor) -> float:
    return float((head(views).argmax(-1) == targets.cpu()).float().mean())
