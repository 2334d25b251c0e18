"""Map DNA encoder embeddings into the LLM's embedding space."""

from __future__ import annotations

import torch
from torch import nn


def n_pooled(n_positions: int, pool: int) -> int:
    """LLM positions for ``n_positions`` DNA positions compressed by ``pool``."""
    return -(-n_positions // pool)


class DNAProjector(nn.Module):
    """Mean-pool ``pool`` consecutive DNA positions, then project (linear or 2-layer MLP).

    ``pool=1`` keeps one LLM position per DNA token; ``pool=k`` gives ``ceil(n / k)``.
    Padding positions (``mask`` False) are left out of each mean.
    """

    def __init__(self, dna_hidden: int, llm_hidden: int, kind: str = "mlp", pool: int = 1):
        super().__init__()
        if kind not in ("linear", "mlp"):
            raise ValueError(f"projector.kind must be 'linear' or 'mlp', got {kind!r}")
        if pool < 1:
            raise ValueError(f"projector.pool must be >= 1, got {pool}")
        self.pool = pool
        self.norm = nn.LayerNorm(dna_hidden)
        if kind == "linear":
            self.proj = nn.Linear(dna_hidden, llm_hidden)
        else:
            self.proj = nn.Sequential(nn.Linear(dna_hidden, llm_hidden), nn.GELU(), nn.Linear(llm_hidden, llm_hidden))

    def forward(self, dna_embeds: torch.Tensor, dna_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # dna_embeds: (n_seq, positions, dna_hidden); dna_mask: (n_seq, positions)
        x = dna_embeds.to(self.norm.weight.dtype)
        if self.pool > 1:
            n_seq, length, hidden = x.shape
            pad = n_pooled(length, self.pool) * self.pool - length
            weight = nn.functional.pad(dna_mask.to(x.dtype), (0, pad))  # (n_seq, padded)
            x = nn.functional.pad(x, (0, 0, 0, pad)) * weight[..., None]
            x = x.view(n_seq, -1, self.pool, hidden).sum(2)  # (n_seq, pooled, hidden)
            count = weight.view(n_seq, -1, self.pool).sum(2)  # (n_seq, pooled)
            x = x / count.clamp(min=1)[..., None]
            dna_mask = count > 0
        return self.proj(self.norm(x)), dna_mask  # (n_seq, pooled, llm_hidden), (n_seq, pooled)
