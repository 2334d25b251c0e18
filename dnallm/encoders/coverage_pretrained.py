"""A coverage checkpoint read back: recipe, tracks, trunk config and weights, nothing else needed.

Written by the coverage objective (``dnallm.train.coverage``); read by prediction and
evaluation (``dnallm.eval.coverage_predict``) and the Python API.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from dnallm.config import CoverageRecipe, apply_overrides, recipe_from_dict
from dnallm.data.tracks import Track
from dnallm.data.transform import TargetTransform
from dnallm.encoders.coverage import CoverageModel, load_tokenizer
from dnallm.hub import resolve_checkpoint as resolve_any
from dnallm.hub import CheckpointError, first_line, read_tensors, user_trust

WEIGHTS = "model.safetensors"


def target_transform(recipe: CoverageRecipe, tracks: list[Track]) -> TargetTransform:
    scales = tuple(t.scale for t in tracks)
    return TargetTransform(recipe.target.power, recipe.target.clip, scales if any(s != 1 for s in scales) else ())


def resolve_checkpoint(path: str | Path) -> Path:
    """A coverage checkpoint directory, or the latest complete one inside a run directory."""
    return resolve_any(path, WEIGHTS)


def read_recipe(checkpoint: Path, overrides=()) -> CoverageRecipe:
    recipe = recipe_from_dict(yaml.safe_load((checkpoint / "recipe.yaml").read_text()), cls=CoverageRecipe)
    return apply_overrides(recipe, overrides)


def read_tracks(checkpoint: Path) -> list[Track]:
    return [Track(**t) for t in json.loads((checkpoint / "tracks.json").read_text())]


def load_weights(model: torch.nn.Module, checkpoint: Path) -> None:
    values = read_tensors(checkpoint / WEIGHTS)
    try:
        missing, unexpected = model.load_state_dict(values, strict=False)
    except RuntimeError as e:  # shapes that differ
        raise CheckpointError(
            f"{checkpoint}: weights do not fit the model its recipe builds ({first_line(e)})"
        ) from None
    if missing or unexpected:
        raise CheckpointError(
            f"{checkpoint}: weights do not match the model its recipe builds "
            f"(missing: {sorted(missing)[:5]}, unexpected: {sorted(unexpected)[:5]})"
        )


def load_coverage_checkpoint(
    checkpoint: str | Path, device: str = "cpu", overrides=(), *, trust_remote_code: bool = False
):
    """-> (recipe, model in eval mode, tokenizer, tracks, transform), from the checkpoint alone.
    ``trust_remote_code``: the saved trunk may run its own code (``hub.user_trust``)."""
    from transformers import AutoConfig

    checkpoint = resolve_checkpoint(checkpoint)
    recipe = read_recipe(checkpoint, overrides)
    user_trust(
        recipe, checkpoint, trust_remote_code, overrides, code_at={"encoder.trust_remote_code": checkpoint / "trunk"}
    )
    tracks = read_tracks(checkpoint)
    remote = recipe.encoder.trust_remote_code
    config = AutoConfig.from_pretrained(checkpoint / "trunk", trust_remote_code=remote)
    h = recipe.head
    model = CoverageModel.from_config(
        config,
        len(tracks),
        channels=h.channels,
        kernel_size=h.kernel_size,
        dropout=h.dropout,
        trust_remote_code=remote,
    )
    load_weights(model, checkpoint)
    model.to(device).eval()
    tokenizer = load_tokenizer(str(checkpoint / "trunk"), remote)
    return recipe, model, tokenizer, tracks, target_transform(recipe, tracks)
