"""Reference / variant sequence pairs around a VCF allele, in the KEGG layout.

Convention (see docs/vcf.md):

- Alleles are trimmed to the bases that change: the shared suffix, then the shared prefix
  (the VCF anchor base of an indel) are removed, so an insertion has an empty reference
  allele and a deletion an empty variant allele. Indels are not left-aligned; normalise
  the VCF first (``bcftools norm -f ref.fa``) if it may not be.
- The KEGG layout: each sequence is ``flank`` bases of the reference left of the change,
  its allele, and ``flank`` bases right of it. An SNV gives two sequences of
  ``2 * flank + 1`` bp; an indel gives sequences of different lengths that share both
  flanks, with each allele in the middle of its sequence. The loader's ``dna_window``
  then cuts both to the same length, each centred on its own allele (``centre_window``).
- ``crop > 0`` cuts that window here already: what the model reads at ``dna_window=crop``
  (``dnallm annotate`` does this). Cropped indel pairs no longer share flanks, so the
  KEGG loader would reject them: files for the loader are written uncropped.
- Bases past a chromosome end are written as N (``edge='pad'``, counted in
  ``padded_bases``) or the allele is skipped (``edge='skip'``).
- FASTA bases other than A, C, G, T (IUPAC codes) become N; soft-masked (lower-case)
  bases are upper-cased.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

from dnallm.data.dna import BASES, centre_window
from dnallm.data.vcf import Allele, InputError

_NOT_ACGT = re.compile(f"[^{BASES}]")

DEFAULT_ANSWER = "unknown"
QUESTION_FIELDS = ("chrom", "chrom_number", "pos", "id", "ref", "alt", "gene")
# The KEGG question, with what a VCF can tell: the chromosome and, given an annotation, the gene.
DEFAULT_QUESTION = (
    "Chromosome Number: {chrom_number}\n\nGiven this context, what is the biological effect of this "
    "{gene} allele, specifically what disease does this contribute to?"
)
DEFAULT_QUESTION_NO_GENE = DEFAULT_QUESTION.replace("{gene} ", "")


@dataclass(frozen=True)
class WindowOptions:
    flank: int = 2000
    crop: int = 0  # > 0: cut each sequence to its centred `crop` bases
    edge: str = "pad"  # pad | skip
    max_n_fraction: float = 0.25

    def __post_init__(self):
        if self.edge not in ("pad", "skip"):
            raise ValueError(f"edge must be 'pad' or 'skip', got {self.edge!r}")
        if self.crop < 0 or (self.crop == 0 and self.flank < 1):
            raise ValueError(f"need flank >= 1 or crop >= 1, got flank={self.flank}, crop={self.crop}")
        if not 0.0 <= self.max_n_fraction <= 1.0:
            raise ValueError(f"max_n_fraction must be within [0, 1], got {self.max_n_fraction}")

    @property
    def flank_needed(self) -> int:
        # Any flank >= ceil(crop / 2) gives the same centred crop; this one always suffices.
        return (self.crop + 1) // 2 if self.crop else self.flank


@dataclass
class SequencePair:
    reference: str
    variant: str
    padded: int  # N bases standing for positions past a chromosome end


def trim_alleles(pos: int, ref: str, alt: str) -> tuple[int, str, str]:
    """(0-based start of the change, reference bases, variant bases) without shared ends."""
    while ref and alt and ref[-1] == alt[-1]:
        ref, alt = ref[:-1], alt[:-1]
    start = pos - 1
    while ref and alt and ref[0] == alt[0]:
        ref, alt, start = ref[1:], alt[1:], start + 1
    return start, ref, alt


def fetch_padded(fasta, contig: str, start: int, end: int) -> tuple[str, int, int]:
    """Reference bases [start, end) (0-based) with N for positions outside the contig.
    -> (sequence, N added on the left, N added on the right)"""
    length = fasta.get_reference_length(contig)
    pad_left, pad_right = max(0, -start), max(0, end - length)
    inner = fasta.fetch(contig, max(0, start), min(end, length)) if min(end, length) > max(0, start) else ""
    return "N" * pad_left + _NOT_ACGT.sub("N", inner.upper()) + "N" * pad_right, pad_left, pad_right


def _overlap(a: int, b: int, c: int, d: int) -> int:
    return max(0, min(b, d) - max(a, c))


def _crop(seq: str, pad_left: int, pad_right: int, length: int) -> tuple[str, int]:
    """``centre_window`` of ``seq``, and how many padding Ns the crop keeps."""
    start = len(seq) // 2 - length // 2
    kept = _overlap(start, start + length, 0, pad_left) + _overlap(
        start, start + length, len(seq) - pad_right, len(seq)
    )
    return centre_window(seq, length, where="window", field="sequence"), kept


def allele_pair(fasta, allele: Allele, opts: WindowOptions) -> SequencePair:
    """The reference and variant sequences of a usable allele (KEGG layout, or cropped)."""
    start, ref_bases, alt_bases = trim_alleles(allele.pos, allele.ref, allele.alt)
    flank = opts.flank_needed
    left, pad_left, _ = fetch_padded(fasta, allele.contig, start - flank, start)
    right, _, pad_right = fetch_padded(fasta, allele.contig, start + len(ref_bases), start + len(ref_bases) + flank)
    # REF matched the FASTA, so it may hold the same IUPAC codes: N, as in the flanks.
    reference, variant = left + _NOT_ACGT.sub("N", ref_bases) + right, left + alt_bases + right
    if not opts.crop:
        return SequencePair(reference, variant, pad_left + pad_right)
    reference, ref_pad = _crop(reference, pad_left, pad_right, opts.crop)
    variant, var_pad = _crop(variant, pad_left, pad_right, opts.crop)
    return SequencePair(reference, variant, max(ref_pad, var_pad))


def screen_pair(pair: SequencePair, opts: WindowOptions) -> tuple[str, str]:
    """(skip reason, detail) for a pair too close to a chromosome end or too N-rich."""
    if pair.padded and opts.edge == "skip":
        return "chromosome_end", f"{pair.padded} bases past a chromosome end"
    n_fraction = max(s.count("N") / len(s) for s in (pair.reference, pair.variant))
    if n_fraction > opts.max_n_fraction:
        return "n_rich", f"{n_fraction:.0%} N (max_n_fraction={opts.max_n_fraction})"
    return "", ""


def gene_position(allele: Allele) -> int:
    """1-based position used to look up the gene: the first changed base."""
    return trim_alleles(allele.pos, allele.ref, allele.alt)[0] + 1


def check_question_template(template: str) -> None:
    try:
        used = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as e:
        raise InputError(f"question template {template!r} is malformed: {e}") from None
    unknown = sorted(used - set(QUESTION_FIELDS))
    if unknown:
        raise InputError(
            f"question template uses unknown field(s) {', '.join('{' + u + '}' for u in unknown)}; "
            f"available: {', '.join('{' + f + '}' for f in QUESTION_FIELDS)}"
        )


def render_question(template: str | None, allele: Allele, gene: str) -> str:
    """The question for one allele; ``template=None`` gives the KEGG-style default."""
    if template is None:
        template = DEFAULT_QUESTION if gene else DEFAULT_QUESTION_NO_GENE
    chrom_number = allele.chrom[3:] if allele.chrom.startswith("chr") else allele.chrom
    return template.format(
        chrom=allele.chrom,
        chrom_number=chrom_number,
        pos=allele.pos,
        id=allele.id,
        ref=allele.ref,
        alt=allele.alt,
        gene=gene,
    )


def kegg_record(allele: Allele, pair: SequencePair, question: str, answer: str, gene: str) -> dict:
    """A KEGG-format record (loads with ``dnallm.data.kegg.load_examples``) with the
    variant's coordinates kept alongside."""
    return {
        "question": question,
        "answer": answer,
        "reasoning": "",
        "reference_sequence": pair.reference,
        "variant_sequence": pair.variant,
        "variant_id": allele.variant_id,
        "chrom": allele.chrom,
        "pos": allele.pos,
        "id": allele.id,
        "ref": allele.ref,
        "alt": allele.alt,
        "gene": gene,
        "padded_bases": pair.padded,
        "record": allele.record,
        "alt_index": allele.alt_index,
    }


def window_genome_start(record: dict, window: int) -> tuple[str, int] | None:
    """(contig, 0-based genome position of the first base) of the reference window that
    ``dna_window=window`` cuts from a record ``dnallm windows`` wrote; None for a record
    without coordinates (``chrom``, ``pos``, ``ref``, ``alt``).

    The reference sequence is ``flank`` bases, the trimmed reference allele, ``flank``
    bases (see ``allele_pair``); its window starts ``len // 2 - window // 2`` bases in
    (``centre_window``). Bases past a chromosome end map outside the contig."""
    if not all(record.get(key) not in (None, "") for key in ("chrom", "pos", "ref", "alt")):
        return None
    start, ref_bases, _ = trim_alleles(int(record["pos"]), str(record["ref"]), str(record["alt"]))
    length = len(record["reference_sequence"])
    flank = (length - len(ref_bases)) // 2
    return str(record["chrom"]), start - flank + length // 2 - window // 2
