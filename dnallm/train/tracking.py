"""Training logs: always a JSONL file in the run directory; TensorBoard / W&B on request."""

from __future__ import annotations

import json
from pathlib import Path

from dnallm.io import atomic_write_text


def _step(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return float("inf")  # a line cut short by a kill


class Tracker:
    """``start_step``: where this run starts; lines a killed run logged past it are dropped,
    so a resumed run's log holds every step once."""

    def __init__(self, out_dir: Path, recipe, enabled: bool = True, start_step: int = 0):
        self.enabled = enabled
        self.backends = []
        if not enabled:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "train_log.jsonl"
        if path.is_file():
            kept = [line for line in path.read_text().splitlines(keepends=True) if _step(line) <= start_step]
            atomic_write_text(path, "".join(kept))
        self.log_file = path.open("a")
        for name in recipe.train.report_to:
            if name == "tensorboard":
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError:
                    raise ImportError("report_to includes tensorboard: pip install tensorboard") from None
                writer = SummaryWriter(str(out_dir / "tensorboard"))
                self.backends.append(
                    (lambda step, m, w=writer: [w.add_scalar(k, v, step) for k, v in m.items()], writer.close)
                )
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
