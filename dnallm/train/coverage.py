"""The coverage-track recipe: fine-tune a DNA trunk + conv head on RNA-seq bigWigs.

Read top to bottom: setup (genome, tracks, windows, model, engine), the loop, checkpoints.
MSE on transformed targets, Adafactor, cosine schedule with linear warm-up, global batch
by gradient accumulation. One process (``dnallm train-tracks RECIPE``) or many
(``deepspeed``, ``torchrun``): ranks come from the launcher's environment.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup
from transformers.optimization import Adafactor

from dnallm.encoders.coverage import CoverageModel, base_token_ids, load_tokenizer, pad_token_id
from dnallm.train.checkpoint import find_resume_checkpoint
from dnallm.train.coverage_checkpoint import WEIGHTS, load_moments, load_weights, read_state, save_checkpoint, target_transform
from dnallm.train.coverage_config import CoverageRecipe
from dnallm.train.coverage_data import build_datasets, open_sources
from dnallm.train.coverage_validation import validate
from dnallm.train.engine import DeepSpeedEngine, TorchEngine, distributed_env, fast_forward, pick_device, resolve_deepspeed_config
from dnallm.train.tracking import Tracker


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def grad_accum_steps(recipe: CoverageRecipe, world: int) -> int:
    """Micro-batches per optimizer step so that micro x accum x ranks = global batch."""
    t = recipe.train
    if t.global_batch_size <= 0:
        return t.grad_accum
    per_step = t.micro_batch_size * world
    if t.global_batch_size % per_step:
        raise ValueError(
            f"train.global_batch_size={t.global_batch_size} is not a multiple of micro_batch_size x ranks = "
            f"{t.micro_batch_size} x {world}; change one of them"
        )
    return t.global_batch_size // per_step


def adafactor(lr: float, weight_decay: float):
    """transformers' Adafactor with a fixed, scheduled learning rate (no relative steps)."""

    def build(param_groups):
        return Adafactor(param_groups, lr=lr, weight_decay=weight_decay, scale_parameter=False, relative_step=False, warmup_init=False)

    return build


def build_model(recipe: CoverageRecipe, n_tracks: int) -> CoverageModel:
    h, enc = recipe.head, recipe.encoder
    model = CoverageModel.from_pretrained(
        enc.name_or_path, n_tracks, trust_remote_code=enc.trust_remote_code,
        channels=tuple(h.channels), kernel_size=h.kernel_size, dropout=h.dropout,
    )
    if enc.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    return model


def build_engine(recipe: CoverageRecipe, model, total_steps: int, grad_accum: int, device: str):
    t = recipe.train
    warmup = round(t.warmup_ratio * total_steps)

    def scheduler_fn(optimizer):
        return get_cosine_schedule_with_warmup(optimizer, warmup, total_steps)

    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": t.lr, "weight_decay": t.weight_decay}]
    optimizer_fn = adafactor(t.lr, t.weight_decay)
    if recipe.deepspeed:
        config = resolve_deepspeed_config(
            recipe.deepspeed, micro_batch_size=t.micro_batch_size, grad_accum=grad_accum,
            max_grad_norm=t.max_grad_norm, lr=t.lr, weight_decay=t.weight_decay, device=device,
        )
        if "optimizer" in config:
            raise ValueError(
                f"{recipe.deepspeed} builds its own optimizer ({config['optimizer'].get('type')}); the coverage recipe "
                f"trains with Adafactor: use a DeepSpeed config without an 'optimizer' section (zero2.json, zero3.json)"
            )
        return DeepSpeedEngine(model, groups, scheduler_fn, config=config, device=device, optimizer_fn=optimizer_fn)
    _, _, world = distributed_env()
    if world > 1:
        raise RuntimeError("multi-process training needs a DeepSpeed config: add deepspeed=recipes/deepspeed/zero2.json")
    return TorchEngine(model, groups, scheduler_fn, grad_accum=grad_accum, max_grad_norm=t.max_grad_norm, device=device, optimizer_fn=optimizer_fn)


def restore_progress(engine, checkpoint: Path, step: int) -> None:
    """Optimizer state (plain PyTorch) and schedule position from ``checkpoint``.

    Under DeepSpeed only the step and schedule are restored: Adafactor's second-moment
    estimates start afresh (they settle within a few steps).
    """
    if isinstance(engine, TorchEngine):
        engine.load_moments(load_moments(engine.module, checkpoint), step)
        return
    engine.engine.global_steps = step
    engine.engine.micro_steps = step * engine.engine.gradient_accumulation_steps()
    fast_forward(engine.scheduler, step)


def train(recipe: CoverageRecipe, stop_after: int | None = None) -> Path:
    """Train and return the last checkpoint. ``stop_after`` ends the run after that many
    optimizer steps of this process, as a crash would (used to test resumption)."""
    # ---- setup -------------------------------------------------------------------------
    rank, _, world = distributed_env()
    device = pick_device()
    set_seed(recipe.seed)
    out_dir = Path(recipe.output_dir)
    t = recipe.train
    grad_accum = grad_accum_steps(recipe, world)

    genome, reader, tracks = open_sources(recipe)
    tokenizer = load_tokenizer(recipe.encoder.name_or_path, recipe.encoder.trust_remote_code)
    transform = target_transform(recipe, tracks)
    train_ds, val_ds, data_report = build_datasets(
        recipe, genome, reader, tracks, base_token_ids(tokenizer), pad_token_id(tokenizer), transform, rank=rank, world=world,
    )
    model = build_model(recipe, len(tracks))

    resume = find_resume_checkpoint(recipe.train.resume_from_checkpoint, recipe.output_dir, WEIGHTS)
    start_step = read_state(resume)["step"] if resume else 0
    if resume:
        load_weights(model, resume)

    batches_per_epoch = len(train_ds)
    if batches_per_epoch < grad_accum:
        raise ValueError(f"{batches_per_epoch} training batches per epoch on each rank, fewer than one optimizer step ({grad_accum} micro-batches)")
    total_steps = t.max_steps if t.max_steps > 0 else math.ceil(t.epochs * batches_per_epoch / grad_accum)
    engine = build_engine(recipe, model, total_steps, grad_accum, device)
    if resume:
        restore_progress(engine, resume, start_step)
    workers = recipe.data.num_workers
    train_loader = DataLoader(train_ds, batch_size=None, num_workers=workers, persistent_workers=False)
    val_loader = DataLoader(val_ds, batch_size=None, num_workers=workers) if val_ds is not None else None

    tracker = Tracker(out_dir, recipe, enabled=rank == 0)
    history = read_state(resume).get("history", []) if resume else []
    if rank == 0:
        print(json.dumps({"data": data_report, "steps": total_steps, "grad_accum": grad_accum, "batches_per_epoch": batches_per_epoch}))

    def validation(step: int) -> dict:
        entry = {"step": step}
        if val_loader is not None:
            val = validate(engine, val_loader, transform, len(tracks), device)
            entry.update({"val_loss": val["loss"], "val_pearson_log1p": dict(zip([tr.name for tr in tracks], val["pearson_log1p"]))})
            tracker.log(step, {"val/loss": val["loss"], **{f"val/pearson_log1p/{k}": v for k, v in entry["val_pearson_log1p"].items() if v is not None}})
        return entry

    def checkpoint(step: int, epoch: int) -> Path | None:
        history.append(validation(step))
        state = {"epoch": epoch, "total_steps": total_steps, "history": history, "data": data_report}
        return save_checkpoint(out_dir, step, engine, recipe, tracks, tokenizer, state, keep_last=t.keep_last)

    if recipe.eval.validate_at_start and val_loader is not None and start_step == 0:
        history.append(validation(0))  # the baseline the fine-tune is measured against

    # ---- loop --------------------------------------------------------------------------
    total_micro = total_steps * grad_accum
    micro = start_step * grad_accum
    epoch, skip = divmod(micro, batches_per_epoch)
    step, last_saved, saved_step, losses = start_step, None, None, []
    missing, bases = torch.zeros(len(tracks), dtype=torch.float64), 0
    engine.module.train()
    bar = tqdm(total=total_steps, initial=start_step, desc="training", disable=rank != 0)
    while micro < total_micro and (stop_after is None or step - start_step < stop_after):
        train_ds.set_epoch(epoch, skip)
        for batch in train_loader:
            out = engine(
                input_ids=batch["input_ids"].to(engine.device), attention_mask=batch["attention_mask"].to(engine.device),
                targets=batch["targets"].to(engine.device),
            )
            engine.backward(out.loss)
            engine.step()
            losses.append(out.loss.item())
            missing += batch["n_missing"]
            bases += int(batch["attention_mask"].sum())
            micro += 1
            if micro % grad_accum == 0:
                step = micro // grad_accum
                bar.update(1)
                if step % t.log_every == 0 or step == total_steps:
                    lr = engine.scheduler.get_last_lr()[-1]
                    metrics = {"train/loss": float(np.mean(losses)), "train/lr": lr, "data/missing_fraction": float(missing.sum() / max(1, bases * len(tracks)))}
                    bar.set_postfix(loss=f"{metrics['train/loss']:.4f}", lr=f"{lr:.2e}")
                    tracker.log(step, metrics)
                    history.append({"step": step, "loss": metrics["train/loss"]})
                    losses = []
                if t.save_every and step % t.save_every == 0:
                    last_saved, saved_step = checkpoint(step, epoch), step
                if stop_after is not None and step - start_step >= stop_after:
                    break
            if micro >= total_micro:
                break
        else:
            epoch, skip = epoch + 1, 0
    bar.close()

    # ---- final checkpoint ----------------------------------------------------------------
    if saved_step != step:  # the same decision on every rank: checkpoints are collective
        last_saved = checkpoint(step, epoch)
    tracker.close()
    if rank == 0:
        print(json.dumps({"checkpoint": str(last_saved), "step": step, **(history[-1] if history else {})}))
    return last_saved
