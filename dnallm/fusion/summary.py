"""A few LLM positions that show what the variant changes: the (reference, variant) pair side by side.

The per-position blocks give the LLM every DNA position, but a variant is usually one base
in a window of a thousand, and an insertion or deletion shifts every position after it: to
find the change the LLM would have to align two long blocks itself. The summary does it for
the LLM: features of the pair, projected to ``n_tokens`` positions after the two blocks. The
DNA-only baseline head reads the very same features (``PairFeatures``), so the fusion model
and its baseline see the pair alike.

Where the windows differ comes with the inputs (``dna_spans``, from aligning each pair:
``dnallm.data.dna.change_span``): the left flanks aligned from the left, the right flanks from
the right, the changed bases between them (none on one side for an insertion or deletion).

Views (``kind``, joined with ``+``), each reading reference, variant and variant - reference:
- ``pooled``: the masked mean of each window, as a classifier over whole windows sees it.
- ``aligned``: the positions around the change, laid out so that corresponding positions
  meet: ``flank`` before the change, the changed positions (up to ``allele``), ``flank``
  after it; each position's (reference, variant, difference) projected to a small width and
  laid side by side, so the MLP sees which base sits where; plus each side's allele length
  (an insertion, a deletion, its size).
- ``kmers``: k-mer detectors (a convolution ``flank + 1`` positions wide) run over each
  window's contiguous stretch around the change, max-pooled: every k-mer that overlaps the
  change is seen whole, so a binding site the variant creates or breaks shows as present in
  one window and absent in the other.
- ``centre``: the positions at the middle of each window (windows are centred on the
  allele), ``context`` of them, compared position by position: the design before
  alignment, exact for single-base variants only.
"""

from __future__ import annotations

import torch
from torch import nn

from dnallm.config import DEFAULT_SUMMARY, SUMMARY_VIEWS

POSITION_WIDTH = 64  # each aligned position's (reference, variant, difference) projected to this width
KMER_CHANNELS = 128  # k-mer detectors
LENGTH_WIDTH = 16  # allele-length embedding per side
SUMMARY_WIDTH = 256  # the pair encoder's output: the summary and the DNA-only head read the pair through it


def masked_mean(embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(n_seq, positions, hidden), (n_seq, positions) -> (n_seq, hidden); padding ignored."""
    weights = mask[..., None].to(embeds.dtype)
    return (embeds * weights).sum(1) / weights.sum(1).clamp(min=1)


def pair_features(ref: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """Reference, variant and their difference side by side: (..., hidden) x 2 -> (..., 3 * hidden)."""
    return torch.cat([ref, var, var - ref], dim=-1)


def parse_summary(kind: str) -> tuple[str, ...]:
    """``pooled+aligned`` -> ("pooled", "aligned"); ``none`` -> (). Unknown views are an error."""
    if kind == "none":
        return ()
    views = tuple(kind.split("+"))
    unknown = [v for v in views if v not in SUMMARY_VIEWS]
    if unknown or len(set(views)) != len(views) or not views:
        raise ValueError(
            f"projector.summary must be none or views joined with '+' from {', '.join(SUMMARY_VIEWS)} "
            f"(e.g. {DEFAULT_SUMMARY}), got {kind!r}"
        )
    return views


def context_sizes(context: int) -> tuple[int, int]:
    """``context`` encoder positions (odd) -> (flank positions each side of the change, allele slots)."""
    if context < 1 or context % 2 == 0:
        raise ValueError(f"projector.summary_context must be odd and >= 1 (a change and equal flanks), got {context}")
    return context // 2, context // 2 + 1


def centre_spans(mask: torch.Tensor) -> torch.Tensor:
    """(n_seq, positions) -> (n_seq, 2): the middle position of each window, for inputs that
    come without alignment (windows are centred on the allele)."""
    middle = mask.sum(1, keepdim=True) // 2
    return torch.cat([middle, middle + 1], 1)


def centre_positions(embeds: torch.Tensor, mask: torch.Tensor, width: int = 1) -> torch.Tensor:
    """(n_seq, positions, hidden), (n_seq, positions) -> (n_seq, width, hidden): the ``width``
    valid positions around the middle one, zeros past either end of a short sequence.

    Valid positions come first (the encoder pads on the right), so the middle of ``count``
    valid positions is ``count // 2``: base ``window // 2`` for one token per base, the token
    covering it for k-mer tokens, and the token nearest it for BPE.
    """
    index, valid = _centre_index(mask.sum(1, keepdim=True), width)
    return _gather(embeds, index.clamp(0, embeds.shape[1] - 1), valid)


def _centre_index(count: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n_seq, 1) valid positions -> (n_seq, width) positions around the middle, and which are valid."""
    index = count // 2 + torch.arange(width, device=count.device) - width // 2  # (n_seq, width)
    return index, (index >= 0) & (index < count)


def _gather(embeds: torch.Tensor, index: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """embeds (n, positions, hidden) at index (n, k), within positions -> (n, k, hidden), zeros where not ``valid``."""
    picked = embeds.gather(1, index[..., None].expand(-1, -1, embeds.shape[-1]))
    return picked * valid[..., None].to(picked.dtype)


def view_layout(spans: torch.Tensor, count: torch.Tensor, width: int, context: int) -> torch.Tensor:
    """Where ``pair_views`` reads each window, from integers alone: made on the host when a batch
    is collated (``DNAChatProcessor.dna_layout``), so that the step only gathers; or on the
    embeddings' device from their mask (``pair_views`` without one).

    spans (n_seq, 2): each window's change (``dna_spans``), count (n_seq, 1): its valid positions,
    width: the positions its embeddings are padded to -> (n_seq, 2 * slots + 1) long: for the
    ``slots`` (the local stretch, its aligned layout, the centre; ``layout_slots``) the position
    to read (within ``width``), then whether it holds a position of the window (0 / 1), then the
    changed positions (the allele's length).
    """
    flank, allele = context_sizes(context)
    start, end = spans[:, :1], spans[:, 1:]  # (n_seq, 1) each
    slot = torch.arange(2 * flank + allele, device=spans.device)  # (slots,)
    local = start - flank + slot  # (n_seq, slots)
    local_mask = (local >= 0) & (local < count) & (local < end + flank)
    in_allele = (slot >= flank) & (slot < flank + allele)
    aligned = torch.where(
        slot < flank + allele, local, end + slot - flank - allele
    )  # right flank from the change's end
    aligned_mask = (aligned >= 0) & (aligned < count) & torch.where(in_allele, aligned < end, True)
    centre, centre_mask = _centre_index(count, context)
    index = torch.cat([local, aligned, centre], 1).clamp(0, width - 1)
    valid = torch.cat([local_mask, aligned_mask, centre_mask], 1)
    return torch.cat([index, valid.long(), end - start], 1)


def layout_slots(context: int) -> tuple[int, int, int]:
    """The slots of ``view_layout``'s three reads: (local stretch, aligned layout, centre)."""
    flank, allele = context_sizes(context)
    return 2 * flank + allele, 2 * flank + allele, context


def pair_views(
    dna_embeds: torch.Tensor,
    dna_mask: torch.Tensor,
    dna_spans: torch.Tensor | None,
    context: int,
    layout: torch.Tensor | None = None,
) -> dict:
    """What ``PairFeatures`` reads of each window, gathered from the frozen embeddings (no
    parameters: the DNA-only head computes these once and trains on them).

    dna_embeds (n_seq, positions, hidden), dna_mask (n_seq, positions), dna_spans (n_seq, 2)
    -> ``pooled`` (n_seq, hidden); ``local`` (n_seq, 2 * flank + allele, hidden): the window's
    contiguous stretch from ``flank`` positions before its change, and ``local_mask``;
    ``aligned`` / ``aligned_mask``: the same positions laid out so that a pair's two windows
    line up (slots [0, flank) the left flank, then ``allele`` slots for the changed positions,
    fewer of them valid for a shorter change, then the right flank); ``allele_len`` (n_seq,):
    the changed positions; ``centre`` (n_seq, context, hidden).
    ``layout``: ``view_layout`` made ahead (then ``dna_spans`` is not read); None: made here.
    """
    if layout is None:
        spans = centre_spans(dna_mask) if dna_spans is None else dna_spans.to(dna_mask.device)
        layout = view_layout(spans, dna_mask.sum(1, keepdim=True), dna_embeds.shape[1], context)
    n_local, n_aligned, n_centre = layout_slots(context)
    slots = n_local + n_aligned + n_centre
    valid = layout[:, slots : 2 * slots].bool()  # (n_seq, slots)
    # One gather for the three reads: (n_seq, slots, hidden), zeros where a slot holds no position.
    picked = _gather(dna_embeds, layout[:, :slots], valid)
    return {
        "pooled": masked_mean(dna_embeds, dna_mask),
        "local": picked[:, :n_local],
        "local_mask": valid[:, :n_local],
        "aligned": picked[:, n_local : n_local + n_aligned],
        "aligned_mask": valid[:, n_local : n_local + n_aligned],
        "allele_len": layout[:, 2 * slots],
        "centre": picked[:, n_local + n_aligned :],
    }


class PairFeatures(nn.Module):
    """``pair_views`` of (reference, variant) pairs -> one feature vector per pair. (n_pairs, n_features)"""

    def __init__(self, dna_hidden: int, kind: str = DEFAULT_SUMMARY, context: int = 17):
        super().__init__()
        self.views = parse_summary(kind)
        if not self.views:
            raise ValueError("PairFeatures needs at least one view; projector.summary=none has no summary")
        self.context = context
        self.flank, self.allele = context_sizes(context)
        self.norm = nn.LayerNorm(dna_hidden)
        n = 0
        if "pooled" in self.views:
            n += 3 * dna_hidden
        if "aligned" in self.views:
            self.position_proj = _position_proj(dna_hidden)
            self.allele_length = nn.Embedding(self.allele + 2, LENGTH_WIDTH)  # 0 .. allele, then "longer"
            n += (2 * self.flank + self.allele) * POSITION_WIDTH + 2 * LENGTH_WIDTH
        if "kmers" in self.views:
            self.kmer = nn.Conv1d(dna_hidden, KMER_CHANNELS, kernel_size=self.flank + 1)
            n += 3 * KMER_CHANNELS
        if "centre" in self.views:
            n += 3 * dna_hidden  # the variant's own position at full width
            if context > 1:
                self.centre_proj = _position_proj(dna_hidden)
                n += context * POSITION_WIDTH
        self.n_features = n

    def forward(self, views: dict) -> torch.Tensor:
        dtype = self.norm.weight.dtype
        if views["pooled"].shape[0] % 2:
            raise ValueError(
                f"the variant summary reads (reference, variant) pairs, got {views['pooled'].shape[0]} sequences"
            )
        parts = []
        if "pooled" in self.views:
            pooled = self.norm(views["pooled"].to(dtype))  # (2 * n_pairs, hidden)
            parts.append(pair_features(pooled[0::2], pooled[1::2]))
        if "aligned" in self.views:
            slots, valid = self.norm(views["aligned"].to(dtype)), views["aligned_mask"]  # (2 * n_pairs, slots, ...)
            both = (valid[0::2] | valid[1::2])[..., None].to(dtype)  # (n_pairs, slots, 1)
            parts.append((self.position_proj(pair_features(slots[0::2], slots[1::2])) * both).flatten(1))
            length = self.allele_length(views["allele_len"].clamp(0, self.allele + 1))  # (2 * n_pairs, LENGTH_WIDTH)
            parts.append(torch.cat([length[0::2], length[1::2]], -1))
        if "kmers" in self.views:
            mask = views["local_mask"]
            local = self.norm(views["local"].to(dtype)) * mask[..., None].to(dtype)  # (2 * n_pairs, slots, hidden)
            hits = self.kmer(local.transpose(1, 2))  # (2 * n_pairs, channels, windows)
            whole = mask.unfold(1, self.flank + 1, 1).all(-1)  # (2 * n_pairs, windows): k-mers inside the stretch
            present = hits.masked_fill(~whole[:, None], torch.finfo(hits.dtype).min).amax(-1)
            present = torch.where(
                whole.any(1, keepdim=True), present, torch.zeros_like(present)
            )  # (2 * n_pairs, channels)
            parts.append(pair_features(present[0::2], present[1::2]))
        if "centre" in self.views:
            centre = self.norm(views["centre"].to(dtype))
            pair = pair_features(centre[0::2], centre[1::2])  # (n_pairs, context, 3 * hidden)
            parts.append(pair[:, self.context // 2])
            if self.context > 1:
                parts.append(self.centre_proj(pair).flatten(1))
        return torch.cat(parts, -1)


def _position_proj(dna_hidden: int) -> nn.Module:
    """One position's (reference, variant, difference) to ``POSITION_WIDTH``, as a k-mer detector's input."""
    return nn.Sequential(nn.LayerNorm(3 * dna_hidden), nn.Linear(3 * dna_hidden, POSITION_WIDTH), nn.GELU())


class PairEncoder(nn.Module):
    """``pair_views`` -> (n_pairs, ``SUMMARY_WIDTH``): the pair features through one hidden layer.

    Shared by the fusion model's variant summary and the DNA-only classifier head, so that the
    head can train it first (``projector.pretrain_epochs``: ``dnallm.fusion.classifier``)."""

    def __init__(self, dna_hidden: int, kind: str = DEFAULT_SUMMARY, context: int = 17):
        super().__init__()
        self.features = PairFeatures(dna_hidden, kind, context)
        self.context = context
        self.mlp = nn.Sequential(
            nn.LayerNorm(self.features.n_features), nn.Linear(self.features.n_features, SUMMARY_WIDTH), nn.GELU()
        )

    def forward(self, views: dict) -> torch.Tensor:
        return self.mlp(self.features(views))


class VariantSummary(nn.Module):
    """DNA embeddings of pairs (2 * n_pairs, positions, dna_hidden), reference then variant
    -> summary embeddings (n_pairs, n_tokens, llm_hidden)."""

    def __init__(
        self, dna_hidden: int, llm_hidden: int, kind: str = DEFAULT_SUMMARY, n_tokens: int = 1, context: int = 17
    ):
        """``context``: encoder positions the local views read (odd: a change and its flanks)."""
        super().__init__()
        if n_tokens < 1:
            raise ValueError(f"projector.summary_tokens must be >= 1, got {n_tokens}")
        self.encoder = PairEncoder(dna_hidden, kind, context)
        self.n_tokens, self.llm_hidden, self.context = n_tokens, llm_hidden, context
        self.out = nn.Linear(SUMMARY_WIDTH, n_tokens * llm_hidden)

    def forward(
        self,
        dna_embeds: torch.Tensor,
        dna_mask: torch.Tensor,
        dna_spans: torch.Tensor | None = None,
        dna_layout: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``dna_layout``: ``view_layout`` made when the batch was collated (else from ``dna_spans``)."""
        views = pair_views(dna_embeds, dna_mask, dna_spans, self.context, dna_layout)
        return self.out(self.encoder(views)).view(
            -1, self.n_tokens, self.llm_hidden
        )  # (n_pairs, n_tokens, llm_hidden)
