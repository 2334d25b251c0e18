"""Paths a first GPU run takes, checked where the CPU can reproduce them: ZeRO-Offload's
compiled optimizer, the cost of gathering optimizer moments at a save, DeepSpeed's gradient
accumulation dtype, and what ZeRO-3 keeps off the device."""

import json
import os
from pathlib import Path

import pytest

from dnallm.config import load_recipe
from dnallm.data.kegg import write_jsonl
from dnallm.data.synthetic import planted_records
from dnallm.train.engine import require_cpu_adam
from dnallm.train.finetune import train

REPO = Path(__file__).resolve().parent.parent


def test_offload_without_a_buildable_cpu_adam_fails_with_one_line_naming_the_fix(monkeypatch):
    from deepspeed.ops.op_builder import CPUAdamBuilder

    def no_compiler(self, verbose=True):
        raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.setattr(CPUAdamBuilder, "load", no_compiler)
    with pytest.raises(
        RuntimeError,
        match=r"CPU Adam op, which could not be built here \(Ninja is required.*pip install ninja.*zero3\.json",
    ):
        require_cpu_adam()


@pytest.mark.parametrize("config", ["zero2.json", "zero3.json", "zero3_offload.json"])
def test_deepspeed_recipes_accumulate_gradients_in_fp32(config):
    """Under bf16, micro-batch gradients are summed over 8 (KEGG) to 32 (coverage) micro-steps."""
    cfg = json.loads((REPO / "recipes/deepspeed" / config).read_text())
    assert cfg["data_types"]["grad_accum_dtype"] == "fp32"


def _bf16_config(tmp_path, stage: int) -> Path:
    """A recipe JSON as on a GPU (bf16 on), which DeepSpeed also runs on the CPU."""
    cfg = json.loads((REPO / "recipes/deepspeed" / f"zero{stage}.json").read_text())
    cfg["bf16"] = {"enabled": True}
    path = tmp_path / f"zero{stage}_bf16.json"
    path.write_text(json.dumps(cfg))
    return path


def _kegg_recipe(tmp_path, tiny_models, *extra):
    write_jsonl(tmp_path / "train.jsonl", planted_records(16, n_classes=4, seed=0))
    return load_recipe(
        REPO / "recipes/kegg/tiny.yaml",
        [
            f"output_dir={tmp_path / 'run'}",
            f"encoder.name_or_path={tiny_models['genos']}",
            f"llm.name_or_path={tiny_models['qwen3']}",
            f"data.train={tmp_path / 'train.jsonl'}",
            "data.val=",
            "train.save_every=0",
            *extra,
        ],
    )


@pytest.mark.parametrize("stage", [2, 3], ids=["zero2", "zero3"])
def test_bf16_resume_restores_the_fp32_master_weights_exactly(tmp_path, tiny_models, single_process_env, stage):
    """Loaded before deepspeed.initialize, trained weights pass through the bf16 module copy the
    master is built from; the engine then writes them into the master exactly."""
    import torch
    from safetensors.torch import load_file

    from dnallm.train.checkpoint import load_trainable
    from dnallm.train.engine import build_engine
    from dnallm.train.finetune import FineTune

    recipe = _kegg_recipe(tmp_path, tiny_models, "train.max_steps=3", f"deepspeed={_bf16_config(tmp_path, stage)}")
    checkpoint = train(recipe)
    saved = load_file(checkpoint / "trainable.safetensors")
    objective = FineTune(recipe)
    model = objective.setup("cpu", 0, 1)
    load_trainable(model, checkpoint)  # what the trainer does before the engine exists
    engine = build_engine(recipe, model, objective.param_groups(model), total_steps=3, grad_accum=1, device="cpu")
    assert next(p for p in engine.module.parameters() if p.requires_grad).dtype == torch.bfloat16
    assert engine.engine.optimizer.gradient_accumulation_dtype == torch.float32
    params = {n: p for n, p in engine.module.named_parameters() if p.requires_grad}
    rounded = sum(not torch.equal(engine.full_param(params[n]), v) for n, v in saved.items())
    assert rounded > 0  # the low bits were gone before
    engine.load_master_weights(saved)
    assert all(torch.equal(engine.full_param(params[n]), v) for n, v in saved.items())
    # A save gathers on every rank, and only rank 0 (which writes) keeps a host copy.
    engine.rank = 1
    p = next(iter(params.values()))
    assert engine.full_param(p).numel() == 0 and engine.full_moments(p) is None


def test_a_save_links_the_optimizer_moments_once_not_once_per_tensor(
    tmp_path, tiny_models, single_process_env, monkeypatch
):
    from dnallm.train.engine import DeepSpeedEngine

    calls = []
    real = DeepSpeedEngine._link_moments  # each call relinks every parameter's view into the flat moments
    monkeypatch.setattr(
        DeepSpeedEngine, "_link_moments", lambda self, create=False: calls.append(create) or real(self, create)
    )
    write_jsonl(tmp_path / "train.jsonl", planted_records(16, n_classes=4, seed=0))
    recipe = load_recipe(
        REPO / "recipes/kegg/tiny.yaml",
        [
            f"output_dir={tmp_path / 'run'}",
            f"encoder.name_or_path={tiny_models['genos']}",
            f"llm.name_or_path={tiny_models['qwen3']}",
            f"data.train={tmp_path / 'train.jsonl'}",
            "data.val=",
            "train.max_steps=2",
            "train.save_every=0",
            f"deepspeed={REPO}/recipes/deepspeed/zero2.json",
        ],
    )
    checkpoint = train(recipe)
    from safetensors.torch import load_file

    n_tensors = len(load_file(checkpoint / "trainable.safetensors"))
    assert n_tensors > 10 and len(load_file(checkpoint / "optimizer.safetensors")) == 2 * n_tensors
    assert calls == [False], calls  # one save, one link (it was one per tensor)


_GENERATION_MEMORY = """
import json, sys
import torch
from transformers import AutoModelForCausalLM, LogitsProcessorList
from dnallm.fusion.generate import ChosenTokenLogps
from dnallm.memory import PeakRSS

torch.manual_seed(0)
model = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
ids = torch.randint(0, 1000, (4, 12))
kwargs = dict(max_new_tokens=64, min_new_tokens=64, do_sample=False, pad_token_id=0)

def with_processor():
    chosen = ChosenTokenLogps()
    with torch.no_grad():
        out = model.generate(ids, logits_processor=LogitsProcessorList([chosen]), **kwargs)
    return chosen.result(out[:, ids.shape[1]:])

def with_output_scores():
    with torch.no_grad():
        out = model.generate(ids, output_scores=True, return_dict_in_generate=True, **kwargs)
    new = out.sequences[:, ids.shape[1]:]
    return torch.stack([s.float().log_softmax(-1).gather(-1, new[:, i : i + 1]).squeeze(-1) for i, s in enumerate(out.scores)], 1)

with_processor()  # warm up allocations once
with PeakRSS(interval=0.002) as ours:
    got = with_processor()
with PeakRSS(interval=0.002) as theirs:
    want = with_output_scores()
print(json.dumps({"got": got.tolist(), "want": want.tolist(), "ours": ours.anon_rise, "theirs": theirs.anon_rise}))
"""


def test_eval_reads_token_probabilities_without_keeping_every_steps_scores(tiny_qwen3_real_tokenizer):
    """Same log-probabilities as generation's output_scores, without its (steps x batch x
    151,936) scores: the stored scores alone are ~155 MB here. Measured in a fresh process, so
    memory freed by earlier tests cannot hide the rise."""
    import subprocess
    import sys

    import torch

    proc = subprocess.run(
        [sys.executable, "-c", _GENERATION_MEMORY, str(tiny_qwen3_real_tokenizer)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    got, want = torch.tensor(out["got"]), torch.tensor(out["want"])
    assert got.shape == (4, 64)
    torch.testing.assert_close(got, want)
    assert out["theirs"] - out["ours"] > 100 * 2**20, (out["ours"] / 2**20, out["theirs"] / 2**20)


def test_coverage_head_batchnorm_runs_in_fp32_under_deepspeed_bf16(single_process_env):
    """DeepSpeed's bf16 casts the head's parameters, not its running statistics: the BatchNorm
    computes in fp32, keeps fp32 statistics that move, and equals nn.BatchNorm1d in fp32."""
    import torch

    from dnallm.encoders.coverage import BatchNormFP32, CoverageModel
    from dnallm.tiny import genos_config
    from dnallm.train.engine import DeepSpeedEngine

    torch.manual_seed(0)
    x = torch.randn(3, 8, 20)
    ours, ref = BatchNormFP32(8), torch.nn.BatchNorm1d(8)
    torch.testing.assert_close(ours(x), ref(x))
    torch.testing.assert_close(ours.running_var, ref.running_var)
    ours.eval(), ref.eval()
    torch.testing.assert_close(ours(x), ref(x))

    model = CoverageModel.from_config(genos_config("tiny"), 4, channels=[16, 8], kernel_size=5, dropout=0.0)
    config = {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "train_batch_size": 1,
        "bf16": {"enabled": True},
        "zero_optimization": {"stage": 2},
    }
    engine = DeepSpeedEngine(
        model,
        [{"params": list(model.parameters())}],
        lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0),
        config=config,
        device="cpu",
    )
    bn = engine.module.head.blocks[0][1]
    assert bn.weight.dtype == torch.bfloat16 and bn.running_mean.dtype == torch.float32
    before = bn.running_mean.clone()
    out = engine(input_ids=torch.randint(0, 4, (1, 64)), targets=torch.rand(1, 64, 4))
    engine.backward(out.loss)
    engine.step()
    assert (
        torch.isfinite(out.loss)
        and bn.running_mean.dtype == torch.float32
        and not torch.equal(bn.running_mean, before)
    )


def test_bench_mfu_counts_a_tied_lm_head():
    """Qwen3-1.7B and 4B tie the LM head to the input table: the head's FLOPs still count."""
    import importlib.util

    from transformers import AutoModelForCausalLM

    from dnallm.tiny import qwen3_config

    spec = importlib.util.spec_from_file_location("bench_train", REPO / "scripts" / "bench_train.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    llm = AutoModelForCausalLM.from_config(qwen3_config("tiny", 1000, 0, 1))
    assert llm.get_output_embeddings().weight is llm.get_input_embeddings().weight
    trunk, head = bench.trunk_and_head_params(llm)
    assert head == 1000 * 64
    assert trunk == sum(p.numel() for p in llm.parameters()) - 1000 * 64


@pytest.mark.parametrize("config", ["zero3.json", "zero3_offload.json", "zero3 bf16"])
def test_zero3_partitions_the_model_from_host_memory_and_never_moves_it_whole(
    tmp_path, tiny_models, single_process_env, monkeypatch, config
):
    """DeepSpeed moves a module whole to the device unless its parameters are already ZeRO-3
    partitioned, which would put the whole model on every GPU before offload_param could act."""
    import torch

    from dnallm.fusion.model import DNAFusionLM
    from dnallm.train.engine import build_engine
    from dnallm.train.finetune import FineTune

    if config == "zero3_offload.json":
        require_cpu_adam()
    path = _bf16_config(tmp_path, 3) if config == "zero3 bf16" else REPO / "recipes/deepspeed" / config
    recipe = _kegg_recipe(tmp_path, tiny_models, "train.max_steps=2", f"deepspeed={path}")
    moved = []
    real_to = torch.nn.Module.to

    def to(self, *args, **kwargs):
        if isinstance(self, DNAFusionLM):
            moved.append((args, kwargs))
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "to", to)
    objective = FineTune(recipe)
    model = objective.setup("cpu", 0, 1)
    engine = build_engine(
        recipe,
        model,
        objective.param_groups(model),
        total_steps=2,
        grad_accum=1,
        device="cpu",
        optimizer=objective.optimizer,
    )
    assert moved == []
    params = list(engine.module.parameters())
    assert params and all(hasattr(p, "ds_id") for p in params)
    assert all(p.ds_tensor.device.type == "cpu" for p in params)
    if config == "zero3 bf16":
        assert all(p.ds_tensor.dtype == torch.bfloat16 for p in params)
    # and it trains: one step's loss is finite and the trainable weights move
    batch = objective.processor.train_batch(objective.train_rows[:2])
    before = {n: engine.full_param(p).clone() for n, p in engine.module.named_parameters() if p.requires_grad}
    loss, _ = objective.train_step(engine, batch)
    engine.backward(loss)
    engine.step()
    assert torch.isfinite(loss)
    after = {n: engine.full_param(p) for n, p in engine.module.named_parameters() if p.requires_grad}
    assert any(not torch.equal(before[n], after[n]) for n in before)
