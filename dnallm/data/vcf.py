"""Variants from a VCF, checked against a reference FASTA: one allele per ALT.

``VariantReader`` streams a VCF (plain, bgzipped or BCF; sorted or not, no index needed)
and yields one ``Allele`` per ALT of every record, in file order. Alleles that cannot be
turned into sequence windows carry a ``skip`` reason instead of being dropped silently,
so that every ALT of the input can be accounted for in a report.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pysam

from dnallm.data.dna import ALPHABET, CONTIG_RULES, rename_contig
from dnallm.data.genome import stale_index_message

# Why an ALT allele gets no window. Symbolic and breakend ALTs are valid VCF, just not
# sequence we can spell out; the others point at a problem with the inputs.
SKIP_REASONS = {
    "no_alt": "the record has no ALT allele ('.')",
    "symbolic": "symbolic ALT (<DEL>, <INS>, ... or '*' for an overlapping deletion)",
    "breakend": "breakend ALT (e.g. G]chr2:321]) describing a rearrangement",
    "invalid_alt": "ALT holds characters other than A, C, G, T, N",
    "same_as_ref": "ALT equals REF",
    "position_zero": "POS 0, which VCF allows for a telomere: there is no reference base to centre a window on",
    "missing_contig": "the contig is not in the reference FASTA",
    "ref_mismatch": "REF differs from the reference FASTA at that position",
    "chromosome_end": "the window runs past a chromosome end (edge=skip)",
    "n_rich": "the window holds more N than max_n_fraction allows",
    "allele_too_long": "both alleles are longer than twice the flank, so their sequences share no flanks",
}

_BASES = re.compile(f"^[{ALPHABET}]+$")


class InputError(ValueError):
    """An input file cannot be used as given; the message names it and says how to fix it."""


@dataclass
class Allele:
    """One ALT of one VCF record. ``record`` and ``alt_index`` are 1-based; ``skip`` is a
    key of ``SKIP_REASONS`` ('' when the allele is usable) and ``detail`` says more."""

    record: int
    alt_index: int
    chrom: str
    pos: int
    id: str
    ref: str
    alt: str
    contig: str = ""  # the FASTA contig this chromosome maps to
    skip: str = ""
    detail: str = ""

    @property
    def variant_id(self) -> str:
        return f"{self.chrom}:{self.pos}:{self.ref}:{self.alt}"

    def where(self, vcf: str | Path) -> str:
        return f"{vcf}: record {self.record} ({self.chrom}:{self.pos} {self.ref}>{self.alt})"


# ---- opening inputs ------------------------------------------------------------------


@contextmanager
def quiet_htslib():
    """Silence htslib's stderr chatter (e.g. 'Could not retrieve index file' when an index
    is simply not needed); problems that matter are reported by this module instead."""
    old = pysam.set_verbosity(0)
    try:
        yield
    finally:
        pysam.set_verbosity(old)


def gzip_kind(path: Path) -> str:
    """'bgzf', 'gzip' or '' (not compressed), from the first bytes of the file."""
    with path.open("rb") as f:
        head = f.read(18)
    if head[:2] != b"\x1f\x8b":
        return ""
    has_extra = len(head) >= 14 and head[3] & 4
    return "bgzf" if has_extra and head[12:14] == b"BC" else "gzip"


def _must_exist(path: Path, what: str) -> None:
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")


def open_vcf(path: str | Path) -> pysam.VariantFile:
    path = Path(path)
    _must_exist(path, "VCF")
    if gzip_kind(path) == "gzip":
        raise InputError(
            f"{path} is compressed with plain gzip, which htslib cannot read as VCF; "
            f"recompress it with bgzip: gunzip -c {path} | bgzip > {path.with_suffix('')}.bgz.gz"
        )
    try:
        with quiet_htslib():
            vcf = pysam.VariantFile(str(path))
    except (ValueError, OSError) as e:
        raise InputError(f"{path}: not a readable VCF or BCF file ({e})") from None
    if "END" not in vcf.header.info:
        # SV and gVCF files often use END without declaring it: htslib would read it as a String and
        # fail writing it back. VCF reserves the key with this meaning, so the header is completed.
        vcf.header.add_line(END_LINE)
    return vcf


# The INFO key VCF reserves for a record's end position (pysam writes it for symbolic and breakend ALTs).
END_LINE = '##INFO=<ID=END,Number=1,Type=Integer,Description="End position of the variant described in this record">'


def open_fasta(path: str | Path) -> pysam.FastaFile:
    """Open a plain or bgzipped FASTA, building its ``.fai`` index (and ``.gzi``) if missing."""
    path = Path(path)
    _must_exist(path, "reference FASTA")
    if gzip_kind(path) == "gzip":
        raise InputError(
            f"{path} is compressed with plain gzip, which cannot be indexed for random access; "
            f"decompress it (gunzip {path}) or recompress it with bgzip (gunzip -c {path} | bgzip > {path})"
        )
    stale = stale_index_message(path)
    if stale:
        raise InputError(stale)
    try:
        with quiet_htslib():
            return pysam.FastaFile(str(path))
    except (ValueError, OSError) as e:
        fai = Path(f"{path}.fai")
        if not fai.is_file():
            raise InputError(
                f"{path}: could not open or index the FASTA ({e}); the index {fai} is missing and could not "
                f"be written. Index it where you can write (samtools faidx {path}) or copy the FASTA to a "
                f"writable folder."
            ) from None
        raise InputError(
            f"{path}: could not open the FASTA with its index {fai} ({e}); a stale index? delete {fai} and rerun"
        ) from None


def count_alleles(path: str | Path) -> int:
    """ALT alleles in a VCF (a record without ALT counts as one), for progress bars."""
    with quiet_htslib(), open_vcf(path) as vcf:
        return sum(len(rec.alts or ".") for rec in vcf)


# ---- contig names --------------------------------------------------------------------


def read_contig_map(path: Path) -> dict[str, str]:
    """Two whitespace-separated columns per line: VCF name, FASTA name ('#' comments)."""
    mapping = {}
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.split()
        if len(cols) != 2:
            raise InputError(f"{path}:{lineno}: expected two columns (VCF contig, FASTA contig), got {len(cols)}")
        mapping[cols[0]] = cols[1]
    if not mapping:
        raise InputError(f"{path}: contig map is empty")
    return mapping


def contig_map_file(spec: str) -> Path | None:
    """The two-column map file that ``--contig-names`` names, if it names one."""
    return None if spec in CONTIG_RULES else Path(spec)


def contig_namer(spec: str) -> Callable[[str], str]:
    """VCF contig name -> FASTA contig name: a naming rule applied to the VCF's names
    (``dnallm.data.dna.rename_contig``: add_chr 1 -> chr1, MT -> chrM; strip_chr chr1 -> 1,
    chrM -> MT; same) or a two-column file (unlisted names kept)."""
    if spec in CONTIG_RULES:
        return lambda name: rename_contig(name, spec)
    path = Path(spec)
    if not path.is_file():
        raise InputError(
            f"contig naming must be one of {', '.join(CONTIG_RULES)} or a two-column file; {spec!r} is neither"
        )
    mapping = read_contig_map(path)
    return lambda name: mapping.get(name, name)


def other_naming(name: str, fasta_contigs: set[str]) -> tuple[str, str] | None:
    """(rule, FASTA name) when another naming rule would find ``name`` in the FASTA."""
    for rule in CONTIG_RULES[1:]:
        if rename_contig(name, rule) != name and rename_contig(name, rule) in fasta_contigs:
            return rule, rename_contig(name, rule)
    return None


# ---- alleles -------------------------------------------------------------------------


def classify_alt(ref: str, alt: str) -> tuple[str, str]:
    """(skip reason, detail) for an ALT string; ('', '') when it spells a sequence."""
    if alt == "*" or alt.startswith("<"):
        return "symbolic", alt
    if "[" in alt or "]" in alt or alt.startswith(".") or alt.endswith("."):
        return "breakend", alt
    if not _BASES.match(alt):
        return "invalid_alt", alt
    if alt == ref:
        return "same_as_ref", alt
    return "", ""


def read_records(vcf: pysam.VariantFile, path: Path) -> Iterator[tuple[int, pysam.VariantRecord]]:
    """(1-based record number, record); a record htslib cannot parse raises an error naming it."""
    records, number = iter(vcf), 0
    while True:
        try:
            rec = next(records)
        except StopIteration:
            return
        except (ValueError, OSError) as e:
            raise InputError(
                f"{path}: record {number + 1} cannot be read ({e}); a record needs 8 or more tab-separated "
                f"columns and an integer POS (bcftools view {path} > /dev/null shows htslib's reason)"
            ) from None
        number += 1
        yield number, rec


class VariantReader:
    """Stream the alleles of ``vcf_path``, each checked against ``fasta``.

    ``strict=True`` raises on a REF mismatch or a contig missing from the FASTA instead
    of skipping the record. A contig that would match under another naming always raises:
    mixing ``chr1`` and ``1`` is a setting to choose, never something to guess.
    ``counts`` holds records, alleles and skips by reason once iteration is done;
    ``unsorted`` names the first record out of order ('' for a sorted file).
    """

    def __init__(
        self,
        vcf_path: str | Path,
        fasta: pysam.FastaFile,
        fasta_path: str | Path,
        *,
        contig_names: str = "same",
        strict: bool = False,
    ):
        self.vcf_path = Path(vcf_path)
        self.fasta = fasta
        self.fasta_path = Path(fasta_path)
        self.rename = contig_namer(contig_names)
        self.strict = strict
        self.fasta_contigs = set(fasta.references)
        self.counts: Counter = Counter()
        self.unsorted = ""
        self.missing_contigs: Counter = Counter()
        self._seen: set[str] = set()  # contigs met so far, to notice a return to one
        self._last = ("", 0)

    def __iter__(self) -> Iterator[Allele]:
        self.counts.clear()
        self.missing_contigs.clear()
        self.unsorted, self._seen, self._last = "", set(), ("", 0)
        with quiet_htslib(), open_vcf(self.vcf_path) as vcf:
            for number, rec in read_records(vcf, self.vcf_path):
                self.counts["records"] += 1
                self._track_order(number, rec)
                for allele in self._alleles(number, rec):
                    self.counts["alleles"] += 1
                    if allele.skip:
                        self.counts[allele.skip] += 1
                    yield allele
        self._check_some_contig_matched()

    def _track_order(self, number: int, rec) -> None:
        last_chrom, last_pos = self._last
        if rec.chrom != last_chrom:
            if rec.chrom in self._seen and not self.unsorted:
                self.unsorted = f"record {number} ({rec.chrom}:{rec.pos}) returns to {rec.chrom} after {last_chrom}"
            self._seen.add(rec.chrom)
        elif rec.pos < last_pos and not self.unsorted:
            self.unsorted = f"record {number} ({rec.chrom}:{rec.pos}) comes after {last_chrom}:{last_pos}"
        self._last = (rec.chrom, rec.pos)

    def _alleles(self, number: int, rec) -> Iterator[Allele]:
        ref = rec.ref.upper()
        base = dict(record=number, chrom=rec.chrom, pos=rec.pos, id=rec.id or ".", ref=ref)
        if not rec.alts:
            yield Allele(alt_index=0, alt=".", skip="no_alt", **base)
            return
        contig = self.rename(rec.chrom)
        record_skip, detail = self._check_locus(number, rec, ref, contig)
        for index, alt in enumerate(rec.alts, start=1):
            # Bases are case-insensitive; symbolic and breakend ALTs keep their spelling.
            alt = alt.upper() if _BASES.match(alt.upper()) else alt
            allele = Allele(alt_index=index, alt=alt, contig=contig, **base)
            allele.skip, allele.detail = (record_skip, detail) if record_skip else classify_alt(ref, allele.alt)
            yield allele

    def _check_locus(self, number: int, rec, ref: str, contig: str) -> tuple[str, str]:
        """('', '') when the contig exists and REF matches it; else a skip reason (or raise)."""
        where = f"{self.vcf_path}: record {number} ({rec.chrom}:{rec.pos})"
        if rec.pos < 1:
            return "position_zero", f"POS {rec.pos} (telomere) on {rec.chrom}"
        if contig not in self.fasta_contigs:
            return self._missing_contig(where, rec.chrom, contig)
        length = self.fasta.get_reference_length(contig)
        start, end = rec.pos - 1, rec.pos - 1 + len(ref)
        found = self.fasta.fetch(contig, start, min(end, length)).upper() if start < length else ""
        if found == ref:
            return "", ""
        beyond = f" (runs past the end of {contig}, {length:,} bp)" if end > length else ""
        detail = f"VCF REF {ref!r}, FASTA {found!r} at {contig}:{rec.pos}{beyond}"
        if self.strict:
            raise InputError(f"{where}: REF does not match {self.fasta_path}: {detail}")
        return "ref_mismatch", detail

    def _missing_contig(self, where: str, chrom: str, contig: str) -> tuple[str, str]:
        hint = other_naming(contig, self.fasta_contigs)
        if hint:
            raise InputError(
                f"{where}: contig {contig!r} is not in {self.fasta_path}, which names it {hint[1]!r}; "
                f"choose the naming explicitly with --contig-names {hint[0]} (or a two-column map file)"
            )
        self.missing_contigs[chrom] += 1
        detail = f"contig {contig!r} not in {self.fasta_path}"
        if self.strict:
            raise InputError(f"{where}: {detail} (its contigs: {_few(self.fasta.references)})")
        return "missing_contig", detail

    def _check_some_contig_matched(self) -> None:
        matched = self.counts["alleles"] - self.counts["no_alt"] - self.counts["missing_contig"]
        if self.missing_contigs and matched == 0:
            raise InputError(
                f"none of the contigs of {self.vcf_path} ({_few(self.missing_contigs)}) is in {self.fasta_path} "
                f"({_few(self.fasta.references)}); is it the right reference? Map names with --contig-names "
                f"FILE (two columns: VCF contig, FASTA contig)"
            )


def _few(names, n: int = 5) -> str:
    names = list(names)
    return ", ".join(names[:n]) + (f", ... ({len(names)} in all)" if len(names) > n else "")


def skipped_report_line(allele: Allele) -> str:
    cols = [
        allele.record,
        allele.alt_index,
        allele.chrom,
        allele.pos,
        allele.id,
        allele.ref,
        allele.alt,
        allele.skip,
        allele.detail,
    ]
    return "\t".join(str(c) for c in cols) + "\n"


SKIPPED_REPORT_HEADER = "record\talt_index\tchrom\tpos\tid\tref\talt\treason\tdetail\n"
