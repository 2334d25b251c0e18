"""The DNA-only baseline model: a classifier head over the same pair features as the fusion
model's variant summary (``dnallm.fusion.summary.PairFeatures``).

No language model: it shows how much of a task the frozen DNA encoder alone can solve, read
the way the fusion model reads it, so that the comparison is fair.
"""

from __future__ import annotations

import torch
from torch import nn

from dnallm.fusion.summary import PairFeatures


class PairClassifier(nn.Module):
    """``pair_views`` of (reference, variant) pairs -> class logits. (n_pairs, n_classes)"""

    def __init__(self, dna_hidden: int, n_classes: int, kind: str, context: int, hidden: int = 256, dropout: float = 0.1):
        super().__init__()
        self.features = PairFeatures(dna_hidden, kind, context)
        self.net = nn.Sequential(
            nn.LayerNorm(self.features.n_features),
            nn.Linear(self.features.n_features, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_classes),
        )

    def forward(self, views: dict) -> torch.Tensor:
        return self.net(self.features(views))
