"""Target transform for coverage: compress the long tail, exactly invertibly.

forward:  x -> s * x              per-track scale from the track sheet
            -> y = x ** power      power < 1 compresses high coverage
            -> c + sqrt(y - c)     for y > c (soft clip at c = ``clip``; 0: none)
inverse:  each step undone in reverse order, so metrics and outputs are in raw units.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TargetTransform:
    power: float = 1.0
    clip: float = 0.0
    scales: tuple[float, ...] = ()  # one per track; empty: all 1

    def __post_init__(self):
        if self.power <= 0:
            raise ValueError(f"target power must be > 0, got {self.power}")
        if self.clip < 0:
            raise ValueError(f"target clip threshold must be >= 0 (0: no clipping), got {self.clip}")

    def _scale(self, x: torch.Tensor) -> torch.Tensor | float:
        return torch.tensor(self.scales, dtype=x.dtype, device=x.device) if self.scales else 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (..., n_tracks) raw coverage >= 0 -> training targets."""
        y = (x * self._scale(x)).pow(self.power)
        if self.clip > 0:
            c = self.clip
            y = torch.where(y > c, c + (y - c).clamp(min=0).sqrt(), y)
        return y

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """Model outputs (..., n_tracks) >= 0 -> raw coverage."""
        if self.clip > 0:
            c = self.clip
            y = torch.where(y > c, c + (y - c).clamp(min=0).square(), y)
        return y.clamp(min=0).pow(1.0 / self.power) / self._scale(y)
