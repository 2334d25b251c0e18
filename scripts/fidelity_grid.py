"""Planted signals x fusion designs x compression: is DNA + text at least as good as its parts?

For each planted signal this writes a dataset (``dnallm planted``), trains and scores the
text-only LLM and the DNA-only head once (the head reads the default design's pair features), then the
fusion model for every design and compression factor k, all through ``dnallm baselines``
with the tiny planted recipe. Prints one JSON document; writes ``grid.md`` and ``grid.json``. Runs already in ``--out``
are read back, not repeated: a stopped grid goes on where it stopped.

    test -d .dnallm/tiny || dnallm make-tiny
    python scripts/fidelity_grid.py --out runs/fidelity-grid
    # the table of docs/eval.md and the README (every design, tests/test_fidelity.py's data and steps; ~25 min):
    python scripts/fidelity_grid.py --out runs/fidelity-grid --pools 8,1 --records 700 --test 100 train.max_steps=300
    python scripts/fidelity_grid.py --signals centre,substitution --designs published,pooled+centre --pools 8

Designs: ``published`` is the two-block layout of published DNA-LLMs (MLP projector, no
variant summary, k forced to 1); the others are ``projector.summary`` values with the
recipe's strided-conv projector at each k.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dnallm.config import load_recipe
from dnallm.data.kegg import write_jsonl
from dnallm.data.synthetic import FIXED_CLASSES, SIGNALS, planted_signal_records
from dnallm.eval.baselines import BaselinesRecipe, run_baselines
from dnallm.eval.table import markdown_table
from dnallm.fusion.summary import DEFAULT_SUMMARY
from dnallm.io import atomic_write_text

REPO = Path(__file__).resolve().parent.parent
# The default first; "pooled+centre" is the summary before alignment, "none" / "published" no summary.
DESIGNS = (DEFAULT_SUMMARY, "pooled+aligned", "aligned+kmers", "pooled+centre", "none", "published")


def design_overrides(design: str, pool: int) -> list[str]:
    if design == "published":
        return ["projector.kind=mlp", "projector.pool=1", "projector.summary=none"]
    return [
        "projector.kind=conv",
        f"projector.pool={pool}",
        f"projector.kernel={max(16, 2 * pool)}",
        f"projector.summary={design}",
    ]


def write_signal_data(out: Path, signal: str, records: int, n_test: int, seed: int) -> Path:
    data = out / "data" / signal
    rows = planted_signal_records(
        records, n_classes=FIXED_CLASSES.get(signal, 4), length=4001, seed=seed, signal=signal
    )
    write_jsonl(data / "test.jsonl", rows[:n_test])
    write_jsonl(data / "train.jsonl", rows[n_test:])
    return data


def run(recipe_path: Path, out_dir: Path, data: Path, models: list[str], overrides: list[str]) -> dict[str, float]:
    """Accuracy per model; a run whose comparison is already in ``out_dir`` is read, not repeated,
    so an interrupted grid goes on where it stopped."""
    done = out_dir / "comparison.json"
    if done.is_file():
        return {row["model"]: row["accuracy"] for row in json.loads(done.read_text())["rows"]}
    recipe = load_recipe(
        recipe_path,
        [
            f"output_dir={out_dir}",
            f"data.train={data / 'train.jsonl'}",
            f"test={data / 'test.jsonl'}",
            f"models={','.join(models)}",
            *overrides,
        ],
        cls=BaselinesRecipe,
    )
    result = run_baselines(recipe)
    return {row["model"]: row["accuracy"] for row in result["rows"]}


def pivot_table(rows: list[dict]) -> str:
    """Signals down (with their class count), designs x k across: DNA + text accuracy, ✗ where the
    fidelity bar is not held; the DNA-only head and text-only once per signal."""
    columns = list(dict.fromkeys((r["design"], r["k"]) for r in rows))
    cells = {(r["signal"], r["design"], r["k"]): r for r in rows}
    first = {}  # signal -> its first run: the head, text-only and chance are the same in all of them
    for r in rows:
        first.setdefault(r["signal"], r)
    header = ["signal (classes)", "DNA-only head", "text-only"] + [f"{d}, k = {k}" for d, k in columns]
    body = []
    for signal, r0 in first.items():
        line = [f"{signal} ({round(1 / r0['chance'])})", f"{r0['dna-only']:.3f}", f"{r0['text-only']:.3f}"]
        for design, k in columns:
            r = cells.get((signal, design, k))
            line.append("" if r is None else f"{r['dna+text']:.3f}" + ("" if r["holds"] else " ✗"))
        body.append(line)
    return markdown_table(header, body)


def write_tables(out: Path, rows: list[dict]) -> None:
    header = ["signal", "design", "k", "dna+text", "text-only", "dna-only", "chance", "holds"]
    text = (
        "DNA + text accuracy by signal and design (✗: not within 2 points of the DNA-only head, or below 0.95 "
        "where the head reaches it)\n\n" + pivot_table(rows) + "\n\nEvery run\n\n"
    )
    atomic_write_text(out / "grid.md", text + markdown_table(header, [[r[h] for h in header] for r in rows]) + "\n")
    atomic_write_text(out / "grid.json", json.dumps(rows, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", type=Path, default=REPO / "recipes/baselines/planted_tiny.yaml")
    ap.add_argument("--out", type=Path, default=Path("runs/fidelity-grid"))
    ap.add_argument("--signals", default=",".join(SIGNALS))
    ap.add_argument("--designs", default=",".join(DESIGNS))
    ap.add_argument("--pools", default="1,8", help="compression factors k for the conv designs")
    ap.add_argument("--records", type=int, default=800)
    ap.add_argument("--test", type=int, default=200, help="test records per signal")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument(
        "overrides", nargs="*", metavar="key=value", help="recipe overrides for every run, e.g. train.max_steps=300"
    )
    args = ap.parse_args(argv)
    signals, designs = args.signals.split(","), args.designs.split(",")
    pools = [int(k) for k in args.pools.split(",")]
    for name, chosen, known in (("signal", signals, SIGNALS), ("design", designs, DESIGNS)):
        bad = [c for c in chosen if c not in known]
        if bad:
            ap.error(f"unknown {name}(s) {', '.join(bad)}; choose from {', '.join(known)}")

    data = {signal: write_signal_data(args.out, signal, args.records, args.test, args.seed) for signal in signals}
    parts: dict[str, dict[str, float]] = {}  # text-only and DNA-only, once per signal
    runs = [(design, pool) for design in designs for pool in ([1] if design == "published" else pools)]
    rows = []
    for design, pool in runs:  # design by design, so that a long grid shows whole rows early
        for signal in signals:
            if signal not in parts:
                parts[signal] = run(
                    args.recipe, args.out / signal / "parts", data[signal], ["text-only", "dna-only"], args.overrides
                )
            name = design if design == "published" else f"{design}-k{pool}"
            acc = run(
                args.recipe,
                args.out / signal / name,
                data[signal],
                ["dna+text"],
                [*args.overrides, *design_overrides(design, pool)],
            )
            fused, dna_only = acc["dna+text"], parts[signal]["dna-only"]
            rows.append(
                {
                    "signal": signal,
                    "design": design,
                    "k": pool,
                    "dna+text": fused,
                    "text-only": parts[signal]["text-only"],
                    "dna-only": dna_only,
                    "chance": round(1 / FIXED_CLASSES.get(signal, 4), 3),
                    # the fidelity bar: within 2 points of the DNA-only head, and >= 0.95 where it is
                    "holds": fused >= dna_only - 0.02 and (fused >= 0.95 or dna_only < 0.95),
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr)
            write_tables(args.out, rows)
    print(json.dumps({"out": str(args.out), "overrides": args.overrides, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
