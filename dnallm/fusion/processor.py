"""Lay out prompts for the fusion model: one placeholder per projected DNA position.

Like a multimodal processor, this is the single place that decides how many
``<|dna_pad|>`` tokens a sequence gets, so that their count always equals the number
of features the projector produces for it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dnallm.data import chat
from dnallm.data.dna import change_span
from dnallm.fusion.config import DNAFusionConfig
from dnallm.fusion.packing import pack_rows
from dnallm.fusion.projector import n_pooled
from dnallm.fusion.summary import view_layout


class DNAChatProcessor:
    def __init__(
        self,
        tokenizer,
        dna_tokenizer=None,
        *,
        pool: int = 1,
        summary_tokens: int = 0,
        summary_context: int = 0,
        system_prompt: str = chat.DEFAULT_SYSTEM_PROMPT,
        with_reasoning: bool = False,
        packing: bool = False,
    ):
        """``dna_tokenizer=None`` gives text-only prompts (the no-DNA baseline);
        ``summary_tokens``: positions of the model's variant summary (0: none), ``summary_context``
        the encoder positions it reads around each change (training batches carry where: ``dna_layout``);
        ``packing``: training batches are one packed row (``train_batch``)."""
        self.tokenizer = tokenizer
        self.dna_tokenizer = dna_tokenizer
        self.pool = pool
        self.summary_tokens = summary_tokens
        self.summary_context = summary_context
        self.system_prompt = system_prompt
        self.with_reasoning = with_reasoning
        self.packing = packing

    @classmethod
    def from_config(
        cls, config: DNAFusionConfig, tokenizer, dna_tokenizer=None, packing: bool = False
    ) -> "DNAChatProcessor":
        """The prompt layout of the model ``config`` describes (``DNAFusionLM.from_config``'s tokenizer)."""
        pool, _, context = config.positions(dna_tokenizer)
        summary = config.use_dna and config.projector.summary != "none"
        return cls(
            tokenizer,
            dna_tokenizer if config.use_dna else None,
            pool=pool,
            summary_tokens=config.projector.summary_tokens if summary else 0,
            summary_context=context if summary else 0,
            system_prompt=config.system_prompt,
            with_reasoning=config.with_reasoning,
            packing=packing,
        )

    @property
    def uses_dna(self) -> bool:
        return self.dna_tokenizer is not None

    def n_placeholders(self, seq: str) -> int:
        return n_pooled(self.dna_tokenizer.n_positions(seq), self.pool)

    def user_turn(self, question: str, reference: str | None = None, variant: str | None = None) -> str:
        """The user message for ``question`` about a (reference, variant) pair (none: text only)."""
        if reference is None:
            return chat.user_message(question, 0, 0)
        return chat.user_message(
            question, self.n_placeholders(reference), self.n_placeholders(variant), self.summary_tokens
        )

    def __call__(self, example: dict, with_answer: bool = True) -> dict:
        """Dataset row (``question``, ``answer``, ``reasoning``, ``ref_window``, ``var_window``) -> features."""
        dna = [example["ref_window"], example["var_window"]] if self.uses_dna else []
        user = self.user_turn(example["question"], *dna)
        reply = None
        if with_answer:
            reply = chat.answer_text(example["answer"], example.get("reasoning", "") if self.with_reasoning else "")
        system = example.get("system") or self.system_prompt  # a chat record may bring its own
        features = chat.encode_example(self.tokenizer, system, user, reply)
        features["dna"] = dna
        return features

    def collate(self, rows: list[dict], side: str = "right") -> dict:
        """Pad text; DNA sequences stay strings, flattened in placeholder order."""
        batch = chat.pad_batch(rows, self.tokenizer.pad_token_id, side=side)
        batch["dna"] = [seq for row in rows for seq in row["dna"]]
        return batch

    def train_batch(self, rows: list[dict]) -> dict:
        """A batch to compute a loss on: one packed row (``packing``) or right-padded rows, with the
        variant summary's ``dna_layout`` when the model has one."""
        if self.packing:
            batch = pack_rows(rows, self.tokenizer.pad_token_id)
            batch["dna"] = [seq for row in rows for seq in row["dna"]]
        else:
            batch = self.collate(rows)
        if self.summary_context and batch["dna"]:
            batch["dna_layout"] = self.dna_layout(batch["dna"])
        return batch

    def dna_layout(self, sequences: list[str]) -> torch.Tensor:
        """Where the variant summary reads each of ``sequences`` (reference, variant, ...) in the
        encoder's embeddings (``summary.view_layout``), found on the host from the sequences alone:
        the training step then gathers, with no index work of its own. (n_seq, 2 * slots + 1)"""
        positions = [self.dna_tokenizer.n_positions(seq) for seq in sequences]
        count = torch.tensor(positions)[:, None]  # (n_seq, 1)
        return view_layout(position_spans(sequences, positions), count, max(positions), self.summary_context)


def pair_spans(sequences: list[str]) -> torch.Tensor:
    """Where each window's changed bases lie, from aligning each (reference, variant) pair
    (``dnallm.data.dna.change_span``). -> (n_seq, 3) long: start, end, window length in bases."""
    return torch.tensor(_base_spans(sequences), dtype=torch.long)


def _base_spans(sequences: list[str]) -> list[tuple[int, int, int]]:
    if len(sequences) % 2:
        raise ValueError(f"DNA inputs come as (reference, variant) pairs, got {len(sequences)} sequences")
    rows = []
    for ref, var in zip(sequences[0::2], sequences[1::2]):
        ref_span, var_span = change_span(ref, var)
        rows += [(*ref_span, len(ref)), (*var_span, len(var))]
    return rows


def dna_inputs(encoder, sequences: list[str], batch_size: int) -> dict[str, torch.Tensor]:
    """Run the frozen encoder over ``sequences`` (reference, variant, reference, ...) in chunks.

    -> the fusion model's DNA keyword arguments (none when there are no sequences):
    ``dna_embeds`` (n_seq, positions, hidden), ``dna_mask`` (n_seq, positions) and
    ``dna_spans`` (n_seq, 2): where each window's changed bases start and end, in encoder
    positions (bases scaled by positions per base: exact for one token per base).
    """
    if not sequences:
        return {}
    embeds, masks = [], []
    for start in range(0, len(sequences), batch_size):
        e, m = encoder.encode(sequences[start : start + batch_size])
        embeds.append(e)
        masks.append(m)
    positions = [encoder.tokenizer.n_positions(seq) for seq in sequences]  # on the host: the spans found there
    return pair_inputs(sequences, *stack_padded(embeds, masks), positions)


def stack_padded(embeds: list[torch.Tensor], masks: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunks of encodings, each (n, positions_i, hidden) and (n, positions_i), as one batch padded
    to the longest. -> (n_seq, positions, hidden), (n_seq, positions)"""
    if len(embeds) == 1:  # one chunk (a micro-batch within the encoder's batch size): nothing to copy
        return embeds[0], masks[0]
    longest = max(e.shape[1] for e in embeds)
    embeds = torch.cat([e if e.shape[1] == longest else F.pad(e, (0, 0, 0, longest - e.shape[1])) for e in embeds])
    mask = torch.cat([m if m.shape[1] == longest else F.pad(m, (0, longest - m.shape[1])) for m in masks])
    return embeds, mask


def pair_inputs(
    sequences: list[str], embeds: torch.Tensor, mask: torch.Tensor, positions: list[int] | None = None
) -> dict[str, torch.Tensor]:
    """The DNA keyword arguments of ``dna_inputs`` from encodings already made (in-silico
    mutagenesis encodes only the mutated window of each pair). ``positions``: each sequence's
    valid positions when the host knows them; None: read from ``mask`` (the host waits for it)."""
    if positions is None:
        positions = mask.sum(1).tolist()
    spans = position_spans(sequences, positions).to(mask.device, non_blocking=True)
    return {"dna_embeds": embeds, "dna_mask": mask, "dna_spans": spans}


def position_spans(sequences: list[str], positions: list[int]) -> torch.Tensor:
    """Where each window's changed bases lie (``pair_spans``) in encoder positions, given each
    window's valid positions: bases scaled by positions per base (exact for one token per base),
    a changed base keeping its token. Integers on the host. -> (n_seq, 2) long: start, end"""
    rows = []
    for (start, end, length), n in zip(_base_spans(sequences), positions):
        length = max(length, 1)
        first = start * n // length
        rows.append((first, (end * n + length - 1) // length if end > start else first))
    return torch.tensor(rows, dtype=torch.long)
