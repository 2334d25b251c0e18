"""The KEGG fusion recipe: frozen DNA encoder -> projector -> LoRA causal LM.

Read top to bottom: setup (data, models, engine), the loop, checkpoints.
Launch on one process (``dnallm train RECIPE``) or many (``deepspeed``, ``torchrun``,
``accelerate launch``): ranks come from the launcher's environment.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from dnallm.config import Recipe
from dnallm.data.kegg import load_examples
from dnallm.fusion.processor import dna_inputs
from dnallm.train.build import build_encoder, build_model, build_processor
from dnallm.train.embed_cache import require_cached
from dnallm.train.checkpoint import find_resume_checkpoint, load_moments, load_trainable, read_state, save_checkpoint
from dnallm.train.engine import DeepSpeedEngine, TorchEngine, distributed_env, pick_device, resolve_deepspeed_config
from dnallm.train.tracking import Tracker


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def param_groups(model, recipe: Recipe) -> list[dict]:
    fusion, lora = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (lora if name.startswith("llm.") else fusion).append(p)
    t = recipe.train
    return [
        {"params": fusion, "lr": t.projector_lr or t.lr, "weight_decay": 0.0},
        {"params": lora, "lr": t.lr, "weight_decay": t.weight_decay},
    ]


def build_engine(model, recipe: Recipe, total_steps: int, device: str):
    """The recipe's engine (DeepSpeed when ``deepspeed`` names a config, else plain PyTorch)
    with AdamW over ``param_groups`` and a cosine schedule with warm-up over ``total_steps``."""
    t = recipe.train
    warmup = round(t.warmup_ratio * total_steps)

    def scheduler_fn(optimizer):
        return get_cosine_schedule_with_warmup(optimizer, warmup, total_steps)

    groups = param_groups(model, recipe)
    if recipe.deepspeed:
        ds_config = resolve_deepspeed_config(
            recipe.deepspeed, micro_batch_size=t.micro_batch_size, grad_accum=t.grad_accum,
            max_grad_norm=t.max_grad_norm, lr=t.lr, weight_decay=t.weight_decay, device=device,
        )
        return DeepSpeedEngine(model, groups, scheduler_fn, config=ds_config, device=device)
    if distributed_env()[2] > 1:
        raise RuntimeError("multi-process training needs a DeepSpeed config: add deepspeed=recipes/deepspeed/zero2.json")
    return TorchEngine(model, groups, scheduler_fn, grad_accum=t.grad_accum, max_grad_norm=t.max_grad_norm, device=device)


def step_batch(engine, encoder, batch: dict, device: str, encoder_batch_size: int):
    """One micro-batch forward: frozen encoder (no graph), then the fusion model."""
    dna_embeds, dna_mask = dna_inputs(encoder, batch["dna"], encoder_batch_size) if encoder else (None, None)
    return engine(
        input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
        labels=batch["labels"].to(device), dna_embeds=dna_embeds, dna_mask=dna_mask,
    )


@torch.no_grad()
def validation_loss(engine, encoder, rows: list[dict], processor, recipe: Recipe, device: str) -> float:
    """Token-weighted mean loss over this rank's share of ``rows``, averaged over ranks."""
    engine.module.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)
    shard = rows[engine.rank :: engine.world_size]
    for start in range(0, len(shard), recipe.eval.batch_size):
        batch = processor.collate(shard[start : start + recipe.eval.batch_size])
        n_tokens = int((batch["labels"][:, 1:] != -100).sum())
        loss = step_batch(engine, encoder, batch, device, recipe.encoder.batch_size).loss
        total += torch.tensor([loss.item() * n_tokens, n_tokens], dtype=torch.float64, device=device)
    if engine.world_size > 1:
        torch.distributed.all_reduce(total)
    engine.module.train()
    return float(total[0] / total[1].clamp(min=1))


def train(recipe: Recipe, stop_after: int | None = None) -> Path:
    """Train and return the last checkpoint. ``stop_after`` ends the run after that many
    optimizer steps of this process, as a crash would (used to test resumption)."""
    # ---- setup -------------------------------------------------------------------------
    rank, _, world = distributed_env()
    device = pick_device()
    set_seed(recipe.seed)
    out_dir = Path(recipe.output_dir)
    t = recipe.train
    need_dna = recipe.data.use_dna

    train_ds = load_examples(recipe.data.train, recipe.data.dna_window, need_reasoning=recipe.data.with_reasoning, need_dna=need_dna)
    val_ds = load_examples(recipe.data.val, recipe.data.dna_window, need_reasoning=recipe.data.with_reasoning, need_dna=need_dna) if recipe.data.val else None

    encoder = build_encoder(recipe, device)
    for path in (recipe.data.train, recipe.data.val):
        if path:
            require_cached(encoder, path, recipe.data.dna_window)
    model, tokenizer = build_model(recipe, device, encoder)
    processor = build_processor(recipe, tokenizer, encoder)
    train_rows = [processor(ex) for ex in tqdm(train_ds, desc="tokenizing train", disable=rank != 0)]
    val_rows = [processor(ex) for ex in tqdm(val_ds, desc="tokenizing val", disable=rank != 0)] if val_ds else []

    resume = find_resume_checkpoint(recipe.train.resume_from_checkpoint, recipe.output_dir)
    start_step = read_state(resume)["step"] if resume else 0
    if resume:
        load_trainable(model, resume)

    sampler = DistributedSampler(train_rows, num_replicas=world, rank=rank, shuffle=True, seed=recipe.seed)
    loader = DataLoader(train_rows, batch_size=t.micro_batch_size, sampler=sampler, collate_fn=processor.collate)
    total_steps = t.max_steps if t.max_steps > 0 else math.ceil(t.epochs * len(loader) / t.grad_accum)

    engine = build_engine(model, recipe, total_steps, device)
    if resume:
        engine.load_moments(load_moments(engine.module, resume), start_step)

    recipe_yaml = recipe.to_yaml()
    tracker = Tracker(out_dir, recipe, enabled=rank == 0)
    history = read_state(resume).get("history", []) if resume else []

    def checkpoint(step: int, epoch: int) -> Path | None:
        entry = {"step": step}
        if val_rows:
            entry["val_loss"] = validation_loss(engine, encoder, val_rows, processor, recipe, device)
            tracker.log(step, {"val/loss": entry["val_loss"]})
        history.append(entry)
        state = {"epoch": epoch, "total_steps": total_steps, "history": history}
        return save_checkpoint(out_dir, step, engine.module, engine, recipe_yaml, state, keep_last=t.keep_last)

    # ---- loop --------------------------------------------------------------------------
    total_micro = total_steps * t.grad_accum
    micro = start_step * t.grad_accum
    epoch, skip = divmod(micro, len(loader))
    step, last_saved, saved_step, losses = start_step, None, None, []
    engine.module.train()
    bar = tqdm(total=total_steps, initial=start_step, desc="training", disable=rank != 0)
    tick, samples = time.perf_counter(), 0
    while micro < total_micro and (stop_after is None or step - start_step < stop_after):
        sampler.set_epoch(epoch)
        for i, batch in enumerate(loader):
            if i < skip:
                continue
            loss = step_batch(engine, encoder, batch, device, recipe.encoder.batch_size).loss
            engine.backward(loss)
            engine.step()
            losses.append(loss.item())
            samples += batch["input_ids"].shape[0] * world
            micro += 1
            if micro % t.grad_accum == 0:
                step = micro // t.grad_accum
                bar.update(1)
                if step % t.log_every == 0 or step == total_steps:
                    elapsed = time.perf_counter() - tick
                    lr = engine.scheduler.get_last_lr()[-1]
                    metrics = {"train/loss": float(np.mean(losses)), "train/lr": lr, "train/samples_per_s": samples / elapsed}
                    bar.set_postfix(loss=f"{metrics['train/loss']:.4f}", lr=f"{lr:.2e}")
                    tracker.log(step, metrics)
                    history.append({"step": step, "loss": metrics["train/loss"]})
                    losses, samples, tick = [], 0, time.perf_counter()
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
    # Decided on the step, not the path: only rank 0 gets a path, and every rank must take part.
    if saved_step != step:
        last_saved = checkpoint(step, epoch)
    tracker.close()
    if rank == 0:
        print(json.dumps({"checkpoint": str(last_saved), "step": step, **(history[-1] if history else {})}))
    return last_saved
