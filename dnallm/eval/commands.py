"""Subcommands of this stage: ``eval``'s printer, ``baselines``, ``planted``, ``hard-kegg``, ``explain``."""

from __future__ import annotations

import json
from pathlib import Path

from dnallm.argtypes import int_in
from dnallm.data.kegg import read_jsonl, write_jsonl
from dnallm.data.synthetic import (
    FIXED_CLASSES,
    QUESTION,
    SIGNALS,
    UNINFORMATIVE_PROMPT,
    VARIANT_EFFECT_QUESTION,
    hard_records,
    planted_signal_records,
)


def print_eval(metrics: dict, out_dir: Path) -> None:
    from dnallm.eval.kegg import output_files
    from dnallm.eval.table import metrics_summary, number_summary, text_summary

    kind = metrics.get("score", "label")
    print({"label": metrics_summary, "number": number_summary, "text": text_summary}[kind](metrics))
    unseen = metrics.get("labels_unseen_in_training", [])
    if unseen:
        shown = ", ".join(unseen[:5]) + (f" and {len(unseen) - 5} more" if len(unseen) > 5 else "")
        print(f"{len(unseen)} ground-truth labels never seen in training (scored as their own classes): {shown}")
    if metrics.get("no_answer"):
        print(f"{metrics['no_answer']} replies had no 'Answer:' (counted wrong)")
    if metrics.get("no_number"):
        print(f"{metrics['no_number']} replies had no number after 'Answer:' (left out of the correlations, shown)")
    if metrics.get("truncated"):
        print(truncation_warning(metrics))
    print(f"wrote {out_dir}/{', '.join(output_files(kind))}")


def truncation_warning(metrics: dict) -> str:
    return (
        f"warning: {metrics['truncated']} of {metrics['n']} replies reached max_new_tokens={metrics['max_new_tokens']} "
        f"({metrics['max_new_tokens_from']}) without ending their turn and may be cut inside the label; "
        "raise eval.max_new_tokens (e.g. eval.max_new_tokens=1024), or set it to 0 to size it from the training replies"
    )


def _baselines(args) -> None:
    from dnallm.config import load_recipe
    from dnallm.eval.baselines import BaselinesRecipe, run_baselines

    recipe = load_recipe(args.recipe, args.overrides, cls=BaselinesRecipe)
    result = run_baselines(recipe)
    print(result["table"])
    for name, metrics in result["results"].items():
        if metrics.get("truncated"):
            print(f"{name}: {truncation_warning(metrics)}")
    print(f"wrote {recipe.output_dir}/comparison.md, comparison.json, comparison.png")


def _planted(args) -> None:
    from dnallm.config import RecipeError
    from dnallm.io import check_fresh, check_outputs

    check_outputs(dirs=[args.out])
    check_fresh([args.out / f"{name}.jsonl" for name in ("train", "val", "test")], overwrite=args.overwrite)
    labels = [x.strip() for x in args.labels.split(",")] if args.labels else None
    question = args.question or (VARIANT_EFFECT_QUESTION if labels else QUESTION)
    n_classes = len(labels) if labels else args.classes or FIXED_CLASSES.get(args.signal, 4)
    try:
        records = planted_signal_records(
            args.records,
            n_classes=n_classes,
            length=args.length,
            seed=args.seed,
            signal=args.signal,
            labels=labels,
            question=question,
        )
    except ValueError as e:  # a class count or length the signal cannot take: one line
        raise RecipeError(str(e)) from None
    n_val = n_test = round(len(records) * args.holdout)
    splits = {"val": records[:n_val], "test": records[n_val : n_val + n_test], "train": records[n_val + n_test :]}
    for name, part in splits.items():
        if part:
            write_jsonl(args.out / f"{name}.jsonl", part)
    print(json.dumps({"out": str(args.out), "signal": args.signal, **{k: len(v) for k, v in splits.items()}}))


def _hard_kegg(args) -> None:
    from dnallm.io import check_outputs

    check_outputs([args.out], inputs=[args.file])
    records = read_jsonl(args.file)
    write_jsonl(args.out, hard_records(records, args.prompt))
    print(json.dumps({"out": str(args.out), "records": len(records), "prompt": args.prompt}))


def _explain(args) -> None:
    from dnallm.eval.explain import explain_file

    summary = explain_file(
        args.checkpoint,
        args.data,
        args.out,
        record=args.record,
        method=args.method,
        region=args.region,
        batch_size=args.batch_size,
        label=args.label,
        fasta=args.fasta,
        plots=args.plots,
        overrides=args.overrides,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
    )
    print(json.dumps(summary, indent=2))


def add_commands(sub) -> None:
    p = sub.add_parser(
        "baselines", help="train and score dna+text, text-only and dna-only models on one dataset; write a comparison"
    )
    p.add_argument("recipe", type=Path, help="a KEGG recipe (extra keys: test, models, dna_head.*)")
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="e.g. test=data/test.jsonl output_dir=runs/baselines"
    )
    p.set_defaults(func=_baselines)

    p = sub.add_parser("planted", help="write KEGG-format train/val/test JSONL whose label is planted in the DNA")
    p.add_argument("--out", type=Path, required=True, help="directory for train.jsonl, val.jsonl, test.jsonl")
    p.add_argument("--records", type=int, default=600)
    p.add_argument(
        "--classes", type=int, default=0, help="class count (default 4; centre has 4 and substitution 6 by their rule)"
    )
    p.add_argument("--length", type=int, default=4001, help="bp per sequence (odd; the variant is the middle base)")
    p.add_argument(
        "--signal", choices=sorted(SIGNALS), default="motif", help="; ".join(f"{k}: {v}" for k, v in SIGNALS.items())
    )
    p.add_argument(
        "--labels", help="class names instead of diseases, comma-separated, e.g. benign,pathogenic (sets --classes)"
    )
    p.add_argument(
        "--question",
        help="the question of every record (default: the disease question, or with --labels a variant-effect one)",
    )
    p.add_argument("--holdout", type=float, default=0.1, help="fraction of records for each of val and test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace train/val/test JSONL already in --out")
    p.set_defaults(func=_planted)

    p = sub.add_parser("hard-kegg", help="copy a KEGG JSONL with every question replaced by one short fixed prompt")
    p.add_argument("file", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--prompt", default=UNINFORMATIVE_PROMPT)
    p.set_defaults(func=_hard_kegg)

    p = sub.add_parser("explain", help="which bases made the answer: in-silico mutagenesis or gradient x input")
    p.add_argument("checkpoint", type=Path, help="a checkpoint-N directory or a run directory (latest checkpoint)")
    p.add_argument(
        "--data",
        type=Path,
        required=True,
        help="KEGG-format JSONL (from dnallm windows: scores in genome coordinates too)",
    )
    p.add_argument("--record", type=int, help="explain only this record (0-based index in --data)")
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="folder for scores.tsv, plots/record-N.png and, for VCF-derived records, importance.*.bedGraph",
    )
    p.add_argument(
        "--method",
        choices=("ism", "gradient"),
        help="ism: every base changed to the other three; gradient: gradient x input "
        "(default: ism up to 256 bp of region, gradient above)",
    )
    p.add_argument(
        "--region",
        help="a width in bp centred on the variant (default 64, cut to the window), "
        "or START-END window positions, 1-based inclusive",
    )
    p.add_argument("--batch-size", type=int, default=64, help="mutated windows per forward pass (ISM)")
    p.add_argument("--label", help="the label to explain (default: the model's own answer, generated once per record)")
    p.add_argument("--fasta", type=Path, help="the reference FASTA of the VCF: also writes importance.*.bw (bigWig)")
    p.add_argument("--plots", type=int_in(0), default=10, help="write a PNG for the first N records (default 10)")
    p.add_argument("--device", help="cuda, cpu, ... (default: cuda if available)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. llm.name_or_path=/models/Qwen3-4B")
    p.set_defaults(func=_explain)
