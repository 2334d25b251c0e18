"""Tiny end-to-end training on CPU: plain PyTorch and DeepSpeed ZeRO-2 / ZeRO-3."""

from pathlib import Path

import json

import pytest
import torch
from safetensors.torch import load_file

from tiny_recipes import BRIEF_STAGE1, tiny_kegg_recipe
from dnallm.data.kegg import write_jsonl
from dnallm.data.synthetic import planted_records
from dnallm.eval.kegg import evaluate
from dnallm.fusion import DNAFusionConfig, DNAFusionLM
from dnallm.fusion.processor import dna_inputs
from dnallm.train.build import build_encoder, build_model, build_processor
from dnallm.train.checkpoint import read_state, save_checkpoint
from dnallm.train.engine import TorchEngine
from dnallm.data.kegg import load_examples
from dnallm.train.finetune import FineTune, train, validation_loss

REPO = Path(__file__).resolve().parent.parent

N_CLASSES = 4


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    out = tmp_path_factory.mktemp("planted")
    records = planted_records(540, n_classes=N_CLASSES, seed=0)
    write_jsonl(out / "train.jsonl", records[:480])
    write_jsonl(out / "test.jsonl", records[480:])
    return out


def _recipe(tmp_path, tiny_models, planted, *extra):
    return tiny_kegg_recipe(tiny_models, tmp_path / "run", planted / "train.jsonl", "train.log_every=10", *extra)


def _losses(run_dir):
    return [
        json.loads(line)["train/loss"]
        for line in (run_dir / "train_log.jsonl").read_text().splitlines()
        if "train/loss" in line
    ]


@pytest.mark.parametrize("stage, packing", [("zero2", False), ("zero3", True)])
def test_deepspeed_run_learns_planted_signal(stage, packing, tmp_path, tiny_models, planted, single_process_env):
    recipe = _recipe(
        tmp_path,
        tiny_models,
        planted,
        "train.max_steps=150",
        "train.save_every=0",
        f"deepspeed={REPO}/recipes/deepspeed/{stage}.json",
        f"train.packing={str(packing).lower()}",
    )
    checkpoint = train(recipe)
    assert checkpoint.name == "checkpoint-150"
    losses = _losses(tmp_path / "run")
    assert losses[-1] < 0.25 * losses[0], losses
    metrics = evaluate(checkpoint, planted / "test.jsonl", tmp_path / "eval")
    # four classes: chance is 25 %; the label is only in the DNA (read from about step 120: 48 % at 100, 100 % at 150)
    assert metrics["accuracy"] >= 0.8, metrics
    assert (tmp_path / "eval" / "predictions.csv").is_file()


def test_checkpoint_holds_only_what_trained(tmp_path, tiny_models, planted, single_process_env):
    checkpoint = train(
        _recipe(tmp_path, tiny_models, planted, "train.max_steps=2", "train.save_every=0", BRIEF_STAGE1)
    )
    values = load_file(checkpoint / "trainable.safetensors")
    assert values and all(
        k.startswith(("projector.", "summary.", "dna_boundary", "llm.")) and ("lora_" in k or not k.startswith("llm."))
        for k in values
    )
    # Of the LLM only the adapters: far smaller than the base model (the projector and the
    # variant summary are new modules, as large as the tiny LLM itself).
    base_bytes = sum(p.stat().st_size for p in tiny_models["qwen3"].glob("*.safetensors"))
    assert sum(v.numel() * v.element_size() for k, v in values.items() if k.startswith("llm.")) < base_bytes / 4
    assert (checkpoint / "adapter" / "adapter_model.safetensors").is_file()
    assert read_state(checkpoint)["step"] == 2
    assert not list(checkpoint.rglob("*.bin")) and not list(checkpoint.rglob("*.pt"))


def test_save_then_load_gives_identical_logits(tmp_path, tiny_models, planted):
    recipe = _recipe(tmp_path, tiny_models, planted)
    encoder = build_encoder(recipe, "cpu")
    model, tokenizer = build_model(recipe, "cpu", encoder)
    processor = build_processor(recipe, tokenizer, encoder)
    torch.manual_seed(1)
    with torch.no_grad():  # stand-in for training: move every trainable tensor
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    engine = TorchEngine(
        model,
        [{"params": [p for p in model.parameters() if p.requires_grad]}],
        lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0),
        grad_accum=1,
        max_grad_norm=1.0,
        device="cpu",
    )
    checkpoint = save_checkpoint(tmp_path / "run", 7, engine, FineTune(recipe), recipe.to_yaml(), {})

    example = {"question": "q", "answer": "a", "reasoning": "", "ref_window": "ACGT" * 8, "var_window": "ACGA" * 8}
    batch = processor.collate([processor(example)])

    def logits(m, enc):
        dna = dna_inputs(enc, batch["dna"], 8)
        with torch.no_grad():
            return m.eval()(batch["input_ids"], batch["attention_mask"], **dna).logits

    pretrained = DNAFusionLM.from_pretrained(checkpoint, "cpu")
    encoder2, loaded = pretrained.dna_source, pretrained.model
    # the model is rebuilt from the description saved beside its weights
    assert DNAFusionConfig.load(checkpoint) == loaded.config == DNAFusionConfig.from_recipe(recipe)
    assert torch.equal(logits(model, encoder), logits(loaded, encoder2))
    fresh, _ = build_model(recipe, "cpu", encoder)
    assert not torch.allclose(logits(fresh, encoder), logits(loaded, encoder2))


def test_frozen_encoder_is_unchanged_by_training_steps(tmp_path, tiny_models, planted):
    from dnallm.data.kegg import load_examples
    from dnallm.train.finetune import step_batch

    recipe = _recipe(tmp_path, tiny_models, planted)
    encoder = build_encoder(recipe, "cpu")
    before = {n: p.clone() for n, p in encoder.named_parameters()}
    model, tokenizer = build_model(recipe, "cpu", encoder)
    processor = build_processor(recipe, tokenizer, encoder)
    rows = [processor(ex) for ex in load_examples(planted / "train.jsonl", recipe.data.dna_window).select(range(8))]
    engine = TorchEngine(
        model,
        [{"params": [p for p in model.parameters() if p.requires_grad]}],
        lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0),
        grad_accum=1,
        max_grad_norm=1.0,
        device="cpu",
    )
    for _ in range(3):
        loss = step_batch(engine, encoder, processor.collate(rows), "cpu", 8).loss
        engine.backward(loss)
        engine.step()
    for name, p in encoder.named_parameters():
        assert torch.equal(p, before[name]), name
        assert p.grad is None and not p.requires_grad


@pytest.mark.parametrize("stage", ["", "zero3"])
def test_resume_after_interruption_continues_from_saved_step(
    stage, tmp_path, tiny_models, planted, single_process_env
):
    extra = ["train.max_steps=8", "train.save_every=4", "train.log_every=1", BRIEF_STAGE1] + (
        [f"deepspeed={REPO}/recipes/deepspeed/{stage}.json"] if stage else []
    )
    whole = train(_recipe(tmp_path / "a", tiny_models, planted, *extra))

    crashed = train(_recipe(tmp_path / "b", tiny_models, planted, *extra), stop_after=4)
    assert crashed.name == "checkpoint-4"
    # a crash while writing the next checkpoint leaves only a hidden temporary directory
    (tmp_path / "b" / "run" / ".checkpoint-8.abc.tmp").mkdir()
    resumed = train(_recipe(tmp_path / "b", tiny_models, planted, *extra, "train.resume_from_checkpoint=auto"))
    assert resumed.name == "checkpoint-8"

    logged_steps = [
        json.loads(line)["step"] for line in (tmp_path / "b" / "run" / "train_log.jsonl").read_text().splitlines()
    ]
    assert logged_steps == list(range(1, 9))  # steps 5..8 follow 1..4, none repeated
    a, b = load_file(whole / "trainable.safetensors"), load_file(resumed / "trainable.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_processes_under_the_deepspeed_launcher(tmp_path, tiny_models, planted):
    """Every rank must take part in validation and checkpoints; only rank 0 writes. Five
    validation rows at one per batch give rank 0 three batches and rank 1 two: under ZeRO-3
    every forward gathers from both ranks, so rank 1 must run a padding batch, not hang."""
    import os
    import subprocess
    import sys

    val = tmp_path / "val.jsonl"
    val.write_text("".join((planted / "test.jsonl").read_text().splitlines(keepends=True)[:5]))
    args = [
        sys.executable,
        "-m",
        "deepspeed.launcher.runner",
        "--num_gpus",
        "2",
        "--master_port",
        "29655",
        "--module",
        "dnallm",
        "train",
        str(REPO / "recipes/kegg/tiny.yaml"),
        f"deepspeed={REPO}/recipes/deepspeed/zero3.json",
        f"output_dir={tmp_path / 'run'}",
        f"encoder.name_or_path={tiny_models['genos']}",
        f"llm.name_or_path={tiny_models['qwen3']}",
        f"data.train={planted / 'train.jsonl'}",
        f"data.val={val}",
        "eval.batch_size=1",
        "train.max_steps=4",
        "train.save_every=2",
        "train.log_every=1",
        BRIEF_STAGE1,
    ]
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    r = subprocess.run(
        args, capture_output=True, text=True, timeout=600, env={**env, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run = tmp_path / "run"
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    history = read_state(run / "checkpoint-4")["history"]
    assert [h["step"] for h in history if "val_loss" in h] == [2, 4]
    # the padding batch counts zero: the loss is the single-process loss of the five rows
    loaded = DNAFusionLM.from_pretrained(run / "checkpoint-4", "cpu")
    recipe, encoder, model, processor = loaded.recipe, loaded.dna_source, loaded.model, loaded.processor
    engine = TorchEngine(
        model,
        [{"params": [p for p in model.parameters() if p.requires_grad]}],
        lambda opt: None,
        grad_accum=1,
        max_grad_norm=0.0,
        device="cpu",
    )
    rows = [processor(ex) for ex in load_examples(val, recipe.data.dna_window)]
    recipe.eval.batch_size = 1
    want = validation_loss(engine, encoder, rows, processor, recipe, "cpu")
    assert abs(history[-1]["val_loss"] - want) < 1e-4, (history[-1], want)
    assert [
        json.loads(line)["step"] for line in (run / "train_log.jsonl").read_text().splitlines() if "train/loss" in line
    ] == [1, 2, 3, 4]


def test_gradient_checkpointing_gives_the_same_gradients(tmp_path, tiny_models, planted):
    from dnallm.data.kegg import load_examples

    grads = []
    for flag in ("false", "true", "2"):
        recipe = _recipe(tmp_path, tiny_models, planted, f"llm.gradient_checkpointing={flag}")
        encoder = build_encoder(recipe, "cpu")
        torch.manual_seed(0)
        model, tokenizer = build_model(recipe, "cpu", encoder)
        processor = build_processor(recipe, tokenizer, encoder)
        batch = processor.collate(
            [processor(ex) for ex in load_examples(planted / "train.jsonl", recipe.data.dna_window).select(range(4))]
        )
        model.train()
        loss = model(
            batch["input_ids"], batch["attention_mask"], **dna_inputs(encoder, batch["dna"], 8), labels=batch["labels"]
        ).loss
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
        layers = model.llm.base_model.model.model.layers
        assert [layer.gradient_checkpointing for layer in layers] == {
            "false": [False, False],
            "true": [True, True],
            "2": [True, False],
        }[flag]
    for name in grads[0]:
        for other in grads[1:]:
            torch.testing.assert_close(other[name], grads[0][name], msg=name)
