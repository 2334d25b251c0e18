"""Target transform for coverage: compress the long tail, exactly invertibly.

forward:  x -> s * x              per-track scale from the track sheet
            -> y = x ** power      power < 1 compresses high coverage
            -> c + sqrt(y - c)     for y > c (soft clip at c = ``clip``; 0: none)
inverse:  each step undone in reverse order, so metrics and outputs are in raw units.

``RunningPearson`` scores predictions against targets, in either units, without holding them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
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


class RunningPearson:
    """Pearson correlation per track from running sums, so a genome never sits in memory.

    Sums are float64: n, Σx, Σy, Σx², Σy², Σxy per track; ``merge`` or all-reduce them to
    combine batches or ranks.
    """

    def __init__(self, n_tracks: int):
        self.sums = torch.zeros(6, n_tracks, dtype=torch.float64)

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """``x``, ``y``: (N, n_tracks), paired values."""
        x, y = x.detach().double().cpu(), y.detach().double().cpu()
        self.sums += torch.stack(
            [torch.full_like(x[0], len(x)), x.sum(0), y.sum(0), (x * x).sum(0), (y * y).sum(0), (x * y).sum(0)]
        )

    def merge(self, other: "RunningPearson") -> None:
        self.sums += other.sums

    def all_reduce(self, device: str) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            sums = self.sums.to(device)
            torch.distributed.all_reduce(sums)
            self.sums = sums.cpu()

    @property
    def n(self) -> int:
        return int(self.sums[0].max())

    def value(self) -> np.ndarray:
        """(n_tracks,) Pearson r; NaN where a side is constant or there are < 2 values."""
        n, sx, sy, sxx, syy, sxy = self.sums.numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            cov = sxy - sx * sy / n
            var_x, var_y = sxx - sx * sx / n, syy - sy * sy / n
            r = cov / np.sqrt(var_x * var_y)
        r[(n < 2) | (var_x <= 0) | (var_y <= 0)] = np.nan
        return np.clip(r, -1.0, 1.0)
