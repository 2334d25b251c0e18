"""The coverage objective: fine-tune a DNA trunk + conv head on RNA-seq bigWigs.

What is its own: genome, tracks and windows (``coverage_data.py``), the model, MSE on
transformed targets with Adafactor, validation by per-track Pearson
(``coverage_validation.py``), and a self-contained checkpoint. The loop, schedule (cosine
with linear warm-up), global batch by gradient accumulation, checkpoints and resume are
the shared core (``trainer.fit``). One process (``dnallm train-tracks RECIPE``) or many
(``deepspeed``, ``torchrun``): ranks come from the launcher's environment.

A checkpoint keeps, beside the shared files (``checkpoint.py``)::

    model.safetensors   every weight and BatchNorm statistic, fp32
    tracks.json         track names, strands, cell types, scales (output order)
    trunk/              the trunk's config and tokenizer (no weights); for a checkpoint's own
                        modelling code, that code too

Prediction needs nothing but that directory: the trunk is rebuilt from ``trunk/config.json``
and filled from ``model.safetensors``. Under ZeRO, Adafactor's state stays partitioned, so
such checkpoints keep no optimizer state and a resume restores the step and schedule alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from transformers.optimization import Adafactor

from dnallm.config import CoverageRecipe
from dnallm.encoders.coverage import CoverageModel, base_token_ids, load_tokenizer, pad_token_id
from dnallm.encoders.coverage_pretrained import WEIGHTS, load_weights, target_transform
from dnallm.encoders.hf import save_own_code
from dnallm.train import engine as engines
from dnallm.train.coverage_data import build_datasets, open_sources
from dnallm.train.coverage_validation import validate
from dnallm.train.trainer import fit


def adafactor(recipe: CoverageRecipe) -> tuple[str, object]:
    """transformers' Adafactor with a fixed, scheduled learning rate (no relative steps): (name, builder)."""
    t = recipe.train

    def build(param_groups):
        return Adafactor(
            param_groups,
            lr=t.lr,
            weight_decay=t.weight_decay,
            scale_parameter=False,
            relative_step=False,
            warmup_init=False,
        )

    return "Adafactor", build


def build_model(recipe: CoverageRecipe, n_tracks: int) -> CoverageModel:
    h, enc = recipe.head, recipe.encoder
    model = CoverageModel.from_pretrained(
        enc.name_or_path,
        n_tracks,
        trust_remote_code=enc.trust_remote_code,
        channels=tuple(h.channels),
        kernel_size=h.kernel_size,
        dropout=h.dropout,
    )
    if enc.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    return model


def param_groups(model, recipe: CoverageRecipe) -> list[dict]:
    t = recipe.train
    return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": t.lr, "weight_decay": t.weight_decay}]


def build_engine(recipe: CoverageRecipe, model, total_steps: int, grad_accum: int, device: str):
    """The shared engine with this objective's optimizer (Adafactor)."""
    return engines.build_engine(
        recipe,
        model,
        param_groups(model, recipe),
        total_steps=total_steps,
        grad_accum=grad_accum,
        device=device,
        optimizer=adafactor(recipe),
    )


class Coverage:
    """The coverage objective for ``trainer.fit`` (the contract is in its docstring)."""

    weights_file = WEIGHTS

    def __init__(self, recipe: CoverageRecipe):
        self.recipe = recipe
        self.optimizer = adafactor(recipe)
        self.validate_at_start = recipe.eval.validate_at_start

    def setup(self, device: str, rank: int, world: int):
        recipe = self.recipe
        self.device = device
        genome, reader, self.tracks = open_sources(recipe)
        self.tokenizer = load_tokenizer(recipe.encoder.name_or_path, recipe.encoder.trust_remote_code)
        self.transform = target_transform(recipe, self.tracks)
        self.train_ds, self.val_ds, self.data_report = build_datasets(
            recipe,
            genome,
            reader,
            self.tracks,
            base_token_ids(self.tokenizer),
            pad_token_id(self.tokenizer),
            self.transform,
            rank=rank,
            world=world,
        )
        return build_model(recipe, len(self.tracks))

    def param_groups(self, model) -> list[dict]:
        return param_groups(model, self.recipe)

    def batches_per_epoch(self) -> int:
        return len(self.train_ds)

    def batches(self, epoch: int, skip: int):
        self.train_ds.set_epoch(epoch, skip)
        # Its own generator: starting an epoch leaves the global RNG (dropout) untouched.
        return DataLoader(
            self.train_ds,
            batch_size=None,
            num_workers=self.recipe.data.num_workers,
            persistent_workers=False,
            generator=torch.Generator().manual_seed(self.recipe.seed + epoch),
        )

    def train_step(self, engine, batch: dict):
        out = engine(
            input_ids=batch["input_ids"].to(engine.device),
            attention_mask=batch["attention_mask"].to(engine.device),
            targets=batch["targets"].to(engine.device),
        )
        return out.loss, {
            "missing": float(batch["n_missing"].sum()),
            "values": int(batch["attention_mask"].sum()) * len(self.tracks),
        }

    def train_metrics(self, counts: dict, seconds: float) -> dict:
        return {"data/missing_fraction": counts["missing"] / max(1, counts["values"])}

    def validate(self, engine):
        if self.val_ds is None:
            return None
        loader = DataLoader(
            self.val_ds, batch_size=None, num_workers=self.recipe.data.num_workers, generator=torch.Generator()
        )
        val = validate(engine, loader, self.transform, len(self.tracks), self.device)
        pearson = dict(zip([tr.name for tr in self.tracks], val["pearson_log1p"]))
        entry = {"val_loss": val["loss"], "val_pearson_log1p": pearson}
        return entry, {
            "val/loss": val["loss"],
            **{f"val/pearson_log1p/{k}": v for k, v in pearson.items() if v is not None},
        }

    def run_report(self) -> dict:
        return {"data": self.data_report}

    def checkpoint_tensors(self, engine) -> dict:
        """Every persistent tensor, un-partitioned (a collective under ZeRO-3)."""
        model = engine.module
        params = dict(model.named_parameters())
        return {
            name: (engine.full_param(params[name]) if name in params else tensor.detach().float().cpu()).contiguous()
            for name, tensor in model.state_dict().items()
        }

    def write_checkpoint_files(self, directory: Path, model, tensors: dict) -> None:
        (directory / "tracks.json").write_text(json.dumps([t.to_dict() for t in self.tracks], indent=2))
        model.trunk.config.save_pretrained(directory / "trunk")
        save_own_code(model.trunk, directory / "trunk")  # a trunk of the checkpoint's own code is rebuilt from it
        self.tokenizer.save_pretrained(directory / "trunk")

    def load_checkpoint_tensors(self, model, checkpoint: Path) -> None:
        load_weights(model, checkpoint)


def train(recipe: CoverageRecipe, stop_after: int | None = None) -> Path:
    """Train and return the last checkpoint (``trainer.fit``)."""
    return fit(Coverage(recipe), stop_after)
