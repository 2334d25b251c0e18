"""The reinforcement stage (GRPO): an objective of the training core (``trainer.fit``).

One round: ``grpo.group_size`` replies are sampled for each of ``train.micro_batch_size``
prompts, for each of the step's ``train.grad_accum`` micro-batches; every reply is scored by
the recipe's rewards and compared with the other replies to its prompt (group-normalised
advantage); the policy then takes ``grpo.updates_per_batch`` optimizer steps on these replies
with the clipped policy-gradient loss and a KL penalty to the reference policy (the same
model with its LoRA adapters off). The pieces are ``policy.py`` and ``rewards.py``; the loop,
engine, seeding, checkpoints and resume are the core's. Checkpoints are fine-tuning's
(``FineTune``), so ``dnallm eval`` and ``dnallm chat`` read them.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from dnallm.config import GRPORecipe, RecipeError
from dnallm.data.kegg import load_examples
from dnallm.data.labels import LabelSet
from dnallm.encoders.cache import require_cached
from dnallm.fusion.config import DNAFusionConfig
from dnallm.fusion.pretrained import read_config
from dnallm.hub import locate_models
from dnallm.io import save_figure
from dnallm.train.build import build_encoder, build_model, build_processor
from dnallm.train.checkpoint import LOG, load_trainable, resolve_checkpoint
from dnallm.train.engine import distributed_env, grad_accum_steps, zero_stage
from dnallm.train.finetune import FineTune
from dnallm.train.policy import group_advantages, policy_loss, reference_logps, reply_logps, sample_replies
from dnallm.train.rewards import Reply, Rewards, correct_label
from dnallm.train.trainer import fit

# What a GRPO run may set apart from its fine-tuned checkpoint: precision, how logits are computed, and
# the fine-tuning's stage 1 (the summary's pretraining), which GRPO does not run.
FREE_KEYS = ("encoder.dtype", "llm.dtype", "logits", "logits_chunk", "projector.pretrain_epochs")
CURVES = ("reward", "sampled_accuracy", "kl", "reply_length")


def init_checkpoint(recipe: GRPORecipe) -> Path:
    """``grpo.init_from`` resolved, after checking it was trained with this recipe's model sections."""
    if not recipe.grpo.init_from:
        raise RecipeError(
            "grpo.init_from is empty: set it to the fine-tuned checkpoint (or its run directory), e.g. grpo.init_from=runs/kegg-tiny"
        )
    checkpoint = resolve_checkpoint(recipe.grpo.init_from)
    theirs = read_config(checkpoint)
    locate_models(theirs, relative_to=checkpoint)
    ours = DNAFusionConfig.from_recipe(recipe)
    locate_models(ours)
    differences = ours.differences(theirs, ignore=FREE_KEYS)
    if differences:
        theirs_text = ", ".join(f"{key}={value!r}" for key, _, value in differences)
        ours_text = ", ".join(f"{key}={value!r}" for key, value, _ in differences)
        raise RecipeError(
            f"grpo.init_from: {checkpoint} was fine-tuned with {theirs_text}, this recipe has {ours_text}; "
            "make them equal"
        )
    return checkpoint


def prompt_batches(n: int, batch_size: int, seed: int, skip: int, rank: int, world: int):
    """Endless batches of example indices for this rank, reshuffled each pass over the data;
    the first ``skip`` batches are passed over. No global RNG is used."""
    sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=seed)
    per_pass = math.ceil(len(sampler) / batch_size)
    data_pass, skip = divmod(skip, per_pass)
    while True:
        sampler.set_epoch(data_pass)
        order = list(sampler)
        for start in range(skip * batch_size, len(order), batch_size):
            yield order[start : start + batch_size]
        data_pass, skip = data_pass + 1, 0


def mean_over_ranks(metrics: dict[str, float], device: str) -> dict[str, float]:
    world = distributed_env()[2]
    if world == 1:
        return metrics
    values = torch.tensor(list(metrics.values()), dtype=torch.float64, device=device)
    torch.distributed.all_reduce(values)
    return dict(zip(metrics, (values / world).tolist()))


def plot_curves(log: Path, path: Path) -> None:
    """Reward, sampled accuracy, KL and reply length over steps (from the run's log), one panel each."""
    from dnallm.io import file_figures

    plt = file_figures()

    lines = [json.loads(line) for line in log.read_text().splitlines()]
    fig, axes = plt.subplots(1, len(CURVES), figsize=(4 * len(CURVES), 3.2))
    steps = [entry["step"] for entry in lines]
    for ax, key in zip(axes, CURVES):
        ax.plot(
            steps, [entry.get(f"grpo/{key}", float("nan")) for entry in lines], marker="." if len(steps) < 50 else None
        )
        ax.set_title(key.replace("_", " "))
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


class GRPO(FineTune):
    """The reinforcement objective for ``trainer.fit``: fine-tuning's model, parameter groups
    and checkpoints, with sampled and scored replies for data.

    A micro-batch is (round, its prompt batches, which one); ``train_step`` samples the
    round's replies on the first micro-batch it meets of a round, and every micro-batch of
    the round is served once per optimizer step (``steps_per_round``)."""

    loss_tokens = None  # its loss weighs every reply token of the step itself (policy_loss's n_tokens)

    def __init__(self, recipe: GRPORecipe):
        super().__init__(recipe)
        g = recipe.grpo
        if recipe.data.val:  # rewards on held-out prompts are `dnallm eval`'s work, not a training signal
            raise RecipeError(
                f"data.val={recipe.data.val!r}: GRPO does not validate; set data.val= (empty) and run "
                "`dnallm eval RUN_DIR --data FILE` on the result"
            )
        self.init = init_checkpoint(recipe)  # before anything loads
        self.rewards = Rewards(g)
        self.steps_per_round = g.updates_per_batch
        self.round = None  # (index, sampled parts, reply tokens per micro-batch)

    def setup(self, device: str, rank: int, world: int):
        recipe, t = self.recipe, self.recipe.train
        self.device, self.rank, self.world = device, rank, world
        self.examples = list(load_examples(recipe.data.train, recipe.data.dna_window, need_dna=recipe.data.use_dna))
        self.labels = LabelSet.from_jsonl(recipe.data.train)  # what `dnallm eval` matches replies against
        self.encoder = build_encoder(recipe, device)
        require_cached(self.encoder, recipe.data.train, recipe.data.dna_window)
        model, tokenizer = build_model(recipe, device, self.encoder, place=zero_stage(recipe) != 3)
        self.processor = build_processor(recipe, tokenizer, self.encoder)
        load_trainable(model, self.init)  # a resume then loads its checkpoint over it
        self.grad_accum = grad_accum_steps(recipe, world)
        per_rank = math.ceil(len(self.examples) / world)  # DistributedSampler pads each rank's share
        self.rounds_per_epoch = math.ceil(math.ceil(per_rank / t.micro_batch_size) / self.grad_accum)
        return model

    def batches_per_epoch(self) -> int:
        return self.rounds_per_epoch * self.grad_accum * self.steps_per_round

    def batches(self, epoch: int, skip: int):
        per_round = self.grad_accum * self.steps_per_round
        first = epoch * self.rounds_per_epoch + skip // per_round
        prompts = prompt_batches(
            len(self.examples),
            self.recipe.train.micro_batch_size,
            self.recipe.seed,
            first * self.grad_accum,
            self.rank,
            self.world,
        )
        for index in range(first, (epoch + 1) * self.rounds_per_epoch):
            batches = [[self.examples[i] for i in next(prompts)] for _ in range(self.grad_accum)]
            for use in range(skip % per_round if index == first else 0, per_round):
                yield index, batches, use % self.grad_accum

    def sample(self, engine, batches: list[list[dict]]) -> tuple[list, float, Counter]:
        """A round's replies, scored (no graph): per prompt batch (rollout, advantages, reference
        and sampling log-probabilities), reply tokens per micro-batch, and sums for the log."""
        g, module = self.recipe.grpo, engine.module
        module.eval()
        parts, sums = [], Counter()
        for prompts in batches:
            with engine.whole_weights():
                rollout = sample_replies(
                    module,
                    self.encoder,
                    self.processor,
                    prompts,
                    group_size=g.group_size,
                    temperature=g.temperature,
                    top_p=g.top_p,
                    max_new_tokens=g.max_new_tokens,
                    encoder_batch_size=self.recipe.encoder.batch_size,
                    device=self.device,
                )
            n_tokens = rollout.reply_mask.sum(1).long().tolist()
            replies = [
                Reply(text, n, done, prompts[i // g.group_size]["answer"], self.labels, g)
                for i, (text, n, done) in enumerate(zip(rollout.texts, n_tokens, rollout.finished))
            ]
            totals, rewards = self.rewards.score(replies)
            advantages = group_advantages(torch.tensor(totals, device=self.device), g.group_size, g.scale_rewards)
            ref = reference_logps(module, rollout) if g.kl_beta > 0 else None
            with torch.no_grad():
                old = reply_logps(module, rollout) if self.steps_per_round > 1 else None
            parts.append((rollout, advantages, ref, old))
            sums.update(
                {
                    "rollouts": 1,
                    "sample/reward": float(np.mean(totals)),
                    **{f"sample/reward/{k}": float(np.mean(v)) for k, v in rewards.items()},
                    "sample/sampled_accuracy": float(np.mean([correct_label(r) for r in replies])),
                    "sample/reply_length": float(np.mean(n_tokens)),
                }
            )
        module.train()
        return parts, sum(float(r.reply_mask.sum()) for r, *_ in parts) / len(parts), sums

    def train_step(self, engine, batch):
        index, batches, part = batch
        counts = Counter({"updates": 1})
        if self.round is None or self.round[0] != index:
            parts, step_tokens, sums = self.sample(engine, batches)
            self.round = (index, parts, step_tokens)
            counts.update(sums)
        _, parts, step_tokens = self.round
        rollout, advantages, ref, old = parts[part]
        g = self.recipe.grpo
        logps = reply_logps(engine, rollout)
        loss, stats = policy_loss(
            logps,
            logps.detach() if old is None else old,
            advantages,
            rollout.reply_mask,
            clip_low=g.clip_eps,
            clip_high=g.clip_eps_high or g.clip_eps,
            ref_logps=ref,
            kl_beta=g.kl_beta,
            n_tokens=step_tokens,  # every reply token of the step weighs the same
        )
        counts.update({f"update/{k}": v for k, v in stats.items()})
        return loss, counts

    def train_metrics(self, counts: dict, seconds: float) -> dict:
        """Means per sampled micro-batch (rewards, accuracy, length) and per update (clip, KL), over ranks."""
        means = {}
        for key, value in sorted(counts.items()):
            kind, _, name = key.partition("/")
            if name:
                means[f"grpo/{name}"] = value / counts["rollouts" if kind == "sample" else "updates"]
        return mean_over_ranks(means, self.device)

    def validate(self, engine):
        return None  # data.val is refused when the objective is made

    def run_report(self) -> dict:
        return {"init_from": str(self.init)}


def grpo(recipe: GRPORecipe, stop_after: int | None = None) -> Path:
    """Run GRPO (``trainer.fit``) and return the last checkpoint; rank 0 plots ``grpo_curves.png``."""
    if recipe.eval.score != "label":
        raise RecipeError(
            f"eval.score={recipe.eval.score}: GRPO's rewards score labels (the label after 'Answer:'); "
            "it reinforces label tasks (eval.score=label) only"
        )
    last = fit(GRPO(recipe), stop_after)
    out_dir = Path(recipe.output_dir)
    if distributed_env()[0] == 0 and (out_dir / LOG).is_file():
        plot_curves(out_dir / LOG, out_dir / "grpo_curves.png")
    return last
