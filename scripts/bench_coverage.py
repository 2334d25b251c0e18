"""Coverage recipe throughput: training and prediction windows/s and peak memory, printed as JSON.

The whole path is timed: windows read from a FASTA and bigWigs (a synthetic genome written
to a temporary directory), tokens, trunk + head, Adafactor step; prediction includes
stitching the overlapping windows. Trunk weights are random (no download), in the shape
of a tiny or a published Genos.

    python scripts/bench_coverage.py                                   # tiny recipe, CPU
    python scripts/bench_coverage.py --shape 1.2b                      # Genos-1.2B shape, recipes/coverage/genos1b_bcell_nk.yaml
    python scripts/bench_coverage.py --shape 1.2b train.micro_batch_size=2 data.window=16384
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dnallm.data.coverage import CoverageWindows  # noqa: E402
from dnallm.data.genome import Genome, Region  # noqa: E402
from dnallm.data.synthetic_tracks import write_synthetic_tracks  # noqa: E402
from dnallm.data.tracks import CoverageReader, read_track_sheet, strand_partners  # noqa: E402
from dnallm.data.regions import tile  # noqa: E402
from dnallm.encoders.coverage import CoverageModel, base_token_ids, pad_token_id  # noqa: E402
from dnallm.eval.coverage_predict import Predictor  # noqa: E402
from dnallm.eval.coverage_stitch import plan_windows  # noqa: E402
from dnallm.tiny import build_dna_tokenizer, genos_config  # noqa: E402
from dnallm.config import load_coverage_recipe  # noqa: E402
from dnallm.encoders.coverage_pretrained import target_transform  # noqa: E402
from dnallm.train.coverage import build_engine  # noqa: E402
from dnallm.train.engine import pick_device  # noqa: E402

RECIPES = {
    "tiny": REPO / "recipes/coverage/tiny.yaml",
    "1.2b": REPO / "recipes/coverage/genos1b_bcell_nk.yaml",
    "10b": REPO / "recipes/coverage/genos1b_bcell_nk.yaml",
}


class PeakMemory:
    """Peak memory of one phase: CUDA allocations on a GPU, the process's peak RSS on CPU.

    On CPU the peak RSS only grows, so phases are run from the lighter to the heavier.
    """

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *_):
        if self.cuda:
            torch.cuda.synchronize()
            self.mib = torch.cuda.max_memory_allocated() / 2**20
        else:
            self.mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_predict(predictor: Predictor, genome: Genome, region: Region, batch_size: int) -> dict:
    d = predictor.recipe.data
    windows = plan_windows(region, d.window, d.overlap, genome.sizes[region.chrom])
    with PeakMemory(predictor.device) as mem:
        start = time.perf_counter()
        n_bases = sum(len(v) for _, v in predictor.region(genome, region, batch_size=batch_size))
        sync(predictor.device)
        seconds = time.perf_counter() - start
    return {
        "windows": len(windows),
        "batch_size": batch_size,
        "seconds": round(seconds, 3),
        "windows_per_s": round(len(windows) / seconds, 3),
        "output_bp_per_s": round(n_bases / seconds, 1),
        "peak_memory_mib": round(mem.mib, 1),
    }


def bench_train(engine, dataset: CoverageWindows, warmup: int, steps: int) -> dict:
    engine.module.train()
    batches = iter(dataset)
    with PeakMemory(engine.device) as mem:
        for i in range(warmup + steps):
            if i == warmup:
                sync(engine.device)
                start = time.perf_counter()
            batch = next(batches)
            out = engine(**{k: batch[k].to(engine.device) for k in ("input_ids", "attention_mask", "targets")})
            engine.backward(out.loss)
            engine.step()
        sync(engine.device)
        seconds = time.perf_counter() - start
    windows = steps * dataset.batch_size
    return {
        "steps": steps,
        "micro_batch_size": dataset.batch_size,
        "seconds": round(seconds, 3),
        "windows_per_s": round(windows / seconds, 3),
        "bases_per_s": round(windows * len(dataset.windows[0]) / seconds, 1),
        "last_loss": round(out.loss.item(), 4),
        "peak_memory_mib": round(mem.mib, 1),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=list(RECIPES), default="tiny", help="trunk shape (random weights)")
    parser.add_argument("--recipe", type=Path, help="recipe for window, head, batch (default: by shape)")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--predict-windows", type=int, default=64, help="windows in the predicted region")
    parser.add_argument(
        "--deepspeed",
        action="store_true",
        help="train through the recipe's DeepSpeed JSON (bf16 on a GPU) rather than plain PyTorch",
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)

    recipe = load_coverage_recipe(
        args.recipe or RECIPES[args.shape], [*args.overrides, *([] if args.deepspeed else ["deepspeed="])]
    )
    d, t = recipe.data, recipe.train
    device = pick_device()
    torch.manual_seed(recipe.seed)
    tokenizer = build_dna_tokenizer()
    with tempfile.TemporaryDirectory() as tmp:
        stride = d.window - d.overlap
        length = max(
            40_000, d.window + stride * max(args.predict_windows, (args.warmup + args.steps) * t.micro_batch_size)
        )
        paths = write_synthetic_tracks(tmp, n_chroms=1, chrom_length=length, seed=recipe.seed)
        genome, tracks = Genome(paths["fasta"]), read_track_sheet(paths["tracks"])
        transform = target_transform(recipe, tracks)
        model = CoverageModel.from_config(
            genos_config(args.shape),
            len(tracks),
            channels=recipe.head.channels,
            kernel_size=recipe.head.kernel_size,
            dropout=recipe.head.dropout,
        )
        if recipe.encoder.gradient_checkpointing:
            model.enable_gradient_checkpointing()
        n_params = sum(p.numel() for p in model.parameters())

        predictor = Predictor.from_model(recipe, model, tokenizer, tracks, transform, device)
        region = Region("chr1", 0, min(length, d.window + stride * (args.predict_windows - 1) - d.overlap))
        predict = bench_predict(predictor, genome, region, recipe.eval.batch_size)
        predict["trunk_dtype"] = str(predictor.model.trunk.dtype).removeprefix("torch.")
        model.trunk.float()  # training starts from fp32 weights, as `dnallm coverage-train` does

        windows = tile(Region("chr1", 0, length), d.window, stride)
        dataset = CoverageWindows(
            genome,
            CoverageReader(tracks),
            windows,
            base_token_ids(tokenizer),
            transform,
            batch_size=t.micro_batch_size,
            pad_id=pad_token_id(tokenizer),
            shuffle=True,
            seed=recipe.seed,
            rc_augment=d.rc_augment,
            partners=strand_partners(tracks),
        )
        engine = build_engine(recipe, model, total_steps=args.warmup + args.steps, grad_accum=1, device=device)
        train = bench_train(engine, dataset, args.warmup, args.steps)
        train["engine"] = type(engine).__name__
        train["trunk_dtype"] = str(next(engine.module.trunk.parameters()).dtype).removeprefix("torch.")

    report = {
        "shape": args.shape,
        "parameters": n_params,
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "threads": torch.get_num_threads(),
        "window": d.window,
        "overlap": d.overlap,
        "n_tracks": len(tracks),
        "gradient_checkpointing": recipe.encoder.gradient_checkpointing,
        "optimizer": "Adafactor",
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "tf32": torch.backends.cuda.matmul.allow_tf32,
        "train": train,
        "predict": predict,
    }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
