"""The reinforcement stage (GRPO) on top of a fine-tuned fusion checkpoint.

Read top to bottom: setup (the fine-tuned model, rewards, engine), the loop, checkpoints.
Each step samples ``grpo.group_size`` replies for each of ``train.micro_batch_size`` prompts,
``train.grad_accum`` times; every reply is scored by the recipe's rewards and compared with
the other replies to its prompt (group-normalised advantage); the policy then takes
``grpo.updates_per_batch`` optimizer steps on the clipped policy-gradient loss, with a KL
penalty to the reference policy (the same model with its LoRA adapters off).
Checkpoints have the fine-tuning layout, so ``dnallm eval`` and ``dnallm chat`` read them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.utils.data import DistributedSampler
from tqdm.auto import tqdm

from dnallm.config import GRPORecipe, RecipeError
from dnallm.data.kegg import load_examples
from dnallm.data.labels import LabelSet
from dnallm.io import save_figure
from dnallm.train.build import build_encoder, build_model, build_processor
from dnallm.train.checkpoint import (
    find_resume_checkpoint, load_moments, load_trainable, read_state, resolve_checkpoint, rng_state, save_checkpoint, set_rng_state,
)
from dnallm.train.embed_cache import require_cached
from dnallm.train.engine import distributed_env, pick_device
from dnallm.train.finetune import build_engine, set_seed
from dnallm.train.policy import group_advantages, policy_loss, reference_logps, reply_logps, sample_replies
from dnallm.train.rewards import Reply, Rewards, correct_label
from dnallm.train.tracking import Tracker

# What the fine-tuned checkpoint and this recipe must agree on for its weights to fit.
MODEL_KEYS = ("data.dna_window", "data.use_dna", "encoder.layer", "lora.r", "lora.alpha", "lora.target_modules",
              "projector.kind", "projector.pool", "projector.kernel")
CURVES = ("reward", "sampled_accuracy", "kl", "reply_length")


def init_checkpoint(recipe: GRPORecipe) -> Path:
    """``grpo.init_from`` resolved, after checking it was trained with this recipe's model sections."""
    if not recipe.grpo.init_from:
        raise RecipeError("grpo.init_from is empty: set it to the fine-tuned checkpoint (or its run directory), e.g. grpo.init_from=runs/kegg-tiny")
    checkpoint = resolve_checkpoint(recipe.grpo.init_from)
    theirs, ours = yaml.safe_load((checkpoint / "recipe.yaml").read_text()), recipe.to_dict()
    for key in MODEL_KEYS:
        section, name = key.split(".")
        if section in theirs and name in theirs[section] and theirs[section][name] != ours[section][name]:
            raise RecipeError(f"grpo.init_from: {checkpoint} was fine-tuned with {key}={theirs[section][name]!r}, "
                              f"this recipe has {key}={ours[section][name]!r}; make them equal")
    return checkpoint


def prompt_batches(n: int, batch_size: int, seed: int, skip: int):
    """Endless batches of example indices for this rank, reshuffled each epoch; the first
    ``skip`` batches (already used before a resume) are passed over. No global RNG is used."""
    rank, _, world = distributed_env()
    sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=seed)
    per_epoch = math.ceil(len(sampler) / batch_size)
    epoch, skip = divmod(skip, per_epoch)
    while True:
        sampler.set_epoch(epoch)
        order = list(sampler)
        for start in range(skip * batch_size, len(order), batch_size):
            yield order[start : start + batch_size]
        epoch, skip = epoch + 1, 0


def mean_over_ranks(metrics: dict[str, float], device: str) -> dict[str, float]:
    if distributed_env()[2] == 1:
        return metrics
    values = torch.tensor(list(metrics.values()), dtype=torch.float64, device=device)
    torch.distributed.all_reduce(values)
    return dict(zip(metrics, (values / distributed_env()[2]).tolist()))


def all_rng_states() -> list[dict]:
    """Every rank's generator states (rank order), gathered for rank 0 to save."""
    if distributed_env()[2] == 1:
        return [rng_state()]
    states = [None] * distributed_env()[2]
    torch.distributed.all_gather_object(states, rng_state())
    return states


def plot_curves(history: list[dict], path: Path) -> None:
    """Reward, sampled accuracy, KL and reply length over steps, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CURVES), figsize=(4 * len(CURVES), 3.2))
    steps = [h["step"] for h in history]
    for ax, key in zip(axes, CURVES):
        ax.plot(steps, [h.get(key, float("nan")) for h in history], marker="." if len(steps) < 50 else None)
        ax.set_title(key.replace("_", " "))
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def grpo(recipe: GRPORecipe, stop_after: int | None = None) -> Path:
    """Run GRPO and return the last checkpoint. ``stop_after`` ends the run after that many
    optimizer steps of this process, as a crash would (used to test resumption)."""
    # ---- setup -------------------------------------------------------------------------
    rank, _, world = distributed_env()
    device = pick_device()
    set_seed(recipe.seed)
    out_dir = Path(recipe.output_dir)
    g, t = recipe.grpo, recipe.train
    if g.group_size < 2:
        raise RecipeError(f"grpo.group_size={g.group_size}: a group needs at least 2 replies to compare")
    init = init_checkpoint(recipe)
    rewards = Rewards(g)
    examples = list(load_examples(recipe.data.train, recipe.data.dna_window, need_dna=recipe.data.use_dna))
    labels = LabelSet.from_jsonl(recipe.data.train)  # what `dnallm eval` matches replies against

    encoder = build_encoder(recipe, device)
    require_cached(encoder, recipe.data.train, recipe.data.dna_window)
    model, tokenizer = build_model(recipe, device)
    processor = build_processor(recipe, tokenizer, encoder)

    resume = find_resume_checkpoint(t.resume_from_checkpoint, out_dir)
    state = read_state(resume) if resume else {}
    start_step = state.get("step", 0)
    load_trainable(model, resume or init)

    mu = g.updates_per_batch
    prompts_per_batch = t.micro_batch_size * t.grad_accum * world  # one batch of replies: mu optimizer steps
    total_steps = t.max_steps if t.max_steps > 0 else math.ceil(t.epochs * len(examples) / prompts_per_batch) * mu
    engine = build_engine(model, recipe, total_steps, device)
    if resume:
        engine.load_moments(load_moments(engine.module, resume), start_step)
        states = state.get("rng", [])
        if len(states) == world:
            set_rng_state(states[rank])
        else:  # another number of ranks cannot replay the same draws: seed each rank afresh
            set_seed(recipe.seed + start_step + rank)
    batches = prompt_batches(len(examples), t.micro_batch_size, recipe.seed, skip=start_step // mu * t.grad_accum)

    recipe_yaml = recipe.to_yaml()
    tracker = Tracker(out_dir, recipe, enabled=rank == 0)
    history = state.get("history", [])

    def checkpoint(step: int) -> Path | None:
        saved = {"total_steps": total_steps, "init_from": str(init), "history": history, "rng": all_rng_states()}
        return save_checkpoint(out_dir, step, engine.module, engine, recipe_yaml, saved, keep_last=t.keep_last)

    # ---- loop --------------------------------------------------------------------------
    step, last_logged, saved_step, last_saved, window = start_step, start_step, None, None, []
    bar = tqdm(total=total_steps, initial=start_step, desc="grpo", disable=rank != 0)
    while step < total_steps and (stop_after is None or step - start_step < stop_after):
        # sample and score: G replies per prompt, no graph
        engine.module.eval()
        batch = []
        for _ in range(t.grad_accum):
            prompts = [examples[i] for i in next(batches)]
            with engine.whole_weights():
                rollout = sample_replies(
                    engine.module, encoder, processor, prompts, group_size=g.group_size, temperature=g.temperature,
                    top_p=g.top_p, max_new_tokens=g.max_new_tokens, encoder_batch_size=recipe.encoder.batch_size, device=device,
                )
            n_tokens = rollout.reply_mask.sum(1).long().tolist()
            replies = [Reply(text, n, done, prompts[i // g.group_size]["answer"], labels, g)
                       for i, (text, n, done) in enumerate(zip(rollout.texts, n_tokens, rollout.finished))]
            totals, parts = rewards.score(replies)
            advantages = group_advantages(torch.tensor(totals, device=device), g.group_size, g.scale_rewards)
            ref = reference_logps(engine.module, rollout) if g.kl_beta > 0 else None
            with torch.no_grad():
                old = reply_logps(engine.module, rollout) if mu > 1 else None
            batch.append((rollout, advantages, ref, old))
            window.append({
                "reward": float(np.mean(totals)), **{f"reward/{k}": float(np.mean(v)) for k, v in parts.items()},
                "sampled_accuracy": float(np.mean([correct_label(r) for r in replies])), "reply_length": float(np.mean(n_tokens)),
            })
        # learn: mu optimizer steps over the sampled batch, every reply token weighted alike
        engine.module.train()
        step_tokens = sum(float(r.reply_mask.sum()) for r, *_ in batch) / t.grad_accum
        for _ in range(min(mu, total_steps - step)):
            for rollout, advantages, ref, old in batch:
                logps = reply_logps(engine, rollout)
                loss, stats = policy_loss(
                    logps, logps.detach() if old is None else old, advantages, rollout.reply_mask,
                    clip_low=g.clip_eps, clip_high=g.clip_eps_high or g.clip_eps, ref_logps=ref, kl_beta=g.kl_beta,
                    n_tokens=step_tokens,
                )
                engine.backward(loss)
                engine.step()
                window.append({"loss": loss.item(), **stats})  # their mean: the step's loss per reply token
            step += 1
            bar.update(1)
            if stop_after is not None and step - start_step >= stop_after:
                break

        if step - last_logged >= t.log_every or step >= total_steps:
            keys = sorted({k for w in window for k in w})
            metrics = mean_over_ranks({k: float(np.mean([w[k] for w in window if k in w])) for k in keys}, device)
            metrics["lr"] = engine.scheduler.get_last_lr()[-1]
            tracker.log(step, {f"grpo/{k}": v for k, v in metrics.items()})
            history.append({"step": step, **{k: metrics[k] for k in CURVES if k in metrics}})
            bar.set_postfix(reward=f"{metrics['reward']:.3f}", acc=f"{metrics['sampled_accuracy']:.2f}")
            last_logged, window = step, []
        if t.save_every and step // t.save_every > (step - mu) // t.save_every:
            last_saved, saved_step = checkpoint(step), step
    bar.close()

    # ---- final checkpoint and curves ----------------------------------------------------
    if saved_step != step:  # every rank takes part in a save; only rank 0 writes
        last_saved = checkpoint(step)
    tracker.close()
    if rank == 0:
        if history:
            plot_curves(history, out_dir / "grpo_curves.png")
        print(json.dumps({"checkpoint": str(last_saved), "step": step, **(history[-1] if history else {})}))
    return last_saved
