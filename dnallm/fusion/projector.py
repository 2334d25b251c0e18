"""Map DNA encoder embeddings into the LLM's embedding space, optionally compressed."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

KINDS = ("linear", "mlp", "conv")


def n_pooled(n_positions: int, pool: int) -> int:
    """LLM positions for ``n_positions`` DNA positions compressed by ``pool``."""
    return -(-n_positions // pool)


class DNAProjector(nn.Module):
    """DNA embeddings (n_seq, positions, dna_hidden) -> LLM embeddings (n_seq, ceil(positions / pool), llm_hidden).

    - ``linear`` / ``mlp``: mean of each group of ``pool`` consecutive positions, then a linear
      layer or a 2-layer MLP applied per position.
    - ``conv``: a strided 1-D convolution (``kernel >= pool`` bases wide, stride ``pool``) then
      a linear layer: each LLM position sees a k-mer-sized neighbourhood, as motif detectors do.
    Padding positions (``mask`` False) contribute nothing; a group is valid if any of its
    positions is.
    """

    def __init__(self, dna_hidden: int, llm_hidden: int, kind: str = "mlp", pool: int = 1, kernel: int = 9):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"projector.kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if pool < 1:
            raise ValueError(f"projector.pool must be >= 1, got {pool}")
        if kind == "conv" and kernel < pool:
            raise ValueError(
                f"projector.kernel ({kernel}) must be >= projector.pool ({pool}) so that no position is skipped"
            )
        self.kind, self.pool, self.kernel = kind, pool, kernel
        self.norm = nn.LayerNorm(dna_hidden)
        if kind == "linear":
            self.proj = nn.Linear(dna_hidden, llm_hidden)
        elif kind == "mlp":
            self.proj = nn.Sequential(nn.Linear(dna_hidden, llm_hidden), nn.GELU(), nn.Linear(llm_hidden, llm_hidden))
        else:
            self.conv = nn.Conv1d(dna_hidden, llm_hidden, kernel_size=kernel, stride=pool)
            self.proj = nn.Sequential(nn.GELU(), nn.Linear(llm_hidden, llm_hidden))

    def forward(self, dna_embeds: torch.Tensor, dna_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # dna_embeds: (n_seq, length, dna_hidden); dna_mask: (n_seq, length)
        weights = dna_mask.to(self.norm.weight.dtype)  # (n_seq, length): one cast, read twice
        x = self.norm(dna_embeds.to(weights.dtype)) * weights[..., None]
        n_seq, length, _ = x.shape
        n_out = n_pooled(length, self.pool)
        pad = n_out * self.pool - length
        if pad:
            weights = F.pad(weights, (0, pad))
        group_count = weights.view(n_seq, n_out, self.pool).sum(2)  # (n_seq, n_out)
        if self.kind == "conv":
            extra = self.kernel - self.pool  # context beyond each stride, split around it
            x = F.pad(x.transpose(1, 2), (extra // 2, pad + extra - extra // 2))  # (n_seq, dna_hidden, padded)
            x = self.conv(x).transpose(1, 2)  # (n_seq, n_out, llm_hidden)
        elif self.pool > 1:
            x = F.pad(x, (0, 0, 0, pad)).view(n_seq, n_out, self.pool, -1).sum(2)
            x = x / group_count.clamp(min=1)[..., None]  # (n_seq, n_out, dna_hidden)
        return self.proj(x), group_count > 0
