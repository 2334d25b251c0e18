"""A few LLM positions that show the variant itself: the (reference, variant) pair side by side.

The per-position blocks give the LLM every DNA position, but a variant is usually one base
in a window of a thousand: to find it the LLM would have to compare two long blocks
position by position. A classifier over the same frozen embeddings sees pooled reference,
variant and their difference side by side and finds it at once. The summary gives the LLM
that view: features of the pair, projected to ``n_tokens`` positions after the two blocks.

Views (``kind``, joined with ``+``):
- ``pooled``: the masked mean of each window, as the DNA-only head sees it. Works for any
  pair of windows, aligned or not (indels are centred per allele, so they are not).
- ``centre``: the encoder's position at the centre of each window, where the variant sits
  (windows are centred on the allele): a single changed base is at full strength there,
  not diluted by the window's length.
Each view contributes reference, variant and variant - reference.
"""

from __future__ import annotations

import torch
from torch import nn

from dnallm.fusion.classifier import masked_mean, pair_features

VIEWS = ("pooled", "centre")
SUMMARY_KINDS = ("none", "pooled", "centre", "pooled+centre")


def centre_positions(embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(n_seq, positions, hidden), (n_seq, positions) -> (n_seq, hidden): the middle valid position.

    Valid positions come first (the encoder pads on the right), so the middle of ``count``
    valid positions is ``count // 2``: base ``window // 2`` for one token per base, the token
    covering it for k-mer tokens, and the token nearest it for BPE.
    """
    middle = (mask.sum(1) // 2).clamp(max=embeds.shape[1] - 1)  # (n_seq,)
    return embeds[torch.arange(embeds.shape[0], device=embeds.device), middle]


class VariantSummary(nn.Module):
    """DNA embeddings of pairs (2 * n_pairs, positions, dna_hidden), reference then variant
    -> summary embeddings (n_pairs, n_tokens, llm_hidden)."""

    def __init__(self, dna_hidden: int, llm_hidden: int, kind: str = "pooled+centre", n_tokens: int = 1):
        super().__init__()
        if kind not in SUMMARY_KINDS or kind == "none":
            raise ValueError(f"projector.summary must be one of {', '.join(SUMMARY_KINDS)}, got {kind!r}")
        if n_tokens < 1:
            raise ValueError(f"projector.summary_tokens must be >= 1, got {n_tokens}")
        self.views = tuple(kind.split("+"))
        self.n_tokens, self.llm_hidden = n_tokens, llm_hidden
        self.norm = nn.LayerNorm(dna_hidden)
        features = 3 * dna_hidden * len(self.views)
        self.mlp = nn.Sequential(
            nn.LayerNorm(features),
            nn.Linear(features, llm_hidden),
            nn.GELU(),
            nn.Linear(llm_hidden, n_tokens * llm_hidden),
        )

    def forward(self, dna_embeds: torch.Tensor, dna_mask: torch.Tensor) -> torch.Tensor:
        if dna_embeds.shape[0] % 2:
            raise ValueError(f"the variant summary reads (reference, variant) pairs, got {dna_embeds.shape[0]} sequences")
        x = self.norm(dna_embeds.to(self.norm.weight.dtype))  # (2 * n_pairs, positions, dna_hidden)
        ref, var, ref_mask, var_mask = x[0::2], x[1::2], dna_mask[0::2], dna_mask[1::2]
        parts = []
        if "pooled" in self.views:
            parts.append(pair_features(masked_mean(ref, ref_mask), masked_mean(var, var_mask)))
        if "centre" in self.views:
            parts.append(pair_features(centre_positions(ref, ref_mask), centre_positions(var, var_mask)))
        out = self.mlp(torch.cat(parts, dim=-1))  # (n_pairs, n_tokens * llm_hidden)
        return out.view(-1, self.n_tokens, self.llm_hidden)
