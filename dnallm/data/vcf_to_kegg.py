"""``dnallm windows``: VCF + reference FASTA -> KEGG-format JSONL, and a report of what was skipped."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from tqdm.auto import tqdm

from dnallm.data.dna import RecordError, check_pair
from dnallm.data.genes import GeneIndex
from dnallm.data.vcf import (
    SKIPPED_REPORT_HEADER,
    Allele,
    InputError,
    VariantReader,
    contig_map_file,
    open_fasta,
    skipped_report_line,
)
from dnallm.data.windows import (
    DEFAULT_ANSWER,
    SequencePair,
    WindowOptions,
    allele_pair,
    check_question_template,
    gene_position,
    kegg_record,
    render_question,
    screen_pair,
)
from dnallm.io import atomic_open, check_outputs


def prepared_alleles(
    reader: VariantReader,
    opts: WindowOptions,
    *,
    genes: GeneIndex | None = None,
    question_template: str | None = None,
    require_shared_flanks: bool = True,
) -> Iterator[tuple[Allele, SequencePair | None, str, str]]:
    """Every allele of ``reader`` in file order -> (allele, pair, gene, question).

    ``pair`` is None when the allele is skipped (``allele.skip`` says why).
    ``require_shared_flanks`` skips pairs that the KEGG loader's ``check_pair`` would
    reject; uncropped, that takes two alleles both longer than twice the flank.
    """
    for allele in reader:
        if allele.skip:
            yield allele, None, "", ""
            continue
        pair = allele_pair(reader.fasta, allele, opts)
        allele.skip, allele.detail = screen_pair(pair, opts)
        if not allele.skip and require_shared_flanks:
            try:
                check_pair(pair.reference, pair.variant, where=allele.variant_id)
            except RecordError as e:
                allele.skip, allele.detail = "allele_too_long", str(e).split(": ", 1)[1]
        if allele.skip:
            yield allele, None, "", ""
            continue
        gene = "/".join(genes.names_at(allele.contig, gene_position(allele))) if genes else ""
        yield allele, pair, gene, render_question(question_template, allele, gene)


def skipped_report_path(out: Path) -> Path:
    return out.with_name(f"{out.name.removesuffix('.jsonl')}.skipped.tsv")


def load_genes(gtf: str | Path | None, fasta, fasta_path) -> GeneIndex | None:
    if not gtf:
        return None
    genes = GeneIndex.from_file(gtf)
    genes.check_contigs(fasta.references, fasta_path)
    return genes


def vcf_to_kegg(
    vcf: str | Path,
    fasta: str | Path,
    out: str | Path,
    *,
    opts: WindowOptions = WindowOptions(),
    contig_names: str = "same",
    strict: bool = False,
    gtf: str | Path | None = None,
    question_template: str | None = None,
    answer: str = DEFAULT_ANSWER,
) -> dict:
    """Write one KEGG-format record per usable ALT allele to ``out`` and every skipped
    allele, with its reason, to ``<out>.skipped.tsv``. Both are written atomically.
    Returns a summary (counts by skip reason, first out-of-order record, paths)."""
    out = Path(out)
    report = skipped_report_path(out)
    check_outputs([out, report], inputs=[vcf, fasta, gtf, contig_map_file(contig_names)])
    if opts.crop:
        raise ValueError(
            "files for the KEGG loader hold uncropped sequences (crop=0); its dna_window does the cropping"
        )
    if question_template is not None:
        check_question_template(question_template)
    if not answer.strip():
        raise ValueError("answer placeholder must be non-empty (the KEGG loader rejects empty answers)")
    reference = open_fasta(fasta)
    genes = load_genes(gtf, reference, fasta)
    reader = VariantReader(vcf, reference, fasta, contig_names=contig_names, strict=strict)
    skipped: Counter = Counter()
    written, first_skips = 0, []
    with atomic_open(out) as records, atomic_open(report) as skips:
        skips.write(SKIPPED_REPORT_HEADER)
        alleles = prepared_alleles(reader, opts, genes=genes, question_template=question_template)
        for allele, pair, gene, question in tqdm(alleles, desc="windows", unit="allele"):
            if pair is None:
                skipped[allele.skip] += 1
                skips.write(skipped_report_line(allele))
                if len(first_skips) < 3:
                    first_skips.append(f"{allele.where(vcf)}: {allele.skip}: {allele.detail}")
                continue
            records.write(json.dumps(kegg_record(allele, pair, question, answer, gene)) + "\n")
            written += 1
        if written == 0:
            raise InputError(
                f"{vcf}: no usable ALT allele ({_counts_text(skipped)}); nothing written. First skipped:\n"
                + "\n".join(first_skips)
            )
    return {
        "out": str(out),
        "skipped_report": str(report),
        "records": reader.counts["records"],
        "alleles": reader.counts["alleles"],
        "written": written,
        "skipped": dict(sorted(skipped.items())),
        "unsorted": reader.unsorted or None,
    }


def _counts_text(counts: Counter) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items())) or "the VCF has no records"
