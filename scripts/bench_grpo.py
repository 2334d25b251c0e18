"""GRPO against more fine-tuning for the same wall time, on the planted task, printed as JSON.

1. Tiny models and planted KEGG-format data as `dnallm make-tiny` writes them (480 train, 60 test, 4 classes).
2. Fine-tune with recipes/kegg/tiny.yaml, stopped after --sft-steps of its 300 (under-trained).
3. From that checkpoint: (a) `dnallm grpo` with recipes/grpo/tiny.yaml (+ overrides), timed;
   (b) the fine-tuning run continued on its own schedule for as many steps as fit in (a)'s
   wall time (its step time measured first by a short calibration run), or to the end of
   that schedule if it comes first (then (b) used less time than (a)).
4. `dnallm eval` on the same test set for the start, (a) and (b).

  python scripts/bench_grpo.py --out /tmp/bench_grpo
  python scripts/bench_grpo.py --out /tmp/bench_grpo train.max_steps=60 train.lr=1e-3
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")

from dnallm.config import GRPORecipe, load_recipe  # noqa: E402
from dnallm.data.kegg import write_jsonl  # noqa: E402
from dnallm.data.synthetic import planted_records  # noqa: E402
from dnallm.eval.kegg import evaluate  # noqa: E402
from dnallm.tiny import make_tiny  # noqa: E402
from dnallm.train.checkpoint import read_state  # noqa: E402
from dnallm.train.finetune import train  # noqa: E402
from dnallm.train.grpo import grpo  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def timed(fn, *args, **kwargs):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, round(time.perf_counter() - wall, 1), round(time.process_time() - cpu, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="working directory (models, data, runs)")
    parser.add_argument("--sft-steps", type=int, default=95, help="fine-tuning steps before stopping early (of 300)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="for the GRPO recipe, e.g. train.max_steps=40"
    )
    args = parser.parse_args()

    out = args.out
    models = make_tiny(out / "tiny", seed=args.seed)
    records = planted_records(600, n_classes=4, seed=args.seed)  # the split of `dnallm make-tiny`
    write_jsonl(out / "data/test.jsonl", records[60:120])
    write_jsonl(out / "data/train.jsonl", records[120:])
    test = out / "data/test.jsonl"
    common = [
        f"encoder.name_or_path={models['genos']}",
        f"llm.name_or_path={models['qwen3']}",
        f"data.train={out / 'data/train.jsonl'}",
        "data.val=",
        "train.save_every=0",
        "train.keep_last=0",
    ]

    def sft(run: str, *extra: str):
        return load_recipe(REPO / "recipes/kegg/tiny.yaml", [*common, f"output_dir={out / run}", *extra])

    start = train(sft("sft"), stop_after=args.sft_steps)
    before = evaluate(start, test, out / "eval/start")["accuracy"]

    recipe = load_recipe(
        REPO / "recipes/grpo/tiny.yaml",
        [*common, f"output_dir={out / 'grpo'}", f"grpo.init_from={start}", *args.overrides],
        cls=GRPORecipe,
    )
    grpo_ckpt, grpo_wall, grpo_cpu = timed(grpo, recipe)
    grpo_acc = evaluate(grpo_ckpt, test, out / "eval/grpo")["accuracy"]

    # step time of continued fine-tuning, then as many steps as fit in GRPO's wall time
    calibration = 20
    cal_recipe = sft("calibrate", f"train.resume_from_checkpoint={start}", "train.log_every=1")
    _, cal_wall, _ = timed(train, cal_recipe, stop_after=calibration)
    rates = [
        json.loads(line)["train/samples_per_s"]
        for line in (out / "calibrate/train_log.jsonl").read_text().splitlines()
    ]
    step_s = (
        cal_recipe.train.micro_batch_size / (sum(rates[1:]) / max(1, len(rates) - 1))
        if len(rates) > 1
        else cal_wall / calibration
    )
    start_s = max(0.0, cal_wall - calibration * step_s)
    n_more = max(1, round((grpo_wall - start_s) / step_s))
    more_ckpt, more_wall, more_cpu = timed(
        train, sft("sft_more", f"train.resume_from_checkpoint={start}"), stop_after=n_more
    )
    more_acc = evaluate(more_ckpt, test, out / "eval/sft_more")["accuracy"]

    print(
        json.dumps(
            {
                "start": {"checkpoint": str(start), "sft_steps": args.sft_steps, "test_accuracy": before},
                "grpo": {
                    "checkpoint": str(grpo_ckpt),
                    "steps": read_state(grpo_ckpt)["step"],
                    "wall_s": grpo_wall,
                    "cpu_s": grpo_cpu,
                    "test_accuracy": grpo_acc,
                    "gain_points": round(100 * (grpo_acc - before), 1),
                    "prompts_per_step": recipe.train.micro_batch_size * recipe.train.grad_accum,
                    "group_size": recipe.grpo.group_size,
                },
                "sft_more": {
                    "checkpoint": str(more_ckpt),
                    "steps": read_state(more_ckpt)["step"] - args.sft_steps,
                    "steps_fitting_grpo_wall": n_more,
                    "ended_with_its_schedule": read_state(more_ckpt)["step"] == cal_recipe.train.max_steps,
                    "wall_s": more_wall,
                    "cpu_s": more_cpu,
                    "test_accuracy": more_acc,
                    "gain_points": round(100 * (more_acc - before), 1),
                },
                "test_records": 60,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
