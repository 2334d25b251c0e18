"""Checkpoints hold only what trained: LoRA, projector, DNA token rows (safetensors).

Layout of ``<output_dir>/checkpoint-<step>/``::

    recipe.yaml             the resolved recipe: which base models, how they were wrapped
    trainable.safetensors   full fp32 values of every trainable parameter
    adapter/                the LoRA part alone in peft's format (for merging with peft)
    optimizer.safetensors   Adam moments per trainable parameter (for resuming)
    trainer_state.json      optimizer step, epoch, loss history

Each directory is written under a temporary name and renamed when complete, so a
directory called ``checkpoint-*`` is always whole. Moments are stored un-partitioned,
so a run can resume on a different number of GPUs or ZeRO stage.
"""

from __future__ import annotations

import base64
import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from peft import get_peft_model_state_dict
from safetensors.torch import load_file

from dnallm.io import atomic_directory, save_tensors

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def list_checkpoints(run_dir: str | Path, marker: str = "trainable.safetensors") -> list[Path]:
    """Complete ``checkpoint-<step>`` directories (holding ``marker``) of a run, oldest first."""
    run_dir = Path(run_dir)
    found = []
    if run_dir.is_dir():
        for p in run_dir.iterdir():
            m = CHECKPOINT_RE.match(p.name)
            if m and (p / marker).is_file():
                found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def resolve_checkpoint(path: str | Path, marker: str = "trainable.safetensors") -> Path:
    """A checkpoint directory, or the latest complete one inside a run directory."""
    path = Path(path)
    if (path / marker).is_file():
        return path
    found = list_checkpoints(path, marker)
    if not found:
        raise FileNotFoundError(f"no checkpoint found at {path} (expected {marker} or checkpoint-*/ inside)")
    return found[-1]


def find_resume_checkpoint(wanted: str, run_dir: str | Path, marker: str = "trainable.safetensors") -> Path | None:
    """``train.resume_from_checkpoint``: '' (start afresh), 'auto' (latest in ``run_dir``, if any) or a path."""
    if not wanted:
        return None
    if wanted == "auto":
        found = list_checkpoints(run_dir, marker)
        return found[-1] if found else None
    return resolve_checkpoint(wanted, marker)


def save_checkpoint(run_dir: str | Path, step: int, model, engine, recipe_yaml: str, state: dict, keep_last: int = 0) -> Path | None:
    """Gather trainable values and moments on every rank; rank 0 writes. Returns the path on rank 0."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    values = {n: engine.full_param(p) for n, p in named}
    moments = {}
    for n, p in named:
        for key, value in (engine.full_moments(p) or {}).items():
            moments[f"{n}::{key}"] = value
    path = None
    if engine.rank == 0:
        path = Path(run_dir) / f"checkpoint-{step}"
        with atomic_directory(path) as tmp:
            (tmp / "recipe.yaml").write_text(recipe_yaml)
            save_tensors({n: v.contiguous() for n, v in values.items()}, tmp / "trainable.safetensors")
            if moments:
                save_tensors({n: v.contiguous() for n, v in moments.items()}, tmp / "optimizer.safetensors")
            _save_adapter(model, values, tmp / "adapter")
            (tmp / "trainer_state.json").write_text(json.dumps({**state, "step": step}, indent=2))
        if keep_last > 0:
            for old in list_checkpoints(run_dir)[:-keep_last]:
                shutil.rmtree(old, ignore_errors=True)
    engine.barrier()
    return path


def _save_adapter(model, values: dict[str, torch.Tensor], out: Path) -> None:
    prefix = "llm."
    lora = {n[len(prefix):]: v for n, v in values.items() if n.startswith(prefix) and "lora_" in n}
    # The DNA token rows are deterministic (see fusion.model.add_dna_tokens): no embeddings here.
    peft_state = get_peft_model_state_dict(model.llm, state_dict=lora, save_embedding_layers=False)
    out.mkdir()
    model.llm.peft_config["default"].save_pretrained(out)
    save_tensors({k: v.contiguous() for k, v in peft_state.items()}, out / "adapter_model.safetensors")


def load_trainable(model, checkpoint: str | Path) -> None:
    """Load trainable values into a freshly built model; every trainable tensor must be present."""
    checkpoint = Path(checkpoint)
    values = load_file(checkpoint / "trainable.safetensors")
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = expected - values.keys(), values.keys() - expected
    if missing or unexpected:
        raise ValueError(
            f"{checkpoint}: trainable tensors do not match the model built from its recipe "
            f"(missing: {sorted(missing)[:5]}, unexpected: {sorted(unexpected)[:5]})"
        )
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in values.items():
            if params[name].shape != value.shape:
                raise ValueError(f"{checkpoint}: '{name}' has shape {tuple(value.shape)}, model expects {tuple(params[name].shape)}")
            params[name].copy_(value.to(params[name].dtype))


def load_moments(model, checkpoint: str | Path) -> dict:
    """{parameter: {state key: tensor}} for resuming; empty if none were saved."""
    path = Path(checkpoint) / "optimizer.safetensors"
    if not path.is_file():
        return {}
    flat = load_file(path)
    params = dict(model.named_parameters())
    out: dict = {}
    for key, value in flat.items():
        name, moment = key.rsplit("::", 1)
        out.setdefault(params[name], {})[moment] = value
    return out


def read_state(checkpoint: str | Path) -> dict:
    return json.loads((Path(checkpoint) / "trainer_state.json").read_text())


def rng_state() -> dict:
    """This process's Python, NumPy and torch (CPU and CUDA) generator states, JSON-ready,
    for ``trainer_state.json``: a resumed run then draws the same random numbers (sampled
    replies, dropout) as one that never stopped."""
    py_version, py_internal, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": [py_version, list(py_internal), py_gauss],
        "numpy": [np_name, np_keys.tolist(), int(np_pos), int(np_has_gauss), float(np_gauss)],
        "torch": _bytes_text(torch.get_rng_state()),
    }
    if torch.cuda.is_available():
        state["cuda"] = [_bytes_text(s) for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    """Undo ``rng_state``: every generator continues where the saved run was."""
    py_version, py_internal, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_internal), py_gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np.array(np_keys, dtype=np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(_text_bytes(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_text_bytes(s) for s in state["cuda"]])


def _bytes_text(t: torch.Tensor) -> str:
    return base64.b64encode(t.numpy().tobytes()).decode()


def _text_bytes(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)
