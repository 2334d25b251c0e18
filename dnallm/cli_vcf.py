"""``dnallm windows`` and ``dnallm annotate``: from a VCF and a reference FASTA to answers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _add_variant_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--vcf", type=Path, required=True, help="VCF or BCF, plain or bgzipped; need not be sorted or indexed"
    )
    p.add_argument(
        "--fasta", type=Path, required=True, help="reference FASTA, plain or bgzipped; a missing .fai index is built"
    )
    p.add_argument(
        "--contig-names",
        default="same",
        metavar="same|add_chr|strip_chr|FILE",
        help="how VCF contig names map to FASTA names: same (default), add_chr (1 -> chr1, MT -> chrM), "
        "strip_chr (chr1 -> 1, chrM -> MT), or a two-column file (VCF name, FASTA name)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="fail on a REF mismatch or a contig missing from the FASTA instead of skipping it",
    )
    p.add_argument("--gtf", type=Path, help="GTF or GFF3 (may be gzipped): names the gene in the question")
    p.add_argument(
        "--question",
        dest="question_template",
        metavar="TEMPLATE",
        help="question text with {chrom} {chrom_number} {pos} {id} {ref} {alt} {gene}; default: the KEGG question",
    )
    p.add_argument(
        "--max-n-fraction", type=float, default=0.25, help="skip windows with more N than this (default 0.25)"
    )
    p.add_argument(
        "--edge",
        choices=("pad", "skip"),
        default="pad",
        help="near a chromosome end: pad the window with N (default) or skip the variant",
    )


def _windows(args) -> None:
    from dnallm.data.vcf_to_kegg import vcf_to_kegg
    from dnallm.data.windows import DEFAULT_ANSWER, WindowOptions

    opts = WindowOptions(flank=args.flank, edge=args.edge, max_n_fraction=args.max_n_fraction)
    summary = vcf_to_kegg(
        args.vcf,
        args.fasta,
        args.out,
        opts=opts,
        contig_names=args.contig_names,
        strict=args.strict,
        gtf=args.gtf,
        question_template=args.question_template,
        answer=args.answer or DEFAULT_ANSWER,
    )
    print(json.dumps(summary, indent=2))


def _annotate(args) -> None:
    from dnallm.eval.annotate import annotate

    summary = annotate(
        args.checkpoint,
        args.vcf,
        args.fasta,
        args.out,
        tsv=args.tsv,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        contig_names=args.contig_names,
        strict=args.strict,
        gtf=args.gtf,
        question_template=args.question_template,
        max_n_fraction=args.max_n_fraction,
        edge=args.edge,
        overrides=args.overrides,
        stop_after=args.stop_after,
        trust_remote_code=args.trust_remote_code,
    )
    print(json.dumps(summary, indent=2))


def add_commands(sub) -> None:
    p = sub.add_parser("windows", help="VCF + reference FASTA -> KEGG-format JSONL of reference/variant sequences")
    _add_variant_options(p)
    p.add_argument("--out", type=Path, required=True, help="JSONL to write; skipped alleles go to OUT.skipped.tsv")
    p.add_argument(
        "--flank",
        type=int,
        default=2000,
        help="reference bases each side of the allele (KEGG layout, default 2000); "
        "training's data.dna_window then cuts both sequences to one length",
    )
    p.add_argument("--answer", help="answer field of every record (default: 'unknown')")
    p.set_defaults(func=_windows)

    p = sub.add_parser("annotate", help="a checkpoint's answer for every variant of a VCF, as INFO fields and a TSV")
    p.add_argument("checkpoint", type=Path, help="a checkpoint-N directory or a run directory (latest checkpoint)")
    _add_variant_options(p)
    p.add_argument("--out", type=Path, required=True, help="annotated VCF to write (.vcf or .vcf.gz)")
    p.add_argument(
        "--tsv", type=Path, help="one row per ALT allele (default: OUT with .tsv in place of .vcf or .vcf.gz)"
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=0,
        help="alleles per generation batch (default: the recipe's eval.batch_size)",
    )
    p.add_argument("--max-new-tokens", type=int, default=0, help="default: the recipe's eval.max_new_tokens")
    p.add_argument(
        "--stop-after",
        type=int,
        metavar="N",
        help="(testing) stop after computing N batches, as a crash would; rerun without it to resume",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="recipe overrides, right after CHECKPOINT, e.g. llm.name_or_path=/models/Qwen3-4B",
    )
    p.set_defaults(func=_annotate)
