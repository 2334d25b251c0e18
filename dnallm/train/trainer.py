"""The training loop of every objective: set-up, loop, checkpoints, resume, preemption.

One loop serves KEGG fine-tuning (``finetune.py``), the coverage fine-tune (``coverage.py``)
and any later objective. What every run needs is here, once: ranks and device, seeding,
the output-directory rule, gradient accumulation and the cosine schedule (``engine.py``),
logging (``tracking.py``), checkpoint save / prune / resume with optimizer and RNG state
(``checkpoint.py``), and SIGTERM handling. An objective supplies only what is its own.

The objective contract (an object with these attributes; see ``FineTune`` and ``Coverage``)::

    recipe                 a recipe with the shared fields (run_name, output_dir, seed,
                           deepspeed) and a ``train`` section (``config.TrainConfig``)
    weights_file           the safetensors file its checkpoints keep, e.g. "trainable.safetensors"
    optimizer              None (AdamW, or the DeepSpeed JSON's) or (name, builder(param_groups))
    validate_at_start      validate before the first step too (a baseline in the history)

    setup(device, rank, world) -> model        build data and model; nothing trained yet
    param_groups(model) -> list[dict]          what the optimizer moves, with lr / weight decay
    batches_per_epoch() -> int                 micro-batches of one epoch on this rank
    batches(epoch, skip) -> iterable           this rank's micro-batches of ``epoch`` after the
                                               first ``skip``; the order is a function of
                                               (seed, epoch) alone, never of the global RNG
    train_step(engine, batch) -> (loss, counts)   forward; ``counts`` are numbers summed
                                               between log lines (samples, bases, ...)
    train_metrics(counts, seconds) -> dict     extra log values from those sums
    validate(engine) -> (entry, metrics) | None   held-out scores for the history / the log
    run_report() -> dict                       what the run works on: printed, kept in the state
                                               ({} for nothing)
    checkpoint_tensors(engine) -> dict         tensors to keep, un-partitioned (a collective)
    write_checkpoint_files(dir, model, tensors)   its own files beside them (rank 0)
    load_checkpoint_tensors(model, checkpoint)    put them back into a freshly built model

Optional:

    loss_tokens(batch) -> int  the tokens ``batch``'s mean loss is over, counted on the host: the
                           micro-batches of a step are then weighted by them (``loss_weights``),
                           so the step's loss is the mean over all its tokens on all ranks

    steps_per_round        optimizer steps one round of the objective's data serves (default 1).
                           GRPO samples a batch of replies and takes ``grpo.updates_per_batch``
                           steps on it, its ``batches`` yielding each of the round's micro-batches
                           once per step. Log lines, saves and SIGTERM stops then fall at the
                           ends of rounds: a log line covers whole rounds, and a checkpoint
                           holds no half-used round (``stop_after`` and the last step excepted).

``train_step`` may do more than a forward (GRPO samples its round's replies on the round's first
micro-batch). ``train_metrics`` runs on every rank at the same steps, so it may be a collective.

Resume is exact: weights, optimizer state, schedule, the data position and every rank's
random-number generators come back, so a run stopped at a checkpoint and resumed gives
the same numbers as one never stopped, dropout included.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import torch
from tqdm.auto import tqdm

from dnallm.hub import read_tensors
from dnallm.io import check_outputs, exclusive_output
from dnallm.train.checkpoint import (
    check_output_dir,
    check_resume,
    data_digests,
    load_moments,
    read_state,
    restore_rng,
    save_checkpoint,
    seed_everything,
)
from dnallm.train.engine import build_engine, distributed_env, grad_accum_steps, pick_device
from dnallm.train.tracking import Tracker

SIGNAL_NAMES = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "Ctrl-C"}


class Preempted(Exception):
    """SIGTERM or Ctrl-C arrived; the run saved ``checkpoint`` at ``step`` and stopped.
    ``exit_status``: what a shell reports for a process ended by that signal (143, 130)."""

    def __init__(self, checkpoint: Path | None, step: int, signum: int = signal.SIGTERM):
        super().__init__(
            f"stopped by {SIGNAL_NAMES[signum]} after step {step}, saved in {checkpoint}: "
            f"continue with the same command and train.resume_from_checkpoint=auto"
        )
        self.checkpoint, self.step, self.exit_status = checkpoint, step, 128 + signum


class StopFlag(threading.Event):
    """Set by SIGTERM or a first Ctrl-C; ``signum`` says which."""

    signum: int = signal.SIGTERM


@contextmanager
def stop_flag():
    """While inside, SIGTERM or a first Ctrl-C (SIGINT) only raises a flag; the loop checks it at each
    step boundary and saves there. A second Ctrl-C stops at once (KeyboardInterrupt)."""
    raised = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield raised
        return

    def on_signal(signum, frame):
        if signum == signal.SIGINT and raised.is_set():
            raise KeyboardInterrupt
        if signum == signal.SIGINT:
            print(
                "\nCtrl-C: saving a checkpoint at the end of this step (Ctrl-C again stops at once, "
                "losing the steps since the last checkpoint)",
                file=sys.stderr,
            )
        raised.signum = signum
        raised.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in SIGNAL_NAMES}
    try:
        yield raised
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def any_rank(flag: bool, engine) -> bool:
    """True on every rank when it is true on one (a collective when there are several)."""
    if engine.world_size == 1:
        return flag
    t = torch.tensor([float(flag)], device=engine.device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item())


def micro_batches(objective, micro: int, per_epoch: int):
    """This rank's micro-batches from the ``micro``-th on, epoch after epoch (a step may span two)."""
    epoch, skip = divmod(micro, per_epoch)
    while True:
        yield from objective.batches(epoch, skip)
        epoch, skip = epoch + 1, 0


def loss_weights(objective, group: list, engine) -> list[float | None]:
    """What each micro-batch's mean loss is multiplied by so that the step's gradient is that of
    the mean over every loss token of the step, on every rank (torchtune's and HF's token-weighted
    accumulation): ``n_i x micro-batches x ranks / n_step``, as the engines divide by the two.
    None (no weighting) for an objective without ``loss_tokens``, or that weights its own (GRPO)."""
    if getattr(objective, "loss_tokens", None) is None:
        return [None] * len(group)
    counts = [objective.loss_tokens(batch) for batch in group]  # host ints, known before the step
    total = sum(counts)
    if engine.world_size > 1:
        # host sync (several ranks): the step's loss tokens over ranks, once per optimizer step
        summed = torch.tensor([float(total)], device=engine.device)
        torch.distributed.all_reduce(summed)
        total = summed.item()
    scale = len(group) * engine.world_size / max(total, 1)
    return [n * scale for n in counts]


def optimizer_step(objective, engine, group: list, window: LossWindow) -> None:
    """One optimizer step over this rank's micro-batches ``group``: forward and backward on each,
    the optimizer moving on the last (inside ``engine.step``). On one rank the loop itself makes
    the host wait for nothing; the KEGG model's ``embed`` still does, three times (its placeholder
    count check, and its boolean feature mask forward and backward: ``scripts/count_ops.py``)."""
    for batch, weight in zip(group, loss_weights(objective, group, engine)):
        loss, counts = objective.train_step(engine, batch)
        engine.backward(loss if weight is None else loss * weight)
        engine.step()
        window.add(loss, counts, weight)


class LossWindow:
    """Sums between log lines, kept on the device: reading a loss each micro-batch would wait
    for the device every time."""

    def __init__(self, device: str):
        self.device = device
        self.start()

    def start(self) -> None:
        self.loss_sum = torch.zeros((), device=self.device)  # sum of weight x loss, on the device
        self.weight, self.counts, self.tick = 0.0, Counter(), time.perf_counter()

    def add(self, loss: torch.Tensor, counts: dict, weight: float | None) -> None:
        """``weight``: the micro-batch's share (``loss_weights``; None: all alike)."""
        weight = 1.0 if weight is None else weight
        self.loss_sum += loss.detach().float() * weight
        self.weight += weight
        self.counts.update(counts)

    def read(self) -> tuple[float, Counter, float]:
        """(mean loss, token-weighted where the objective counts tokens; summed counts; seconds),
        and a fresh window."""
        out = (self.loss_sum.item() / max(self.weight, 1e-12), self.counts, time.perf_counter() - self.tick)
        self.start()
        return out


def fit(objective, stop_after: int | None = None) -> Path:
    """Train and return the last checkpoint. ``stop_after`` ends the run after that many
    optimizer steps of this process, as a crash would (used to test resumption)."""
    with output_dir_lock(Path(objective.recipe.output_dir)):
        return _fit(objective, stop_after)


@contextmanager
def output_dir_lock(out_dir: Path):
    """The run's ``output_dir`` checked and held for the whole run, so that a second run into it
    (another terminal, a scheduler's retry) stops at once instead of mixing checkpoints and logs.
    Rank 0 holds it: it alone writes there."""
    rank = distributed_env()[0]
    if rank != 0:
        yield
        return
    check_outputs(dirs=[out_dir])
    with exclusive_output(out_dir, "output_dir"):
        yield


def _fit(objective, stop_after: int | None) -> Path:
    # ---- setup -------------------------------------------------------------------------
    recipe, t = objective.recipe, objective.recipe.train
    rank, _, world = distributed_env()
    device = pick_device()
    seed_everything(recipe.seed)
    out_dir = Path(recipe.output_dir)
    start = check_output_dir(t, out_dir, objective.weights_file)  # before any model loads
    digests = data_digests(recipe)
    if start.resume:
        check_resume(recipe, start.resume, digests)
    grad_accum = grad_accum_steps(recipe, world)

    model = objective.setup(device, rank, world)
    state = read_state(start.resume) if start.resume else {}
    start_step = state.get("step", 0)
    if start.resume:
        objective.load_checkpoint_tensors(model, start.resume)

    per_epoch = objective.batches_per_epoch()
    if per_epoch < grad_accum:
        raise ValueError(
            f"{per_epoch} training batches per epoch on each rank, fewer than one optimizer step ({grad_accum} micro-batches)"
        )
    total_steps = t.max_steps if t.max_steps > 0 else math.ceil(t.epochs * per_epoch / grad_accum)
    engine = build_engine(
        recipe,
        model,
        objective.param_groups(model),
        total_steps=total_steps,
        grad_accum=grad_accum,
        device=device,
        optimizer=objective.optimizer,
    )
    if start.resume:
        engine.load_master_weights(read_tensors(Path(start.resume) / objective.weights_file))
        engine.load_moments(load_moments(engine.module, start.resume), start_step)
    if rank == 0 and t.overwrite_output_dir:
        start.clear_foreign(out_dir)

    recipe_yaml = recipe.to_yaml()
    tracker = Tracker(out_dir, recipe, enabled=rank == 0, start_step=start_step if start.resume else -1)
    history = state.get("history", [])
    report = objective.run_report()
    if rank == 0 and report:
        print(json.dumps({**report, "steps": total_steps, "grad_accum": grad_accum, "batches_per_epoch": per_epoch}))

    def validation(step: int) -> dict:
        entry = {"step": step}
        scores = objective.validate(engine)
        if scores is not None:
            entry.update(scores[0])
            tracker.log(step, scores[1])
        return entry

    def checkpoint(step: int, micro: int, validate: bool = True) -> Path | None:
        history.append(validation(step) if validate else {"step": step})
        epoch, batches_done = divmod(micro, per_epoch)
        run_state = {
            "epoch": epoch,
            "total_steps": total_steps,
            "history": history,
            **report,
            "data_order": {"seed": recipe.seed, "epoch": epoch, "batches_done": batches_done},
            "data_digests": digests,
        }
        return save_checkpoint(
            out_dir, step, engine, objective, recipe_yaml, run_state, keep_last=t.keep_last, run_id=start.run_id
        )

    if objective.validate_at_start and start_step == 0:
        entry = validation(0)  # the baseline the fine-tune is measured against
        if len(entry) > 1:
            history.append(entry)

    # ---- loop: one optimizer step per iteration ------------------------------------------
    micro = start_step * grad_accum
    data = micro_batches(objective, micro, per_epoch)
    step, last_saved, saved_step, preempted = start_step, None, None, False
    round_steps, round_start = getattr(objective, "steps_per_round", 1), start_step

    def crossed(every: int) -> bool:  # a multiple of ``every`` in (round_start, step]
        return step // every > round_start // every

    window = LossWindow(engine.device)
    if start.resume and not restore_rng(start.resume, rank):
        print(
            f"note: {start.resume} holds no random-number state for rank {rank}: dropout masks differ from an uninterrupted run",
            file=sys.stderr,
        )
    engine.module.train()
    bar = tqdm(total=total_steps, initial=start_step, desc="training", disable=rank != 0)
    with stop_flag() as stop:
        while step < total_steps and (stop_after is None or step - start_step < stop_after):
            group = [next(data) for _ in range(grad_accum)]  # this step's micro-batches on this rank
            optimizer_step(objective, engine, group, window)
            micro += grad_accum
            step += 1
            bar.update(1)
            round_end = step % round_steps == 0 or step == total_steps
            if round_end and (crossed(t.log_every) or step == total_steps):
                lr = engine.scheduler.get_last_lr()[-1]
                loss_value, counts, seconds = window.read()  # host sync: once per log line
                metrics = {"train/loss": loss_value, "train/lr": lr, **objective.train_metrics(counts, seconds)}
                bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}")
                tracker.log(step, metrics)
                history.append({"step": step, "loss": loss_value})
            if round_end and t.save_every and crossed(t.save_every):
                last_saved, saved_step = checkpoint(step, micro), step
                # A resume starts here with nothing summed: so does the uninterrupted run, and
                # both then log the same averages.
                window.start()
            if round_end:
                round_start = step
            # host sync (several ranks): the stop flag is all-reduced once per round
            if round_end and step < total_steps and any_rank(stop.is_set(), engine):
                preempted = True
                break
        bar.close()

        # ---- final checkpoint (SIGTERM now waits for it) ------------------------------------
        # Decided on the step, not the path: only rank 0 gets a path, and every rank must take part.
        if saved_step != step:
            last_saved = checkpoint(step, micro, validate=not preempted)  # preempted: save, quickly
    tracker.close()
    if rank == 0:
        print(json.dumps({"checkpoint": str(last_saved), "step": step, **(history[-1] if history else {})}))
    if preempted:
        raise Preempted(last_saved, step, stop.signum)
    return last_saved
