"""Packed attention on this device: the kernel ``dnallm_packed`` takes, whether it equals the
per-sample SDPA loop (outputs and gradients), and the time of one layer's forward + backward
with each (printed as JSON).

    python scripts/check_packed_attention.py          # Qwen3-4B's heads (32 query, 8 key/value, dim 128)

On a GPU the packed row is one flash-attention varlen call; on the CPU both are the loop.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from dnallm.fusion.packing import packed_kernel, per_sample_causal, varlen_causal
from dnallm.train.engine import pick_device


def timed(fn, repeats: int, sync) -> float:
    for _ in range(2):
        fn()
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - start) / repeats


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", default="390,402,377,415", help="sample lengths in the packed row")
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args(argv)
    device = pick_device()
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    lengths = [int(n) for n in args.lengths.split(",")]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    g = torch.Generator().manual_seed(0)
    shapes = [(1, args.heads, cu[-1].item(), args.head_dim)] + [(1, args.kv_heads, cu[-1].item(), args.head_dim)] * 2
    q, k, v = (torch.randn(s, generator=g).to(device, dtype).requires_grad_() for s in shapes)
    groups, scale = args.heads // args.kv_heads, args.head_dim**-0.5
    kernel = packed_kernel(q)

    def run(fn):
        for t in (q, k, v):
            t.grad = None
        out = fn(q, k, v, cu, scale, groups)
        out.float().square().mean().backward()
        return out.detach().float(), [t.grad.float() for t in (q, k, v)]

    ref_out, ref_grads = run(per_sample_causal)
    report = {"device": device, "dtype": str(dtype).removeprefix("torch."), "kernel": kernel, "lengths": lengths}
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    report["per_sample_ms"] = 1e3 * timed(lambda: run(per_sample_causal), args.repeats, sync)
    if kernel == "varlen":
        out, grads = run(varlen_causal)
        report["max_abs_diff_out"] = (out - ref_out).abs().max().item()
        report["max_abs_diff_grad"] = max((a - b).abs().max().item() for a, b in zip(grads, ref_grads))
        report["scale_out"] = ref_out.abs().max().item()
        report["scale_grad"] = max(t.abs().max().item() for t in ref_grads)
        report["varlen_ms"] = 1e3 * timed(lambda: run(varlen_causal), args.repeats, sync)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
