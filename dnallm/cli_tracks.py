"""Command-line verbs of the coverage-track recipe: make-tiny-tracks, train-tracks, predict-tracks, eval-tracks, plot-tracks."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dnallm.data.dna import CONTIG_RULES

TINY_DIR = Path(".dnallm")


def _make_tiny_tracks(args) -> None:
    from dnallm.data.synthetic_tracks import write_synthetic_tracks
    from dnallm.io import check_fresh, check_outputs
    from dnallm.tiny import is_tiny_genos, make_tiny_genos

    check_outputs(dirs=[args.out])
    genos = args.out / "tiny" / "genos"
    shared = not args.overwrite and is_tiny_genos(genos, args.seed)  # the one `make-tiny` (the demo) built
    check_fresh([*([] if shared else [genos]), args.out / "tracks"], overwrite=args.overwrite)
    if not shared:
        make_tiny_genos(genos, seed=args.seed)
    paths = write_synthetic_tracks(args.out / "tracks", n_chroms=args.chroms, chrom_length=args.length, seed=args.seed)
    print(json.dumps({"genos": str(genos), **{k: str(v) for k, v in paths.items()}}, indent=2))


def _train_tracks(args) -> None:
    from dnallm.hub import locate_models
    from dnallm.config import load_coverage_recipe
    from dnallm.train.coverage import train

    recipe = load_coverage_recipe(args.recipe, args.overrides)
    locate_models(recipe)
    train(recipe)


def _split_list(text: str | None) -> list[str]:
    return [c.strip() for c in (text or "").split(",") if c.strip()]


def _predict_tracks(args) -> None:
    from dnallm.eval.coverage_predict import predict_tracks

    manifest = predict_tracks(
        args.checkpoint,
        args.out,
        regions=args.region,
        chroms=_split_list(args.chroms),
        fasta=args.fasta,
        stitch_mode=args.stitch,
        batch_size=args.batch_size,
        overrides=args.overrides,
        trust_remote_code=args.trust_remote_code,
    )
    print(
        json.dumps(
            {
                "out": str(args.out),
                "regions": manifest["regions"],
                "bigwigs": [t["prediction"] for t in manifest["tracks"]],
            },
            indent=2,
        )
    )


def _eval_tracks(args) -> None:
    from dnallm.eval.coverage import evaluate_tracks

    result = evaluate_tracks(
        args.checkpoint,
        args.out,
        regions=args.region,
        chroms=_split_list(args.chroms),
        gtf=args.gtf,
        gtf_contigs=args.gtf_contigs,
        observed=args.observed,
        fasta=args.fasta,
        plot_region=args.plot_region,
        stitch_mode=args.stitch,
        batch_size=args.batch_size,
        overrides=args.overrides,
        trust_remote_code=args.trust_remote_code,
    )
    print(json.dumps({k: result[k] for k in ("n_bases", "tracks", "plot")}, indent=2))
    print(f"wrote {args.out}/metrics.json, {args.out}/plot.png and {args.out}/predictions/")


def _plot_tracks(args) -> None:
    from dnallm.eval.coverage import plot_prediction

    print(
        plot_prediction(
            args.predictions, args.region, args.out, gtf=args.gtf, gtf_contigs=args.gtf_contigs, observed=args.observed
        )
    )


def _prediction_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", type=Path, help="a checkpoint-N directory or a run directory (latest checkpoint)")
    p.add_argument(
        "--region", action="append", default=[], metavar="CHROM:START-END", help="1-based inclusive; repeatable"
    )
    p.add_argument("--chroms", help="whole chromosomes, comma-separated, e.g. chr8,chr9")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--fasta", help="reference FASTA (default: the recipe's data.fasta)")
    p.add_argument(
        "--stitch", choices=["centre", "mean"], help="keep each window's centre, or average overlaps (default: recipe)"
    )
    p.add_argument("--batch-size", type=int, help="windows per forward (default: recipe eval.batch_size)")


def _gene_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gtf", help="gene models (GTF or GFF3) for gene-level metrics and the plot")
    p.add_argument("--gtf-contigs", default="same", choices=CONTIG_RULES, help="FASTA -> GTF contig names")
    p.add_argument("--observed", help="track sheet of observed bigWigs (default: the recipe's data.tracks)")


def add_commands(sub) -> None:
    p = sub.add_parser(
        "make-tiny-tracks",
        help="tiny Genos-shaped checkpoint + synthetic genome, bigWigs, GTF for recipes/coverage/tiny.yaml",
    )
    p.add_argument("--out", type=Path, default=TINY_DIR)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chroms", type=int, default=5)
    p.add_argument("--length", type=int, default=40_000, help="bp per chromosome")
    p.add_argument("--overwrite", action="store_true", help="replace the model and tracks already in --out")
    p.set_defaults(func=_make_tiny_tracks)

    p = sub.add_parser(
        "train-tracks", help="fine-tune a DNA model to predict coverage tracks; key=value overrides any recipe field"
    )
    p.add_argument("recipe", type=Path)
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(func=_train_tracks)

    p = sub.add_parser("predict-tracks", help="predict coverage for regions or chromosomes; one bigWig per track")
    _prediction_args(p)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides, e.g. data.window=16384")
    p.set_defaults(func=_predict_tracks)

    p = sub.add_parser("eval-tracks", help="predict held-out regions, Pearson of log1p at base/bin/gene level, plot")
    _prediction_args(p)
    _gene_args(p)
    p.add_argument("--plot-region", help="region to plot (default: around the most covered gene)")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(func=_eval_tracks)

    p = sub.add_parser("plot-tracks", help="plot observed vs predicted coverage for a region, genes underneath")
    p.add_argument("predictions", type=Path, help="output directory of predict-tracks (or <eval out>/predictions)")
    p.add_argument("--region", required=True, metavar="CHROM:START-END")
    p.add_argument("--out", type=Path, required=True, help="PNG file")
    _gene_args(p)
    p.set_defaults(func=_plot_tracks)
