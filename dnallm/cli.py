"""The ``dnallm`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from dnallm import cli_tracks, cli_vcf

TINY_DIR = Path(".dnallm")
SPLITS = ("train", "val", "test")


def _make_tiny(args) -> None:
    from dnallm.data.kegg import write_jsonl
    from dnallm.data.synthetic import planted_records
    from dnallm.io import check_fresh, check_outputs
    from dnallm.tiny import is_tiny_genos, make_tiny_genos, make_tiny_qwen3

    data_dir = args.out / "data" / "planted"
    check_outputs(dirs=[args.out])
    genos, qwen3 = args.out / "tiny" / "genos", args.out / "tiny" / "qwen3"
    shared = not args.overwrite and is_tiny_genos(genos, args.seed)  # the one `make-tiny-tracks` built
    models = [qwen3, *([] if shared else [genos])]
    check_fresh([*models, *(data_dir / f"{name}.jsonl" for name in SPLITS)], overwrite=args.overwrite)
    paths = {
        "genos": genos if shared else make_tiny_genos(genos, args.seed),
        "qwen3": make_tiny_qwen3(qwen3, args.seed),
    }
    records = planted_records(args.records, n_classes=args.classes, seed=args.seed)
    n_val = n_test = len(records) // 10
    write_jsonl(data_dir / "val.jsonl", records[:n_val])
    write_jsonl(data_dir / "test.jsonl", records[n_val : n_val + n_test])
    write_jsonl(data_dir / "train.jsonl", records[n_val + n_test :])
    print(json.dumps({**{k: str(v) for k, v in paths.items()}, "data": str(data_dir)}, indent=2))


def _train(args) -> None:
    from dnallm.config import load_recipe
    from dnallm.hub import locate_models
    from dnallm.train.finetune import train

    recipe = load_recipe(args.recipe, args.overrides)
    locate_models(recipe)  # checkpoints then name the base models by absolute path
    train(recipe)


def _grpo(args) -> None:
    from dnallm.config import GRPORecipe, load_recipe
    from dnallm.train.grpo import grpo

    grpo(load_recipe(args.recipe, args.overrides, cls=GRPORecipe))


def _eval(args) -> None:
    from dnallm.eval.kegg import evaluate

    from dnallm.eval.commands import print_eval

    print_eval(
        evaluate(args.checkpoint, args.data, args.out, args.overrides, trust_remote_code=args.trust_remote_code),
        args.out,
    )


def _split(args) -> None:
    from dnallm.data.kegg import read_jsonl, split_records, write_jsonl
    from dnallm.io import check_outputs

    check_outputs(
        [args.out / f"{name}.jsonl" for name in ("train", "val", "test")], dirs=[args.out], inputs=[args.file]
    )
    splits = split_records(read_jsonl(args.file), seed=args.seed)
    for name, records in splits.items():
        write_jsonl(args.out / f"{name}.jsonl", records)
    print(json.dumps({name: len(r) for name, r in splits.items()}))


def _data(args) -> None:
    from dnallm.data.sources import prepare_dataset

    summary = prepare_dataset(
        args.name,
        args.out,
        local=args.source,
        dna_window=args.dna_window,
        seed=args.seed,
        drop_invalid=args.drop_invalid,
        overwrite=args.overwrite,
    )
    labels = summary["labels"]
    shown = ", ".join(f"{k} {v}" for k, v in list(labels.items())[:6]) + (
        f" and {len(labels) - 6} more" if len(labels) > 6 else ""
    )
    print(
        f"{summary['source']} ({summary['splits']}): " + ", ".join(f"{k} {v}" for k, v in summary["records"].items())
    )
    print(f"{len(labels)} labels: {shown}")
    ref, var = summary["reference_bp"], summary["variant_bp"]
    print(
        f"reference {ref['min']}-{ref['max']} bp (median {ref['median']:g}), variant {var['min']}-{var['max']} bp "
        f"(median {var['median']:g}), {summary['unequal_lengths']} pairs of unequal length"
    )
    if summary["dropped"]:
        print(f"{summary['dropped']} records left out (--drop-invalid), e.g. {summary['dropped_examples'][0]}")
    print(f"wrote {args.out}/train.jsonl, val.jsonl, test.jsonl, summary.json")


def _embed(args) -> None:
    from dnallm.api import embed, read_sequences, save_embeddings

    save_embeddings(args.out, None)  # a bad suffix fails before the model loads
    names, sequences = read_sequences(args.input, field=args.field)
    vectors = embed(
        args.model,
        sequences,
        layer=args.layer,
        pool=args.pool,
        batch_size=args.batch_size,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
        progress=True,
    )
    save_embeddings(args.out, vectors, names, {"model": str(args.model), "layer": str(args.layer), "pool": args.pool})
    print(json.dumps({"out": str(args.out), "sequences": len(names), "shape": list(vectors.shape)}))


def _cache_embeddings(args) -> None:
    from dnallm.config import load_recipe
    from dnallm.hub import locate_models
    from dnallm.train.embed_cache import cache_embeddings

    recipe = load_recipe(args.recipe, args.overrides)
    locate_models(recipe)
    print(json.dumps(cache_embeddings(recipe, args.data, args.rebuild), indent=2))


def _demo(args) -> None:
    """Tiny checkpoints + planted data -> train on CPU -> evaluate -> print metrics."""
    # overwrite: the same seed builds the same models and data again
    ns = argparse.Namespace(out=TINY_DIR, seed=0, records=600, classes=4, overwrite=True)
    _make_tiny(ns)
    recipe = Path(__file__).resolve().parent.parent / "recipes" / "kegg" / "tiny.yaml"
    if not recipe.is_file():
        recipe = Path("recipes/kegg/tiny.yaml")
    _train(argparse.Namespace(recipe=recipe, overrides=args.overrides))
    from dnallm.config import load_recipe

    run_dir = load_recipe(recipe, args.overrides).output_dir
    _eval(
        argparse.Namespace(
            checkpoint=run_dir,
            data=TINY_DIR / "data/planted/test.jsonl",
            out=Path(run_dir) / "eval",
            overrides=[],
            trust_remote_code=False,
        )
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dnallm", description="Fine-tune LLMs that read DNA.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("make-tiny", help="build tiny Genos-shaped and Qwen3 checkpoints and a planted-signal dataset")
    p.add_argument("--out", type=Path, default=TINY_DIR)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--records", type=int, default=600)
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--overwrite", action="store_true", help="replace models and data already in --out")
    p.set_defaults(func=_make_tiny)

    p = sub.add_parser("train", help="train from a recipe; key=value overrides any recipe field")
    p.add_argument("recipe", type=Path)
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(func=_train)

    p = sub.add_parser(
        "grpo",
        help="reinforce a fine-tuned checkpoint (grpo.init_from) with GRPO; key=value overrides any recipe field",
    )
    p.add_argument("recipe", type=Path)
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="e.g. grpo.init_from=runs/kegg-tiny grpo.group_size=8"
    )
    p.set_defaults(func=_grpo)

    p = sub.add_parser("eval", help="generate answers for a KEGG-format file and score them")
    p.add_argument("checkpoint", type=Path, help="a checkpoint-N directory or a run directory (latest checkpoint)")
    p.add_argument(
        "--data",
        type=Path,
        action="append",
        required=True,
        help="a KEGG JSONL file; repeat to score several together (val + test)",
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="directory for metrics.json, predictions.csv and the plot (confusion.png; scatter.png for eval.score=number)",
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. llm.name_or_path=/models/Qwen3-4B")
    p.set_defaults(func=_eval)

    p = sub.add_parser("split", help="split a KEGG JSONL 8:1:1 into train/val/test, stratified by disease")
    p.add_argument("file", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=42)
    p.set_defaults(func=_split)

    from dnallm.data.sources import SOURCES

    p = sub.add_parser(
        "data", help="fetch a published dataset (hub ID or local copy), clean and check it, write train/val/test JSONL"
    )
    p.add_argument("name", choices=sorted(SOURCES), help="; ".join(f"{k}: {v.hub_id}" for k, v in SOURCES.items()))
    p.add_argument(
        "--out", type=Path, required=True, help="directory for train.jsonl, val.jsonl, test.jsonl, summary.json"
    )
    p.add_argument(
        "--from", dest="source", type=Path, help="a local copy: a save_to_disk folder or a folder in the hub's layout"
    )
    p.add_argument(
        "--dna-window",
        type=int,
        default=1024,
        help="every sequence must hold this many bp (the recipes' data.dna_window)",
    )
    p.add_argument("--seed", type=int, default=42, help="seed of the stratified split, when the source has none")
    p.add_argument(
        "--drop-invalid",
        action="store_true",
        help="leave out records that fail the checks (counted) instead of stopping",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing files in --out")
    p.set_defaults(func=_data)

    p = sub.add_parser(
        "cache-embeddings", help="run the frozen DNA encoder once; training then reads encoder.cache_dir"
    )
    p.add_argument("recipe", type=Path)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. encoder.cache_dir=cache/genos1b")
    p.add_argument(
        "--data",
        action="append",
        default=[],
        help="another KEGG-format file to cache (e.g. the test split); repeatable",
    )
    p.add_argument("--rebuild", action="store_true", help="discard a stale cache and build it again")
    p.set_defaults(func=_cache_embeddings)

    p = sub.add_parser(
        "embed", help="frozen-encoder embeddings of the sequences of a FASTA or JSONL file (safetensors or npy)"
    )
    p.add_argument("input", type=Path, help="FASTA (one embedding per record) or JSONL (one per line, see --field)")
    p.add_argument(
        "--out", type=Path, required=True, help="FILE.safetensors (embeddings + record names) or FILE.npy (embeddings)"
    )
    p.add_argument("--model", default="BGI-HangzhouAI/Genos-1.2B", help="Hugging Face ID or folder of the DNA model")
    p.add_argument("--layer", type=int, default=-1, help="hidden layer (-1: last)")
    p.add_argument("--pool", choices=["mean", "max", "last"], default="mean", help="over positions")
    p.add_argument("--field", default="sequence", help="JSONL field holding the sequence, e.g. variant_sequence")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", help="cuda, cpu, ... (default: cuda if available)")
    p.add_argument(
        "--trust-remote-code", action="store_true", help="run modelling code shipped with the model (Genos needs it)"
    )
    p.set_defaults(func=_embed)

    p = sub.add_parser("demo", help="tiny end-to-end run on CPU: build, train, evaluate")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(func=_demo)

    from dnallm.eval.commands import add_commands as add_eval_commands
    from dnallm.serve.commands import add_commands as add_serve_commands

    add_eval_commands(sub)
    add_serve_commands(sub)
    cli_vcf.add_commands(sub)
    cli_tracks.add_commands(sub)
    for command in sub.choices.values():
        if any(action.dest == "checkpoint" for action in command._actions):
            command.add_argument(
                "--trust-remote-code",
                action="store_true",
                help="let the checkpoint's base models run the code they were trained with (read it first); "
                "never switched on by the checkpoint's own files",
            )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # The deepspeed launcher appends --local_rank=N; the rank also arrives in LOCAL_RANK.
    argv = [a for a in argv if not a.startswith("--local_rank")]
    if "DS_ACCELERATOR" not in os.environ and not _cuda_available():
        os.environ["DS_ACCELERATOR"] = "cpu"
    args = build_parser().parse_args(argv)
    from dnallm.io import disk_error_message
    from dnallm.train.trainer import Preempted

    try:
        args.func(args)
    except Preempted as e:
        # A scheduler's SIGTERM or a Ctrl-C: the checkpoint is saved; a status other than 0 keeps
        # `train && eval` from going on.
        print(f"dnallm {args.command}: {e}", file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:
        if os.environ.get("DNALLM_DEBUG"):
            raise
        print(f"\ndnallm {args.command}: interrupted: {INTERRUPTED.get(args.command, NOTHING_MORE)}", file=sys.stderr)
        return 130
    except _user_errors() as e:
        # Bad input is the user's to fix: one clear line, no traceback (DNALLM_DEBUG=1 shows it).
        if os.environ.get("DNALLM_DEBUG"):
            raise
        print(f"dnallm {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        # A full, read-only or foreign disk: the user's to fix too; any other OSError is a bug.
        message = disk_error_message(e)
        if message is None or os.environ.get("DNALLM_DEBUG"):
            raise
        print(f"dnallm {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


# What a Ctrl-C leaves, and how to go on (``train``: a first Ctrl-C in the loop saves; this is one
# before the loop or a second one).
_TRAINING = "the checkpoints saved before are kept; continue with train.resume_from_checkpoint=auto"
INTERRUPTED = {
    "train": _TRAINING,
    "grpo": _TRAINING,
    "train-tracks": _TRAINING,
    "demo": _TRAINING,
    "cache-embeddings": "the shards written so far are kept; run the same command again to go on from there",
    "annotate": "the batches computed so far are kept in the progress log; run the same command again to go on "
    "from there",
    "explain": "nothing was written; run it again (--record N explains one record)",
}
NOTHING_MORE = "no output was written; run it again"


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that name a bad input (KEGG and coverage data, VCFs, recipes, output paths)."""
    from dnallm.config import RecipeError
    from dnallm.data.dna import RecordError
    from dnallm.data.genome import TrackDataError
    from dnallm.data.sources import SourceError
    from dnallm.data.vcf import InputError
    from dnallm.encoders.cache import CacheError
    from dnallm.eval.progress import ProgressMismatch
    from dnallm.hub import CheckpointError, RemoteCodeNotAllowed
    from dnallm.io import OutputPathError
    from dnallm.serve.inputs import DNAInputError

    return (
        RecipeError,
        RecordError,
        TrackDataError,
        InputError,
        ProgressMismatch,
        OutputPathError,
        SourceError,
        DNAInputError,
        RemoteCodeNotAllowed,
        CheckpointError,
        CacheError,
        FileNotFoundError,
    )


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
