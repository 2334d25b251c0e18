"""The GPU check script's CPU mode runs every check end to end, so the GPU run is not its first."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_gpu_check_cpu_mode_runs_every_check_and_prints_json_and_a_table():
    proc = subprocess.run(
        ["bash", "scripts/gpu_check.sh", "--cpu", "--jobs", "2"],  # mostly start-up: two at a time
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        # the script's `python` is this interpreter (its environment), activated or not
        env={
            **os.environ,
            "DS_ACCELERATOR": "cpu",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        },
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report_text, table = proc.stdout.split("\n\n| check |")
    report = json.loads(report_text)
    assert set(report["checks"]) == {
        "packed_attention",
        "kegg_tiny",
        "encoder_load_tiny",
        "zero3_offload_start_tiny",
        "coverage_tiny",
    }
    assert report["checks"]["packed_attention"]["report"]["kernel"] == "per-sample"  # varlen is CUDA-only
    zero3 = report["checks"]["zero3_offload_start_tiny"]["report"]
    assert zero3["partitioned"] and zero3["shards_on"] == ["cpu"] and zero3["loss"] > 0
    load = report["checks"]["encoder_load_tiny"]["report"]
    assert load["weights_on"] == "cpu" and load["embeddings"] == [1, 256, 64]
    assert all(c["ok"] for c in report["checks"].values())
    kegg = report["checks"]["kegg_tiny"]["report"]
    # the same two modes before and after the throughput defaults (gpu_check's variants)
    assert set(kegg["modes"]) == {
        f"{variant}/{mode}"
        for variant in ("before", "after")
        for mode in ("a_live_k1_logits_reply", "c_cache_k8_logits_reply")
    }
    for mode in kegg["modes"].values():
        assert (
            mode["packed"] and mode["padding_fraction"] == 0 and mode["samples_per_s"] > 0 and mode["peak_rss_gib"] > 0
        )
    assert kegg["attention"]["implementation"] == "dnallm_packed" and kegg["llm_dtype"] == "float32"
    coverage = report["checks"]["coverage_tiny"]["report"]
    assert coverage["gradient_checkpointing"] is True and coverage["train"]["windows_per_s"] > 0
    assert table.count("\n| kegg_tiny |") == 4 and "| coverage_tiny | train" in table and "PROBLEM" not in table
    assert (
        report["problems"] == []
        and coverage["predict"]["trunk_dtype"] == coverage["train"]["trunk_dtype"] == "float32"
    )


def test_gpu_check_flags_a_gpu_report_whose_packed_rows_loop_or_whose_kernels_disagree():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    good = {
        "kernel": "varlen",
        "per_sample_ms": 3.0,
        "varlen_ms": 1.0,
        "dtype": "bfloat16",
        "max_abs_diff_out": 0.004,
        "scale_out": 3.0,
        "max_abs_diff_grad": 1e-7,
        "scale_grad": 1e-5,
    }
    assert gpu_check.problems({"attn": {"ok": True, "report": good}}, cpu=False) == []
    looped = gpu_check.problems({"attn": {"ok": True, "report": {**good, "kernel": "per-sample"}}}, cpu=False)
    assert len(looped) == 1 and "per sample" in looped[0]
    wrong = gpu_check.problems({"attn": {"ok": True, "report": {**good, "max_abs_diff_grad": 1e-5}}}, cpu=False)
    assert len(wrong) == 1 and "differs" in wrong[0]


def test_gpu_check_flags_zero3_offload_that_put_the_whole_model_on_the_gpu():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    good = {
        "partitioned": True,
        "shards_on": ["cpu"],
        "model_gib_bf16": 1.6,
        "peak_cuda_at_start_gib": 0.75,
        "peak_cuda_after_step_gib": 1.1,
        "engine_start_s": 9.0,
    }
    assert gpu_check.problems({"z": {"ok": True, "report": good}}, cpu=False) == []
    whole = gpu_check.problems({"z": {"ok": True, "report": {**good, "peak_cuda_at_start_gib": 1.7}}}, cpu=False)
    assert len(whole) == 1 and "whole" in whole[0]


def test_checks_run_side_by_side_only_on_the_cpu():
    """On a GPU every check needs the device to itself: --jobs without --cpu is refused before any check runs."""
    proc = subprocess.run(
        [sys.executable, "scripts/gpu_check.py", "--jobs", "2"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and "--jobs 2: checks run side by side only with --cpu" in proc.stderr, proc.stderr
    assert "[gpu_check]" not in proc.stderr
