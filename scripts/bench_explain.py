"""Records per second of ``dnallm explain``: ISM of the centre 64 bp (384 mutated windows per
record, one batched pass) and gradient x input of the whole window, printed as JSON.

Without a checkpoint it builds the tiny models, trains one step on planted data at the
given window (the speed does not depend on what was learned) and times that:

    python scripts/bench_explain.py --records 8                       # tiny models, 1,024-bp window
    python scripts/bench_explain.py --checkpoint runs/kegg-tiny --records 8
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from dnallm.config import load_recipe
from dnallm.data.kegg import examples_from_records, write_jsonl
from dnallm.data.synthetic import planted_signal_records
from dnallm.eval.explain import Explainer, explain_examples, ism_work, parse_region
from dnallm.fusion.model import DNAFusionLM
from dnallm.train.engine import pick_device

REPO = Path(__file__).resolve().parent.parent


def tiny_checkpoint(root: Path, window: int) -> Path:
    from dnallm.tiny import make_tiny
    from dnallm.train.finetune import train

    models = make_tiny(root / "tiny")
    write_jsonl(root / "train.jsonl", planted_signal_records(16, length=2 * window + 1, seed=0, signal="centre"))
    recipe = load_recipe(
        REPO / "recipes/kegg/tiny.yaml",
        [
            f"output_dir={root / 'run'}",
            f"encoder.name_or_path={models['genos']}",
            f"llm.name_or_path={models['qwen3']}",
            f"data.train={root / 'train.jsonl'}",
            "data.val=",
            f"data.dna_window={window}",
            "train.max_steps=1",
            "train.save_every=0",
        ],
    )
    return train(recipe)


def timed(explainer, examples, method: str, batch_size: int, device: str) -> float:
    """Seconds for ``examples`` (labels given: no generation in the timing)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    explain_examples(
        explainer, examples, labels=[ex["answer"] for ex in examples], method=method, batch_size=batch_size
    )
    if device.startswith("cuda"):
        torch.cuda.synchronize()  # the last batch's work, before the clock stops
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="a trained checkpoint (default: tiny models, one step)")
    parser.add_argument("--window", type=int, default=1024, help="tiny checkpoint's dna_window (real recipes: 1,024)")
    parser.add_argument("--records", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=384, help="mutated windows per forward pass")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    device = args.device or pick_device()
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or tiny_checkpoint(Path(tmp), args.window)
        loaded = DNAFusionLM.from_pretrained(checkpoint, device)
        recipe, encoder, model, processor = loaded.recipe, loaded.dna_source, loaded.model, loaded.processor
        window = recipe.data.dna_window
        records = planted_signal_records(args.records + 1, length=2 * window + 1, seed=1, signal="centre")
        examples = list(examples_from_records(records, window))
        explainer = Explainer(model, encoder, processor, device=device, encoder_batch_size=recipe.encoder.batch_size)
        timed(explainer, examples[:1], "ism", args.batch_size, device)  # warm-up: kernels, allocator
        result = {
            "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
            "torch_threads": torch.get_num_threads(),
            "window": window,
            "records": args.records,
            "batch_size": args.batch_size,
            "ism_forward_passes_and_mutated_windows_per_record": ism_work(
                (examples[0]["ref_window"], examples[0]["var_window"]), parse_region(None, window)
            ),
        }
        for method in ("ism", "gradient"):
            seconds = timed(explainer, examples[1:], method, args.batch_size, device)
            result[f"{method}_records_per_s"] = round(args.records / seconds, 3)
        if device.startswith("cuda"):
            result["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
