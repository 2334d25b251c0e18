"""Lay out prompts for the fusion model: one placeholder per projected DNA position.

Like a multimodal processor, this is the single place that decides how many
``<|dna_pad|>`` tokens a sequence gets, so that their count always equals the number
of features the projector produces for it.
"""

from __future__ import annotations

import torch

from dnallm.data import chat
from dnallm.fusion.packing import pack_rows
from dnallm.fusion.projector import n_pooled


class DNAChatProcessor:
    def __init__(self, tokenizer, dna_tokenizer=None, *, pool: int = 1, summary_tokens: int = 0,
                 system_prompt: str = chat.DEFAULT_SYSTEM_PROMPT, with_reasoning: bool = False, packing: bool = False):
        """``dna_tokenizer=None`` gives text-only prompts (the no-DNA baseline);
        ``summary_tokens``: positions of the model's variant summary (0: none);
        ``packing``: training batches are one packed row (``train_batch``)."""
        self.tokenizer = tokenizer
        self.dna_tokenizer = dna_tokenizer
        self.pool = pool
        self.summary_tokens = summary_tokens
        self.system_prompt = system_prompt
        self.with_reasoning = with_reasoning
        self.packing = packing

    @property
    def uses_dna(self) -> bool:
        return self.dna_tokenizer is not None

    def n_placeholders(self, seq: str) -> int:
        return n_pooled(self.dna_tokenizer.n_positions(seq), self.pool)

    def user_turn(self, question: str, reference: str | None = None, variant: str | None = None) -> str:
        """The user message for ``question`` about a (reference, variant) pair (none: text only)."""
        if reference is None:
            return chat.user_message(question, 0, 0)
        return chat.user_message(question, self.n_placeholders(reference), self.n_placeholders(variant), self.summary_tokens)

    def __call__(self, example: dict, with_answer: bool = True) -> dict:
        """Dataset row (``question``, ``answer``, ``reasoning``, ``ref_window``, ``var_window``) -> features."""
        dna = [example["ref_window"], example["var_window"]] if self.uses_dna else []
        user = self.user_turn(example["question"], *dna)
        reply = None
        if with_answer:
            reply = chat.answer_text(example["answer"], example.get("reasoning", "") if self.with_reasoning else "")
        features = chat.encode_example(self.tokenizer, self.system_prompt, user, reply)
        features["dna"] = dna
        return features

    def collate(self, rows: list[dict], side: str = "right") -> dict:
        """Pad text; DNA sequences stay strings, flattened in placeholder order."""
        batch = chat.pad_batch(rows, self.tokenizer.pad_token_id, side=side)
        batch["dna"] = [seq for row in rows for seq in row["dna"]]
        return batch

    def train_batch(self, rows: list[dict]) -> dict:
        """A batch to compute a loss on: one packed row (``packing``) or right-padded rows."""
        if not self.packing:
            return self.collate(rows)
        batch = pack_rows(rows, self.tokenizer.pad_token_id)
        batch["dna"] = [seq for row in rows for seq in row["dna"]]
        return batch


def dna_inputs(encoder, sequences: list[str], batch_size: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Run the frozen encoder over ``sequences`` in chunks. -> (embeds, mask) or (None, None)."""
    if not sequences:
        return None, None
    embeds, masks = [], []
    for start in range(0, len(sequences), batch_size):
        e, m = encoder.encode(sequences[start : start + batch_size])
        embeds.append(e)
        masks.append(m)
    longest = max(e.shape[1] for e in embeds)
    embeds = [torch.nn.functional.pad(e, (0, 0, 0, longest - e.shape[1])) for e in embeds]
    masks = [torch.nn.functional.pad(m, (0, longest - m.shape[1])) for m in masks]
    return torch.cat(embeds), torch.cat(masks)
