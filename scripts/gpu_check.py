"""The GPU check: one command that measures every training path at its published shape.

    bash scripts/gpu_check.sh          # one GPU, published shapes, random weights from configs
    bash scripts/gpu_check.sh --cpu    # the same checks at tiny shapes on the CPU (CI runs this)
    bash scripts/gpu_check.sh --cpu --jobs 2   # two checks at a time, each with half the cores

Each check runs in its own process (a clean peak-memory count) and the script prints one JSON
object, then a markdown table:
  - packed attention with Qwen3-4B's heads: one varlen flash-attention call, equal to the
    per-sample loop in outputs and gradients;
  - KEGG step, Genos-1.2B + Qwen3-4B: (a) live encoder, k = 1, and (c) embedding cache, k = 8,
    both with packed batches and reply-only logits, on DeepSpeed ZeRO-2, before (4 samples per
    micro-batch, every layer recomputed) and after (the recipe's token budget and checkpointing):
    MFU >= 0.25 after, >= 5x the tokens/s before (cache, k = 8), peak memory < 70 GiB;
  - KEGG step, Genos-10B + Qwen3-4B from the cache, k = 8, packed;
  - Genos-1.2B loaded from a saved checkpoint: straight onto the GPU, not through host memory;
  - ZeRO-3 + parameter offload at Qwen3-4B's width (12 of its 36 blocks): the engine's start-up
    takes a few tensors of GPU memory, not the whole model, and one step trains;
  - coverage fine-tune step, Genos-1.2B, 32 kb windows, gradient checkpointing on.
Reported: samples/s, tokens/s, MFU and the FLOP count it uses, peak GPU memory, the dtype and
the attention kernel. A check that fails makes the exit status non-zero after the table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

BEFORE, AFTER = "before", "after"  # the throughput check's variants (bench_train.py --variants)
OLD_CONFIGURATION = "train.max_tokens=0,llm.gradient_checkpointing=true,lora.dropout=0.05"  # with --batch 4
# What the throughput check must reach on one H100 (docs/gpu.md): MFU of the new defaults, their gain over the
# configuration before them (cache, k = 8, reply logits), and peak memory.
MIN_MFU, MIN_GAIN, MAX_PEAK_GIB = 0.25, 5.0, 70.0

GPU_CHECKS = {
    "packed_attention_qwen3_4b_heads": ["check_packed_attention.py"],
    "encoder_load_genos1.2b": ["check_encoder_load.py", "--shape", "1.2b"],
    # Before (4 samples per micro-batch, every layer recomputed) and after (the recipe: train.max_tokens, the
    # checkpointing it names), side by side in one process, on the DeepSpeed ZeRO-2 engine dnallm train runs.
    "kegg_genos1.2b_qwen3_4b": [
        "bench_train.py",
        "recipes/kegg/genos1b_qwen3_4b.yaml",
        "--shape",
        "1.2b:4b",
        "--modes",
        "a,c",
        "--packing",
        "--batch",
        "4",
        "--steps",
        "5",
        "--warmup",
        "2",
        "--engine",
        "zero2",
        "--variants",
        f"{BEFORE}:{OLD_CONFIGURATION};{AFTER}:",
    ],
    "coverage_genos1.2b_32kb": [
        "bench_coverage.py",
        "--shape",
        "1.2b",
        "--deepspeed",
        "--steps",
        "4",
        "--warmup",
        "1",
        "--predict-windows",
        "8",
        "encoder.gradient_checkpointing=true",
        "data.window=32768",
        "data.overlap=16384",
    ],
    "zero3_offload_start_qwen3_4b_width": ["check_zero3_start.py", "--shape", "1.2b:4b", "--layers", "12"],
    "kegg_genos10b_qwen3_4b_cache": [
        "bench_train.py",
        "recipes/kegg/genos10b_qwen3_4b.yaml",
        "--shape",
        "10b:4b",
        "--modes",
        "c",
        "--packing",
        "--batch",
        "4",
        "--steps",
        "5",
        "--warmup",
        "2",
    ],
}
CPU_CHECKS = {
    "packed_attention": ["check_packed_attention.py", "--repeats", "2"],
    "kegg_tiny": [
        "bench_train.py",
        "recipes/kegg/tiny.yaml",
        "data.dna_window=256",
        "--shape",
        "tiny:tiny",
        "--modes",
        "a,c",
        "--packing",
        "--batch",
        "2",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--variants",
        f"{BEFORE}:train.max_tokens=0;{AFTER}:train.max_tokens=1200",
    ],
    "encoder_load_tiny": ["check_encoder_load.py", "--shape", "tiny"],
    "zero3_offload_start_tiny": ["check_zero3_start.py"],
    "coverage_tiny": [
        "bench_coverage.py",
        "--shape",
        "tiny",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--predict-windows",
        "4",
        "encoder.gradient_checkpointing=true",
    ],
}


def run_check(name: str, argv: list[str], timeout: int, env: dict | None = None) -> dict:
    cmd = [sys.executable, str(REPO / "scripts" / argv[0]), *argv[1:]]
    print(f"[gpu_check] {name}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"no result within {timeout} s"}
    seconds = round(time.perf_counter() - start, 1)
    if proc.returncode != 0:
        print(proc.stderr[-4000:], file=sys.stderr, flush=True)  # the traceback, for the log
        return {
            "ok": False,
            "seconds": seconds,
            "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}",
        }
    return {"ok": True, "seconds": seconds, "report": json.loads(proc.stdout[proc.stdout.index("{") :])}


def problems(results: dict, cpu: bool) -> list[str]:
    """What the GPU paths must do, checked on what the runs report (on the CPU: fp32 throughout)."""
    half = "float32" if cpu else "bfloat16"
    out = []
    for name, res in results.items():
        if not res["ok"]:
            out.append(f"{name}: {res['error']}")
            continue
        rep = res["report"]
        if "kernel" in rep:  # check_packed_attention
            if rep["kernel"] != ("per-sample" if cpu else "varlen"):
                out.append(
                    f"{name}: packed rows run attention per sample ({rep['kernel']}), not one varlen flash-attention call"
                )
            if "max_abs_diff_out" in rep and (
                rep["max_abs_diff_out"] > 0.02 * max(1.0, rep["scale_out"])
                or rep["max_abs_diff_grad"] > 0.02 * rep["scale_grad"]
            ):
                out.append(
                    f"{name}: varlen attention differs from the per-sample loop (output {rep['max_abs_diff_out']:.3g}, "
                    f"gradient {rep['max_abs_diff_grad']:.3g})"
                )
        elif "shards_on" in rep:  # check_zero3_start
            if not rep["partitioned"] or rep["shards_on"] != ["cpu"]:
                out.append(
                    f"{name}: under ZeRO-3 + offload the parameters are not all partitioned with host shards "
                    f"(partitioned {rep['partitioned']}, shards on {rep['shards_on']})"
                )
            if not cpu and rep["peak_cuda_at_start_gib"] > 0.5 * rep["model_gib_bf16"]:
                out.append(
                    f"{name}: ZeRO-3 + offload took {rep['peak_cuda_at_start_gib']:.2f} GiB of GPU memory at start-up "
                    f"for a {rep['model_gib_bf16']:.2f} GiB model: it went to the GPU whole"
                )
        elif "weights_on" in rep:  # check_encoder_load
            if not rep["weights_on"].startswith("cpu" if cpu else "cuda") or rep["dtype"] != half:
                out.append(f"{name}: the encoder loaded onto {rep['weights_on']} in {rep['dtype']}")
            if not cpu and rep["host_anon_rise_gib"] > 0.5 * rep["weights_gib"]:
                out.append(
                    f"{name}: loading took {rep['host_anon_rise_gib']:.1f} GiB of the process's own host memory "
                    f"for {rep['weights_gib']:.1f} GiB of weights"
                )
        elif "modes" in rep:
            if rep["llm_dtype"] != half:
                out.append(f"{name}: the frozen LLM runs in {rep['llm_dtype']}, expected {half}")
            if rep["attention"]["implementation"] != "dnallm_packed":
                out.append(f"{name}: attention {rep['attention']['implementation']}, expected dnallm_packed")
            if not cpu and rep["attention"].get("sdpa_flash") is not True:
                out.append(f"{name}: SDPA's flash kernel is not available ({rep['attention'].get('sdpa_flash')})")
            for mode, m in rep["modes"].items():
                if not m["packed"] or m["padding_fraction"] > 0:
                    out.append(f"{name} {mode}: batches are not packed (padding {m['padding_fraction']:.2f})")
            if not cpu and "variants" in rep:
                out += throughput_problems(name, rep["modes"])
        else:
            for phase in ("train", "predict"):
                if rep[phase].get("trunk_dtype") != half:
                    out.append(
                        f"{name}: the trunk {phase}s in {rep[phase].get('trunk_dtype')}, expected {half} (MoE experts follow their weights' dtype)"
                    )
            if not cpu and not rep.get("tf32"):
                out.append(f"{name}: TF32 is off for what stays fp32")
    return out


def throughput_problems(name: str, modes: dict) -> list[str]:
    """The new defaults' MFU (live k = 1 and cache k = 8), their gain over the old configuration, peak memory."""
    out = []
    for mode, m in modes.items():
        if m.get("peak_cuda_gib", 0) >= MAX_PEAK_GIB:
            out.append(f"{name} {mode}: peak memory {m['peak_cuda_gib']:.1f} GiB, over {MAX_PEAK_GIB:.0f}")
        if mode.startswith(f"{AFTER}/") and m.get("mfu", 1.0) < MIN_MFU:
            out.append(f"{name} {mode}: MFU {m['mfu']:.3f}, under {MIN_MFU}")
    for mode, before in modes.items():
        after = modes.get(mode.replace(f"{BEFORE}/", f"{AFTER}/", 1))
        if mode.startswith(f"{BEFORE}/c_") and after and after["tokens_per_s"] < MIN_GAIN * before["tokens_per_s"]:
            gain = after["tokens_per_s"] / before["tokens_per_s"]
            out.append(
                f"{name} {mode}: the new defaults give {gain:.1f}x the tokens/s of the configuration "
                f"before them, under {MIN_GAIN:.0f}x"
            )
    return out


def table(results: dict) -> str:
    rows = [
        "| check | mode | samples/s | tokens/s | MFU (HFU) | peak memory GiB | dtype | attention |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, res in results.items():
        if not res["ok"]:
            rows.append(f"| {name} | FAILED: {res['error']} | | | | | | |")
            continue
        rep = res["report"]
        if "kernel" in rep:  # check_packed_attention
            timing = f"per-sample {rep['per_sample_ms']:.2f} ms" + (
                f", varlen {rep['varlen_ms']:.2f} ms" if "varlen_ms" in rep else ""
            )
            rows.append(
                f"| {name} | {rep['kernel']}: one layer fwd+bwd, {timing} | | | | | {rep['dtype']} | {rep['kernel']} |"
            )
        elif "shards_on" in rep:  # check_zero3_start
            peak = (
                f"{rep['peak_cuda_at_start_gib']:.2f} at start, {rep['peak_cuda_after_step_gib']:.2f} after a step"
                if "peak_cuda_at_start_gib" in rep
                else "-"
            )
            rows.append(
                f"| {name} | engine start, {rep['model_gib_bf16']:.2f} GiB model, shards on {','.join(rep['shards_on'])}, "
                f"{rep['engine_start_s']:.1f} s | | | | {peak} | - | - |"
            )
        elif "weights_on" in rep:  # check_encoder_load
            rows.append(
                f"| {name} | load from safetensors onto {rep['weights_on']}, host +{rep['host_anon_rise_gib']:.2f} GiB own "
                f"(+{rep['host_rss_rise_gib']:.2f} GiB RSS with mapped file pages) | | | | "
                f"{rep.get('peak_cuda_gib', rep['weights_gib']):.2f} | {rep['dtype']} | - |"
            )
        elif "modes" in rep:  # bench_train
            attn = (
                rep["attention"]["implementation"]
                + f" ({rep['attention'].get('packed_kernel')})"
                + (f", flash: {rep['attention']['sdpa_flash']}" if "sdpa_flash" in rep["attention"] else "")
            )
            for mode, m in rep["modes"].items():
                mem = m.get("peak_cuda_gib", m["peak_rss_gib"])
                ops = f"- ({m['aten_ops_per_step']} aten ops/step)"
                mfu = f"{m['mfu']:.3f} ({m['hfu']:.3f})" if "mfu" in m else ops
                rows.append(
                    f"| {name} | {mode} | {m['samples_per_s']:.2f} | {m['tokens_per_s']:.0f} | {mfu} | {mem:.2f} | {rep['llm_dtype']} | {attn} |"
                )
        else:  # bench_coverage
            t = rep["train"]
            rows.append(
                f"| {name} | train, window {rep['window']}, checkpointing {rep['gradient_checkpointing']} | {t['windows_per_s']:.2f} windows "
                f"| {t['bases_per_s']:.0f} bases | - | {t['peak_memory_mib'] / 1024:.2f} | {rep.get('dtype', '-')} | - |"
            )
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu", action="store_true", help="tiny shapes on the CPU")
    p.add_argument("--only", help="comma-separated check names")
    p.add_argument("--timeout", type=int, default=0, help="seconds per check (default: 180 on a GPU, 300 on the CPU)")
    p.add_argument(
        "--tokenizer",
        type=Path,
        help="the LLM's tokenizer folder for the KEGG checks (e.g. Qwen3's own, as `.ci/fetch-qwen3-tokenizer` saves it)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="checks run this many at a time, with the cores shared out (CPU only: on a GPU each check has the "
        "device to itself, for its timings and peak memory)",
    )
    args = p.parse_args(argv)
    if args.jobs < 1 or (args.jobs > 1 and not args.cpu):
        p.error(f"--jobs {args.jobs}: checks run side by side only with --cpu, and at least one at a time")
    checks = CPU_CHECKS if args.cpu else GPU_CHECKS
    if args.only:
        checks = {k: v for k, v in checks.items() if k in args.only.split(",")}
    if not args.cpu:
        import torch

        if not torch.cuda.is_available():
            print(
                "gpu_check: no CUDA device is visible; run `bash scripts/gpu_check.sh --cpu` for the CPU check",
                file=sys.stderr,
            )
            return 2
    env = None
    if args.jobs > 1:  # each check's share of the cores: more threads than cores slow every check down
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // args.jobs))}

    def one(name: str, check: list[str]) -> dict:
        if args.tokenizer and check[0] == "bench_train.py":
            check = [*check, "--tokenizer", str(args.tokenizer.resolve())]
        result = run_check(name, check, args.timeout or (300 if args.cpu else 180), env)
        # each result as it comes, so a run stopped part-way still leaves what it measured
        print(f"[gpu_check] {name}: {json.dumps(result)}", file=sys.stderr, flush=True)
        return result

    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {name: pool.submit(one, name, check) for name, check in checks.items()}
        results = {name: future.result() for name, future in futures.items()}  # in the checks' order
    found = problems(results, args.cpu)
    print(json.dumps({"device": "cpu" if args.cpu else "cuda", "checks": results, "problems": found}, indent=2))
    print()
    print(table(results))
    for line in found:
        print(f"PROBLEM: {line}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
