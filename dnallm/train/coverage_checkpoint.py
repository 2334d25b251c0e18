"""Coverage checkpoints: the whole fine-tuned model, self-contained.

Layout of ``<output_dir>/checkpoint-<step>/``::

    recipe.yaml             the resolved recipe
    tracks.json             track names, strands, cell types, scales (output order)
    trunk/                  the trunk's config and tokenizer (no weights)
    model.safetensors       every weight and BatchNorm statistic, fp32
    optimizer.safetensors   Adafactor state per parameter (plain-PyTorch runs; for resuming)
    trainer_state.json      optimizer step, epoch, history

Written under a temporary name and renamed when complete. Prediction needs nothing but
this directory: the trunk is rebuilt from ``trunk/config.json`` and filled from
``model.safetensors``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from dnallm.config import apply_overrides, recipe_from_dict
from dnallm.data.tracks import Track
from dnallm.data.transform import TargetTransform
from dnallm.encoders.coverage import CoverageModel, load_tokenizer
from dnallm.io import atomic_directory, save_tensors
from dnallm.train.coverage_config import CoverageRecipe
from dnallm.train import checkpoint as kegg_checkpoint
from dnallm.train.engine import TorchEngine

WEIGHTS = "model.safetensors"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    return kegg_checkpoint.list_checkpoints(run_dir, WEIGHTS)


def resolve_checkpoint(path: str | Path) -> Path:
    """A coverage checkpoint directory, or the latest complete one inside a run directory."""
    return kegg_checkpoint.resolve_checkpoint(path, WEIGHTS)


def full_state(model: torch.nn.Module, engine) -> dict[str, torch.Tensor]:
    """Every persistent tensor, un-partitioned (a collective under ZeRO-3: call on all ranks)."""
    params = dict(model.named_parameters())
    return {
        name: (engine.full_param(params[name]) if name in params else tensor.detach().float().cpu()).contiguous()
        for name, tensor in model.state_dict().items()
    }


def save_checkpoint(run_dir, step: int, engine, recipe: CoverageRecipe, tracks: list[Track], tokenizer, state: dict, keep_last: int = 0) -> Path | None:
    model = engine.module
    weights = full_state(model, engine)
    moments = {}
    if isinstance(engine, TorchEngine):  # under ZeRO the Adafactor state is flat partitions: weights only
        for name, p in model.named_parameters():
            for key, value in (engine.full_moments(p) or {}).items():
                moments[f"{name}::{key}"] = value.contiguous()
    path = None
    if engine.rank == 0:
        path = Path(run_dir) / f"checkpoint-{step}"
        with atomic_directory(path) as tmp:
            (tmp / "recipe.yaml").write_text(recipe.to_yaml())
            (tmp / "tracks.json").write_text(json.dumps([t.to_dict() for t in tracks], indent=2))
            model.trunk.config.save_pretrained(tmp / "trunk")
            tokenizer.save_pretrained(tmp / "trunk")
            save_tensors(weights, tmp / WEIGHTS)
            if moments:
                save_tensors(moments, tmp / "optimizer.safetensors")
            (tmp / "trainer_state.json").write_text(json.dumps({**state, "step": step}, indent=2))
        if keep_last > 0:
            # The one just written stays even if an earlier run left higher-numbered ones.
            others = [c for c in list_checkpoints(run_dir) if c != path]
            for old in others[: max(0, len(others) - (keep_last - 1))]:
                shutil.rmtree(old, ignore_errors=True)
    engine.barrier()
    return path


def read_recipe(checkpoint: Path, overrides=()) -> CoverageRecipe:
    recipe = recipe_from_dict(yaml.safe_load((checkpoint / "recipe.yaml").read_text()), cls=CoverageRecipe)
    return apply_overrides(recipe, overrides)


def read_tracks(checkpoint: Path) -> list[Track]:
    return [Track(**t) for t in json.loads((checkpoint / "tracks.json").read_text())]


def target_transform(recipe: CoverageRecipe, tracks: list[Track]) -> TargetTransform:
    scales = tuple(t.scale for t in tracks)
    return TargetTransform(recipe.target.power, recipe.target.clip, scales if any(s != 1 for s in scales) else ())


def load_weights(model: torch.nn.Module, checkpoint: Path) -> None:
    values = load_file(checkpoint / WEIGHTS)
    missing, unexpected = model.load_state_dict(values, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{checkpoint}: weights do not match the model its recipe builds "
            f"(missing: {sorted(missing)[:5]}, unexpected: {sorted(unexpected)[:5]})"
        )


def load_moments(model: torch.nn.Module, checkpoint: Path) -> dict:
    """{parameter: {state key: tensor}} for resuming; empty if none were saved."""
    path = checkpoint / "optimizer.safetensors"
    if not path.is_file():
        return {}
    params = dict(model.named_parameters())
    out: dict = {}
    for key, value in load_file(path).items():
        name, moment = key.rsplit("::", 1)
        out.setdefault(params[name], {})[moment] = value
    return out


def load_coverage_checkpoint(checkpoint: str | Path, device: str = "cpu", overrides=()):
    """-> (recipe, model in eval mode, tokenizer, tracks, transform), from the checkpoint alone."""
    from transformers import AutoConfig

    checkpoint = resolve_checkpoint(checkpoint)
    recipe = read_recipe(checkpoint, overrides)
    tracks = read_tracks(checkpoint)
    remote = recipe.encoder.trust_remote_code
    config = AutoConfig.from_pretrained(checkpoint / "trunk", trust_remote_code=remote)
    h = recipe.head
    model = CoverageModel.from_config(config, len(tracks), channels=h.channels, kernel_size=h.kernel_size, dropout=h.dropout, trust_remote_code=remote)
    load_weights(model, checkpoint)
    model.to(device).eval()
    tokenizer = load_tokenizer(str(checkpoint / "trunk"), remote)
    return recipe, model, tokenizer, tracks, target_transform(recipe, tracks)


def read_state(checkpoint: Path) -> dict:
    return json.loads((Path(checkpoint) / "trainer_state.json").read_text())
