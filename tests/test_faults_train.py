"""Training faults end to end: another run's output_dir, bad recipe values, SIGTERM and kill -9
mid-run with LoRA dropout on, then resume bit-identical (plain PyTorch and ZeRO-3 offload)."""

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tiny_recipes import BRIEF_STAGE1
from dnallm.config import RecipeError, load_recipe
from dnallm.data.kegg import write_jsonl
from dnallm.data.synthetic import planted_records
from dnallm.train.checkpoint import read_state
from dnallm.train.finetune import train

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "recipes/kegg/tiny.yaml"


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    out = tmp_path_factory.mktemp("planted")
    write_jsonl(out / "train.jsonl", planted_records(160, n_classes=4, seed=0))
    return out


def _args(out, tiny_models, planted, *extra):
    return [
        f"output_dir={out}",
        f"encoder.name_or_path={tiny_models['genos']}",
        f"llm.name_or_path={tiny_models['qwen3']}",
        f"data.train={planted / 'train.jsonl'}",
        "data.val=",
        "lora.dropout=0.1",
        "train.micro_batch_size=4",
        "train.log_every=1",
        BRIEF_STAGE1,
        *extra,
    ]


def _dnallm(*args, cwd, **kwargs):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    return subprocess.Popen(
        [sys.executable, "-m", "dnallm", *map(str, args)],
        cwd=cwd,
        env={**env, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def _logged(run: Path) -> list[dict]:
    path = run / "train_log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")] if path.is_file() else []


def _signal_after(proc, run: Path, step: int, sig) -> tuple[str, str]:
    """Send ``sig`` once the run has logged ``step``; -> (stdout, stderr) after it ends."""
    deadline = time.monotonic() + 300
    while not any(e["step"] >= step for e in _logged(run)):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(sig)
    return proc.communicate(timeout=300)


def _same_tensors(a: Path, b: Path) -> None:
    x, y = load_file(a / "trainable.safetensors"), load_file(b / "trainable.safetensors")
    assert x.keys() == y.keys()
    for k in x:
        assert torch.equal(x[k], y[k]), k


# ---- output_dir reuse -------------------------------------------------------------------------


def test_a_fresh_run_refuses_another_runs_output_dir(tmp_path, tiny_models, planted, single_process_env):
    run = tmp_path / "run"
    train(load_recipe(TINY, _args(run, tiny_models, planted, "train.max_steps=3", "train.save_every=0")))
    old = sorted(p.name for p in run.iterdir())
    assert "checkpoint-3" in old

    proc = _dnallm(
        "train",
        TINY,
        *_args(run, tiny_models, planted, "train.max_steps=2", "train.save_every=1", "train.keep_last=1"),
        cwd=tmp_path,
    )
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("dnallm train: error: output_dir") and "checkpoint-3" in line
    assert (
        "train.resume_from_checkpoint=auto" in line
        and "output_dir=" in line
        and "train.overwrite_output_dir=true" in line
    )
    assert sorted(p.name for p in run.iterdir()) == old  # nothing written, nothing removed

    # Asked for explicitly: the other run's checkpoints and log make way; this run keeps its own last one.
    proc = _dnallm(
        "train",
        TINY,
        *_args(
            run,
            tiny_models,
            planted,
            "train.max_steps=2",
            "train.save_every=1",
            "train.keep_last=1",
            "train.overwrite_output_dir=true",
        ),
        cwd=tmp_path,
    )
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-2"]
    assert [e["step"] for e in _logged(run)] == [1, 2]


def _checkpoint_writer(run: Path, tiny_models, planted):
    """save(step, **kwargs): ``save_checkpoint`` of an untrained tiny model into ``run``."""
    from dnallm.train.build import build_encoder, build_model
    from dnallm.train.checkpoint import save_checkpoint
    from dnallm.train.engine import TorchEngine
    from dnallm.train.finetune import FineTune

    recipe = load_recipe(TINY, _args(run, tiny_models, planted))
    model, _ = build_model(recipe, "cpu", build_encoder(recipe, "cpu"))
    engine = TorchEngine(
        model,
        [{"params": [p for p in model.parameters() if p.requires_grad]}],
        lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0),
        grad_accum=1,
        max_grad_norm=1.0,
        device="cpu",
    )
    objective = FineTune(recipe)
    return lambda step, **kwargs: save_checkpoint(run, step, engine, objective, recipe.to_yaml(), {}, **kwargs)


def test_pruning_leaves_other_runs_checkpoints_alone(tmp_path, tiny_models, planted):
    """A run prunes only what it wrote, even when another run's checkpoint sits beside its own."""
    run = tmp_path / "run"
    save = _checkpoint_writer(run, tiny_models, planted)
    other = save(200, run_id="another")
    mine = [save(step, keep_last=1, run_id="this") for step in (2, 4)]
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-200", "checkpoint-4"]
    assert other.is_dir() and mine[-1].is_dir()
    # Resuming this run with another run's checkpoint beside it is refused too: the two would mix.
    with pytest.raises(RecipeError, match="holds checkpoints of another run \\(checkpoint-200\\)"):
        train(
            load_recipe(
                TINY, _args(run, tiny_models, planted, "train.max_steps=6", f"train.resume_from_checkpoint={mine[-1]}")
            )
        )


def test_a_checkpoint_of_a_layout_without_run_ids_is_named_not_resumed(tmp_path, tiny_models, planted):
    """Run ids and random-number state are in every readable checkpoint (README, Checkpoints)."""
    from dnallm.hub import CheckpointError

    run = tmp_path / "run"
    old = _checkpoint_writer(run, tiny_models, planted)(2, run_id="old")
    state = read_state(old)
    del state["run_id"]
    (old / "trainer_state.json").write_text(json.dumps(state))
    resume = load_recipe(TINY, _args(run, tiny_models, planted, f"train.resume_from_checkpoint={old}"))
    with pytest.raises(CheckpointError, match=f"{old}: trainer_state.json names no run.*move this one out of {run}"):
        train(resume)


# ---- recipe values ----------------------------------------------------------------------------


def test_a_bad_value_is_named_before_any_model_loads(tmp_path):
    # The recipe's model paths do not exist here: an error about them would mean models were loading.
    proc = _dnallm("train", TINY, f"output_dir={tmp_path / 'run'}", "train.micro_batch_size=0", cwd=tmp_path)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2 and err.strip().splitlines() == [
        "dnallm train: error: recipe key 'train.micro_batch_size' must be >= 1, got 0"
    ]
    assert not (tmp_path / "run").exists()


# ---- exact resume -------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["", "zero2"])
def test_resume_with_dropout_is_bit_identical(stage, tmp_path, tiny_models, planted, single_process_env):
    extra = ["train.max_steps=6", "train.save_every=3"] + (
        [f"deepspeed={REPO}/recipes/deepspeed/{stage}.json"] if stage else []
    )
    whole = train(load_recipe(TINY, _args(tmp_path / "a", tiny_models, planted, *extra)))
    train(load_recipe(TINY, _args(tmp_path / "b", tiny_models, planted, *extra)), stop_after=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = train(
            load_recipe(TINY, _args(tmp_path / "b", tiny_models, planted, *extra, "train.resume_from_checkpoint=auto"))
        )
    assert not [w for w in caught if "lr_scheduler" in str(w.message)], [str(w.message) for w in caught]
    _same_tensors(whole, resumed)
    assert [e["train/loss"] for e in _logged(tmp_path / "a")] == [e["train/loss"] for e in _logged(tmp_path / "b")]


@pytest.mark.parametrize("stage", ["", "zero3_offload"])
def test_sigterm_then_kill9_then_resume_is_bit_identical(stage, tmp_path, tiny_models, planted, single_process_env):
    """SIGTERM saves at the next step boundary and exits 143; kill -9 loses the steps since the last
    checkpoint; each resume continues exactly, and the log holds every step once."""
    extra = ["train.max_steps=24", "train.save_every=5", "train.keep_last=1"] + (
        [f"deepspeed={REPO}/recipes/deepspeed/{stage}.json"] if stage else []
    )
    # The uninterrupted run goes through the command line too: same process settings, same numbers.
    straight = _dnallm("train", TINY, *_args(tmp_path / "a", tiny_models, planted, *extra), cwd=tmp_path)
    run = tmp_path / "b"

    _, err = _signal_after(
        _dnallm("train", TINY, *_args(run, tiny_models, planted, *extra), cwd=tmp_path), run, 7, signal.SIGTERM
    )
    saved = read_state(next(run.glob("checkpoint-*")))["step"]
    assert saved >= 7  # the step boundary after the signal
    assert (
        f"stopped by SIGTERM after step {saved}" in err
        and "train.resume_from_checkpoint=auto" in err
        and "Traceback" not in err
    )
    proc = _dnallm(
        "train", TINY, *_args(run, tiny_models, planted, *extra, "train.resume_from_checkpoint=auto"), cwd=tmp_path
    )
    _signal_after(proc, run, 17, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert (
        max(e["step"] for e in _logged(run)) > read_state(next(run.glob("checkpoint-*")))["step"]
    )  # steps past the checkpoint

    proc = _dnallm(
        "train", TINY, *_args(run, tiny_models, planted, *extra, "train.resume_from_checkpoint=auto"), cwd=tmp_path
    )
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert "lr_scheduler" not in err
    assert [e["step"] for e in _logged(run)] == list(range(1, 25))
    _, err = straight.communicate(timeout=600)
    assert straight.returncode == 0, err
    _same_tensors(tmp_path / "a" / "checkpoint-24", run / "checkpoint-24")
    assert [e["train/loss"] for e in _logged(tmp_path / "a")] == [e["train/loss"] for e in _logged(run)]
