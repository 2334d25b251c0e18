"""ZeRO-3 with parameter offload, from start-up: build the fusion model in host memory, hand it
to the training engine, take one step, and report the GPU memory it took (printed as JSON).

The engine partitions the model one tensor at a time (``partition_from_host``), so with
``offload_param`` the GPU should never hold more than a few tensors of it; moved whole, the
peak would be at least the model's size.

    python scripts/check_zero3_start.py --shape 1.2b:4b --layers 12   # on a GPU: Qwen3-4B's width, 12 of its blocks
    python scripts/check_zero3_start.py                               # tiny, on the CPU
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

REPO = Path(__file__).resolve().parent.parent


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="tiny:tiny", help="ENCODER:LLM, as bench_train.py --shape")
    p.add_argument(
        "--layers", type=int, help="decoder blocks of the LLM (width, heads and vocabulary stay the shape's)"
    )
    p.add_argument("--deepspeed", type=Path, default=REPO / "recipes/deepspeed/zero3_offload.json")
    args = p.parse_args(argv)

    from bench_train import random_models

    from dnallm.config import load_recipe
    from dnallm.data.kegg import load_examples, write_jsonl
    from dnallm.data.synthetic import planted_records
    from dnallm.memory import PeakRSS
    from dnallm.train.build import build_model, build_processor
    from dnallm.train.engine import build_engine, pick_device, single_process_defaults
    from dnallm.train.finetune import param_groups, step_batch

    single_process_defaults()
    device = pick_device()
    recipe = load_recipe(
        REPO / "recipes/kegg/genos1b_qwen3_4b.yaml", ["data.dna_window=256", f"deepspeed={args.deepspeed}"]
    )
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="dnallm-zero3-") as tmp:
        encoder, new_llm = random_models(recipe, args.shape, "cpu", Path(tmp), layers=args.layers)  # in host memory
        model, tokenizer = build_model(recipe, device, encoder, llm=new_llm(), place=False)
        model_bytes = sum(t.numel() * 2 for t in model.parameters())  # in bf16
        processor = build_processor(recipe, tokenizer, encoder)
        write_jsonl(Path(tmp) / "planted.jsonl", planted_records(2, n_classes=4, seed=0))
        rows = [processor(ex) for ex in load_examples(Path(tmp) / "planted.jsonl", recipe.data.dna_window)]
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        with PeakRSS() as rss:
            engine = build_engine(
                recipe, model, param_groups(model, recipe), total_steps=1, grad_accum=1, device=device
            )
        report = {
            "shape": args.shape,
            "layers": args.layers,
            "device": device,
            "deepspeed": str(args.deepspeed.name),
            "model_gib_bf16": model_bytes / 2**30,
            "engine_start_s": time.perf_counter() - start,
            "partitioned": all(hasattr(p, "ds_id") for p in engine.module.parameters()),
            "shards_on": sorted({p.ds_tensor.device.type for p in engine.module.parameters()}),
            "host_anon_rise_gib": rss.anon_rise / 2**30,
        }
        if device.startswith("cuda"):
            report["peak_cuda_at_start_gib"] = torch.cuda.max_memory_allocated() / 2**30
        encoder.model.to(device)  # the frozen encoder, after the start-up peak was read
        loss = step_batch(engine, encoder, processor.train_batch(rows), device, recipe.encoder.batch_size).loss
        engine.backward(loss)
        engine.step()
        report["loss"] = loss.item()
        if device.startswith("cuda"):
            report["peak_cuda_after_step_gib"] = torch.cuda.max_memory_allocated() / 2**30
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
