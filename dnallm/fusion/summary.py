"""A few LLM positions that show the variant itself: the (reference, variant) pair side by side.

The per-position blocks give the LLM every DNA position, but a variant is usually one base
in a window of a thousand: to find it the LLM would have to compare two long blocks
position by position. A classifier over the same frozen embeddings sees pooled reference,
variant and their difference side by side and finds it at once. The summary gives the LLM
that view: features of the pair, projected to ``n_tokens`` positions after the two blocks.

Views (``kind``, joined with ``+``):
- ``pooled``: the masked mean of each window, as the DNA-only head sees it. Works for any
  pair of windows, aligned or not (indels are centred per allele, so they are not).
- ``centre``: the encoder's positions at the centre of each window, where the variant sits
  (windows are centred on the allele), ``context`` of them: a single changed base is at
  full strength there, not diluted by the window's length, and its sequence context (the
  neighbouring bases that decide, say, a CpG site or a splice motif) comes with it.
Each view contributes reference, variant and variant - reference: the centre position itself
at full width, its flanks position by position, each projected to a small width, before the MLP.
"""

from __future__ import annotations

import torch
from torch import nn

from dnallm.fusion.classifier import masked_mean, pair_features

VIEWS = ("pooled", "centre")
SUMMARY_KINDS = ("none", "pooled", "centre", "pooled+centre")


def centre_positions(embeds: torch.Tensor, mask: torch.Tensor, width: int = 1) -> torch.Tensor:
    """(n_seq, positions, hidden), (n_seq, positions) -> (n_seq, width, hidden): the ``width``
    valid positions around the middle one, zeros past either end of a short sequence.

    Valid positions come first (the encoder pads on the right), so the middle of ``count``
    valid positions is ``count // 2``: base ``window // 2`` for one token per base, the token
    covering it for k-mer tokens, and the token nearest it for BPE.
    """
    count = mask.sum(1, keepdim=True)  # (n_seq, 1)
    index = count // 2 + torch.arange(width, device=embeds.device) - width // 2  # (n_seq, width)
    inside = (index >= 0) & (index < count)
    index = index.clamp(0, embeds.shape[1] - 1)
    picked = embeds.gather(1, index[..., None].expand(-1, -1, embeds.shape[-1]))
    return picked * inside[..., None].to(picked.dtype)


class VariantSummary(nn.Module):
    """DNA embeddings of pairs (2 * n_pairs, positions, dna_hidden), reference then variant
    -> summary embeddings (n_pairs, n_tokens, llm_hidden)."""

    def __init__(self, dna_hidden: int, llm_hidden: int, kind: str = "pooled+centre", n_tokens: int = 1, context: int = 9):
        """``context``: encoder positions the centre view reads (odd: the centre and its flanks)."""
        super().__init__()
        if kind not in SUMMARY_KINDS or kind == "none":
            raise ValueError(f"projector.summary must be one of {', '.join(SUMMARY_KINDS)}, got {kind!r}")
        if n_tokens < 1:
            raise ValueError(f"projector.summary_tokens must be >= 1, got {n_tokens}")
        if context < 1 or context % 2 == 0:
            raise ValueError(f"projector.summary_context must be odd and >= 1 (the centre and equal flanks), got {context}")
        self.views = tuple(kind.split("+"))
        self.n_tokens, self.llm_hidden, self.context = n_tokens, llm_hidden, context
        self.norm = nn.LayerNorm(dna_hidden)
        features = 0
        if "pooled" in self.views:
            features += 3 * dna_hidden
        if "centre" in self.views:
            features += 3 * dna_hidden  # the variant's own position, as the pooled view sees a window
            if context > 1:
                # Each context position's (reference, variant, difference) to a small width, then
                # side by side: the MLP sees which base sits where, as a k-mer detector does.
                per_position = min(llm_hidden, 256)
                self.context_proj = nn.Sequential(nn.LayerNorm(3 * dna_hidden), nn.Linear(3 * dna_hidden, per_position), nn.GELU())
                features += context * per_position
        hidden = max(llm_hidden, 256)  # at least as wide as the DNA-only head's
        self.mlp = nn.Sequential(
            nn.LayerNorm(features),
            nn.Linear(features, hidden),
            nn.GELU(),
            nn.Linear(hidden, n_tokens * llm_hidden),
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
            centre = pair_features(centre_positions(ref, ref_mask, self.context), centre_positions(var, var_mask, self.context))
            parts.append(centre[:, self.context // 2])  # (n_pairs, 3 * dna_hidden)
            if self.context > 1:
                parts.append(self.context_proj(centre).flatten(1))  # (n_pairs, context * per_position)
        out = self.mlp(torch.cat(parts, dim=-1))  # (n_pairs, n_tokens * llm_hidden)
        return out.view(-1, self.n_tokens, self.llm_hidden)
