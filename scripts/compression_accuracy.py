"""Does DNA-position compression cost accuracy? Train the planted-signal task twice and compare.

  (baseline) live encoder on every step, k = 1 (one LLM position per base)
  (fast)     embedding cache, k = 8 (strided-conv projector)

Both use the tiny recipe's models and data (`dnallm make-tiny` first) and the same number of
steps; prints JSON with each run's test accuracy and the difference in points.

  python scripts/compression_accuracy.py --steps 900
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from pathlib import Path

from dnallm.config import load_recipe
from dnallm.eval.kegg import evaluate
from dnallm.train.embed_cache import cache_embeddings
from dnallm.train.finetune import train

REPO = Path(__file__).resolve().parent.parent
RUNS = {
    "baseline_live_k1": ["projector.kind=conv", "projector.pool=1", "projector.kernel=9"],
    "cache_k8": ["projector.kind=conv", "projector.pool=8", "projector.kernel=16"],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", type=Path, default=REPO / "recipes/kegg/tiny.yaml")
    p.add_argument("--test", type=Path, default=Path(".dnallm/data/planted/test.jsonl"))
    p.add_argument("--steps", type=int, default=900)
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args()

    report = {"recipe": str(args.recipe), "test": str(args.test), "steps": args.steps, "runs": {}}
    with tempfile.TemporaryDirectory(prefix="dnallm-compression-") as tmp:
        for name, settings in RUNS.items():
            overrides = [
                *args.overrides,
                *settings,
                f"output_dir={tmp}/{name}",
                f"train.max_steps={args.steps}",
                "data.val=",
            ]
            if name.startswith("cache"):
                overrides.append(f"encoder.cache_dir={tmp}/cache")
            recipe = load_recipe(args.recipe, overrides)
            if recipe.encoder.cache_dir:
                cache_embeddings(recipe, [str(args.test)])
            with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the report
                metrics = evaluate(train(recipe), args.test, f"{tmp}/{name}/eval")
            report["runs"][name] = {
                "k": recipe.projector.pool,
                "cache": bool(recipe.encoder.cache_dir),
                "accuracy": metrics["accuracy"],
                "macro_f1": metrics["macro_f1"],
            }
            print(f"[{name}] {json.dumps(report['runs'][name])}", file=sys.stderr, flush=True)
    runs = report["runs"]
    report["accuracy_points_k8_minus_baseline"] = 100 * (
        runs["cache_k8"]["accuracy"] - runs["baseline_live_k1"]["accuracy"]
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
