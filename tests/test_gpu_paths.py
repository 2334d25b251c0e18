"""Paths a first GPU run takes, checked where the CPU can reproduce them: ZeRO-Offload's
compiled optimizer, the cost of gathering optimizer moments at a save, DeepSpeed's gradient
accumulation dtype, and what ZeRO-3 keeps off the device."""

import json
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
    with pytest.raises(RuntimeError, match=r"CPU Adam op, which could not be built here \(Ninja is required.*pip install ninja.*zero3\.json"):
        require_cpu_adam()


@pytest.mark.parametrize("config", ["zero2.json", "zero3.json", "zero3_offload.json"])
def test_deepspeed_recipes_accumulate_gradients_in_fp32(config):
    """Under bf16, micro-batch gradients are summed over 8 (KEGG) to 32 (coverage) micro-steps."""
    cfg = json.loads((REPO / "recipes/deepspeed" / config).read_text())
    assert cfg["data_types"]["grad_accum_dtype"] == "fp32"


def test_a_save_links_the_optimizer_moments_once_not_once_per_tensor(tmp_path, tiny_models, single_process_env, monkeypatch):
    from dnallm.train.engine import DeepSpeedEngine

    calls = []
    real = DeepSpeedEngine._link_moments  # each call relinks every parameter's view into the flat moments
    monkeypatch.setattr(DeepSpeedEngine, "_link_moments", lambda self, create=False: calls.append(create) or real(self, create))
    write_jsonl(tmp_path / "train.jsonl", planted_records(16, n_classes=4, seed=0))
    recipe = load_recipe(REPO / "recipes/kegg/tiny.yaml", [
        f"output_dir={tmp_path / 'run'}", f"encoder.name_or_path={tiny_models['genos']}", f"llm.name_or_path={tiny_models['qwen3']}",
        f"data.train={tmp_path / 'train.jsonl'}", "data.val=", "train.max_steps=2", "train.save_every=0",
        f"deepspeed={REPO}/recipes/deepspeed/zero2.json"])
    checkpoint = train(recipe)
    from safetensors.torch import load_file

    n_tensors = len(load_file(checkpoint / "trainable.safetensors"))
    assert n_tensors > 10 and len(load_file(checkpoint / "optimizer.safetensors")) == 2 * n_tensors
    assert calls == [False], calls  # one save, one link (it was one per tensor)


def _peak_rss_above_start(fn):
    import threading

    import psutil

    proc, stop = psutil.Process(), threading.Event()
    start = peak = proc.memory_info().rss

    def sample():
        nonlocal peak
        while not stop.wait(0.002):
            peak = max(peak, proc.memory_info().rss)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        out = fn()
    finally:
        stop.set()
        thread.join()
    return out, peak - start


def test_eval_reads_token_probabilities_without_keeping_every_steps_scores(tiny_qwen3_real_tokenizer):
    """Same log-probabilities as generation's output_scores, without its (steps x batch x
    151,936) scores: measured on the CPU, the stored scores alone are ~155 MB here."""
    import torch
    from transformers import AutoModelForCausalLM, LogitsProcessorList

    from dnallm.eval.answers import ChosenTokenLogps

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen3_real_tokenizer).eval()
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
    got, ours = _peak_rss_above_start(with_processor)
    want, theirs = _peak_rss_above_start(with_output_scores)
    assert got.shape == (4, 64)
    torch.testing.assert_close(got, want)
    assert theirs - ours > 100 * 2**20, (ours / 2**20, theirs / 2**20)
