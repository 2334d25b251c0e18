"""Gene names at a genomic position, from a GTF or GFF3 annotation (plain or gzipped).

Only 'gene' features are read (and '*_gene' types such as Ensembl's 'ncRNA_gene').
Chromosome names are matched ignoring a 'chr' prefix (chr1 = 1, chrM = MT): annotations
from GENCODE and Ensembl name the same chromosomes differently, and a gene name in a
question is harmless to look up either way.
"""

from __future__ import annotations

import bisect
import gzip
import re
from collections import defaultdict
from pathlib import Path

from dnallm.data.dna import RecordError, contig_key

_GTF_ATTR = re.compile(r'(\S+)\s+"([^"]*)"')
# Attribute keys holding a readable gene name, best first (GTF and GFF3 spellings).
NAME_KEYS = ("gene_name", "Name", "gene", "gene_id", "ID")


def parse_attributes(text: str) -> dict[str, str]:
    """GTF (``key "value";``) or GFF3 (``key=value;``) attributes -> dict."""
    if "=" in text and '"' not in text.split("=", 1)[0]:
        pairs = (item.split("=", 1) for item in text.strip().strip(";").split(";") if "=" in item)
        return {k.strip(): v.strip() for k, v in pairs}
    return dict(_GTF_ATTR.findall(text))


def open_text(path: Path):
    with path.open("rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rt", encoding="utf-8") if gzipped else path.open(encoding="utf-8")


class GeneIndex:
    """``names_at(contig, pos)`` -> names of the genes covering a 1-based position."""

    def __init__(self, genes: dict[str, list[tuple[int, int, str]]], source: str = ""):
        self.source = source
        self._starts: dict[str, list[int]] = {}
        self._genes: dict[str, list[tuple[int, int, str]]] = {}
        self._max_end: dict[str, list[int]] = {}
        for contig, items in genes.items():
            items = sorted(items)
            self._genes[contig] = items
            self._starts[contig] = [start for start, _, _ in items]
            running, max_end = 0, []
            for _, end, _ in items:
                running = max(running, end)
                max_end.append(running)
            # max_end[i]: the furthest end among genes 0..i, so a scan leftwards can stop
            # as soon as no earlier gene reaches the position.
            self._max_end[contig] = max_end

    @classmethod
    def from_file(cls, path: str | Path) -> "GeneIndex":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"gene annotation not found: {path}")
        genes: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
        with open_text(path) as f:
            for lineno, line in enumerate(f, start=1):
                if line.startswith("##FASTA"):
                    break
                if not line.strip() or line.startswith("#"):
                    continue
                gene = _gene_from_line(line, f"{path}:{lineno}")
                if gene:
                    genes[contig_key(gene[0])].append(gene[1:])
        if not genes:
            raise RecordError(f"{path}: no 'gene' features found; is it a GTF or GFF3 file?")
        return cls(dict(genes), str(path))

    @property
    def contigs(self) -> set[str]:
        return set(self._genes)

    def names_at(self, contig: str, pos: int) -> list[str]:
        key = contig_key(contig)
        if key not in self._genes:
            return []
        genes, max_end = self._genes[key], self._max_end[key]
        found = set()
        i = bisect.bisect_right(self._starts[key], pos) - 1
        while i >= 0 and max_end[i] >= pos:
            start, end, name = genes[i]
            if end >= pos:
                found.add(name)
            i -= 1
        return sorted(found)

    def check_contigs(self, fasta_contigs, fasta_path) -> None:
        """Fail early when the annotation and the reference share no chromosome."""
        if not self.contigs & {contig_key(c) for c in fasta_contigs}:
            raise RecordError(
                f"{self.source}: none of its chromosomes ({', '.join(sorted(self.contigs)[:5])}) is in "
                f"{fasta_path} ({', '.join(list(fasta_contigs)[:5])}); is it the annotation of this assembly?"
            )


def _gene_from_line(line: str, where: str) -> tuple[str, int, int, str] | None:
    """(contig, start, end, name) for a gene feature line, None for other features."""
    cols = line.rstrip("\n").split("\t")
    if len(cols) != 9:
        raise RecordError(f"{where}: expected 9 tab-separated columns (GTF/GFF3), got {len(cols)}")
    feature = cols[2]
    if feature != "gene" and not feature.endswith("_gene"):
        return None
    try:
        start, end = int(cols[3]), int(cols[4])
    except ValueError:
        raise RecordError(f"{where}: start/end must be integers, got {cols[3]!r}, {cols[4]!r}") from None
    attrs = parse_attributes(cols[8])
    name = next((attrs[k] for k in NAME_KEYS if attrs.get(k)), "")
    if not name:
        raise RecordError(f"{where}: gene feature without a name (none of {', '.join(NAME_KEYS)})")
    return cols[0], start, end, name
