"""The DNA-only baseline model: a classifier head over pooled frozen-encoder embeddings.

No language model: it shows how much of a task the DNA encoder alone can solve.
"""

from __future__ import annotations

import torch
from torch import nn


def masked_mean(embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(n_seq, positions, hidden), (n_seq, positions) -> (n_seq, hidden); padding ignored."""
    weights = mask[..., None].to(embeds.dtype)
    return (embeds * weights).sum(1) / weights.sum(1).clamp(min=1)


def pair_features(ref_pooled: torch.Tensor, var_pooled: torch.Tensor) -> torch.Tensor:
    """Reference, variant and their difference side by side: (n, hidden) x 2 -> (n, 3 * hidden)."""
    return torch.cat([ref_pooled, var_pooled, var_pooled - ref_pooled], dim=-1)


class PooledPairClassifier(nn.Module):
    """Pooled (reference, variant, variant - reference) features -> class logits.

    Input ``(n, 3 * dna_hidden)`` from ``pair_features``; output ``(n, n_classes)``.
    """

    def __init__(self, dna_hidden: int, n_classes: int, hidden: int = 256, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(3 * dna_hidden),
            nn.Linear(3 * dna_hidden, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_classes),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)
