"""Validation while training: MSE and base-level log1p Pearson per track on held-out windows."""

from __future__ import annotations

import numpy as np
import torch

from dnallm.data.transform import TargetTransform


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
        self.sums += torch.stack([torch.full_like(x[0], len(x)), x.sum(0), y.sum(0), (x * x).sum(0), (y * y).sum(0), (x * y).sum(0)])

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


@torch.no_grad()
def validate(engine, loader, transform: TargetTransform, n_tracks: int, device: str) -> dict:
    """Mean loss and per-track Pearson of log1p(raw prediction) vs log1p(raw observed)."""
    engine.module.eval()
    pearson = RunningPearson(n_tracks)
    loss_sum = torch.zeros(2, dtype=torch.float64, device=device)
    for batch in loader:
        mask = batch["attention_mask"].to(device)
        out = engine(input_ids=batch["input_ids"].to(device), attention_mask=mask, targets=batch["targets"].to(device))
        loss_sum += torch.tensor([out.loss.item() * mask.sum().item(), mask.sum().item()], dtype=torch.float64, device=device)
        keep = mask.cpu()
        pred = transform.inverse(out.pred.float().cpu()[keep])  # (N, T), raw units
        obs = transform.inverse(batch["targets"][keep])
        pearson.update(torch.log1p(pred), torch.log1p(obs))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(loss_sum)
    pearson.all_reduce(device)
    engine.module.train()
    return {"loss": float(loss_sum[0] / loss_sum[1].clamp(min=1)), "pearson_log1p": [None if np.isnan(r) else float(r) for r in pearson.value()]}
