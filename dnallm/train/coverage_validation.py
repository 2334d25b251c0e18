"""Validation while training: MSE and base-level log1p Pearson per track on held-out windows."""

from __future__ import annotations

import numpy as np
import torch

from dnallm.data.transform import RunningPearson, TargetTransform


@torch.no_grad()
def validate(engine, loader, transform: TargetTransform, n_tracks: int, device: str) -> dict:
    """Mean loss and per-track Pearson of log1p(raw prediction) vs log1p(raw observed)."""
    engine.module.eval()
    pearson = RunningPearson(n_tracks)
    loss_sum = torch.zeros(2, dtype=torch.float64, device=device)
    for batch in loader:
        mask = batch["attention_mask"].to(device)
        out = engine(input_ids=batch["input_ids"].to(device), attention_mask=mask, targets=batch["targets"].to(device))
        loss_sum += torch.tensor(
            [out.loss.item() * mask.sum().item(), mask.sum().item()], dtype=torch.float64, device=device
        )
        keep = mask.cpu()
        pred = transform.inverse(out.pred.float().cpu()[keep])  # (N, T), raw units
        obs = transform.inverse(batch["targets"][keep])
        pearson.update(torch.log1p(pred), torch.log1p(obs))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(loss_sum)
    pearson.all_reduce(device)
    engine.module.train()
    return {
        "loss": float(loss_sum[0] / loss_sum[1].clamp(min=1)),
        "pearson_log1p": [None if np.isnan(r) else float(r) for r in pearson.value()],
    }
