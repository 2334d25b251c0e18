"""Training logs: always a JSONL file in the run directory; TensorBoard / W&B on request."""

from __future__ import annotations

import json
from pathlib import Path


class Tracker:
    def __init__(self, out_dir: Path, recipe, enabled: bool = True):
        self.enabled = enabled
        self.backends = []
        if not enabled:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        self.log_file = (out_dir / "train_log.jsonl").open("a")
        for name in recipe.train.report_to:
            if name == "tensorboard":
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError:
                    raise ImportError("report_to includes tensorboard: pip install tensorboard") from None
                writer = SummaryWriter(str(out_dir / "tensorboard"))
                self.backends.append((lambda step, m, w=writer: [w.add_scalar(k, v, step) for k, v in m.items()], writer.close))
            elif name == "wandb":
                try:
                    import wandb
                except ImportError:
                    raise ImportError("report_to includes wandb: pip install wandb") from None
                wrun = wandb.init(project="dnallm", name=recipe.run_name, config=recipe.to_dict())
                self.backends.append((lambda step, m, r=wrun: r.log(m, step=step), wrun.finish))
            else:
                raise ValueError(f"train.report_to: unknown tracker {name!r}; use tensorboard and/or wandb")

    def log(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        self.log_file.write(json.dumps({"step": step, **metrics}) + "\n")
        self.log_file.flush()
        for log, _ in self.backends:
            log(step, metrics)

    def close(self) -> None:
        if not self.enabled:
            return
        self.log_file.close()
        for _, close in self.backends:
            close()
