"""Gene models from GTF or GFF3: each gene's exons (union over its transcripts) and strand."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dnallm.data.genes import open_text, parse_attributes
from dnallm.data.dna import fasta_contig
from dnallm.data.genome import Region, TrackDataError


@dataclass
class Gene:
    gene_id: str
    name: str
    chrom: str
    strand: str
    exons: list[tuple[int, int]] = field(default_factory=list)  # merged, sorted, 0-based half-open

    @property
    def start(self) -> int:
        return self.exons[0][0]

    @property
    def end(self) -> int:
        return self.exons[-1][1]

    def inside(self, region: Region) -> bool:
        return self.chrom == region.chrom and region.start <= self.start and self.end <= region.end


def _merge(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[list[int]] = []
    for s, e in sorted(intervals):
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return [(s, e) for s, e in merged]


def read_genes(path: str | Path, contig_rule: str = "same") -> list[Gene]:
    """Genes with at least one exon, contigs renamed to the FASTA's (``contig_rule`` maps FASTA -> GTF names).

    GTF: exons carry ``gene_id``. GFF3: exons name a transcript as ``Parent``, whose own
    ``Parent`` is the gene. Genes on ``.`` or ``?`` strands are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise TrackDataError(f"gene annotation not found: {path}")
    gff3 = ".gff" in path.name
    exons: dict[str, list] = {}
    info: dict[str, tuple] = {}
    parent_of: dict[str, str] = {}
    names: dict[str, str] = {}
    with open_text(path) as f:
        for n, line in enumerate(f, start=1):
            if line.startswith("#") or not line.strip():
                continue
            cols = line.rstrip("\n").split("\t")
            if len(cols) != 9:
                raise TrackDataError(f"{path}:{n}: expected 9 tab-separated columns, got {len(cols)}")
            chrom, _, feature, start, end, _, strand, _, attr_text = cols
            attrs = parse_attributes(attr_text)
            if gff3 and "ID" in attrs:
                parent_of[attrs["ID"]] = attrs.get("Parent", "").split(",")[0]
                names[attrs["ID"]] = attrs.get("gene_name") or attrs.get("Name") or attrs["ID"]
            if feature != "exon":
                continue
            try:
                interval = (int(start) - 1, int(end))  # 1-based inclusive -> 0-based half-open
            except ValueError:
                raise TrackDataError(f"{path}:{n}: start/end {start!r}, {end!r} are not integers") from None
            for key in attrs.get("Parent", "").split(",") if gff3 else [attrs.get("gene_id", "")]:
                if not key:
                    raise TrackDataError(f"{path}:{n}: exon without {'Parent' if gff3 else 'gene_id'}")
                exons.setdefault(key, []).append(interval)
                info[key] = (chrom, strand, attrs.get("gene_name", key))
    genes: dict[str, Gene] = {}
    for key, intervals in exons.items():
        chrom, strand, name = info[key]
        gene_id = key
        if gff3:  # exon -> transcript -> gene
            while parent_of.get(gene_id):
                gene_id = parent_of[gene_id]
            name = names.get(gene_id, gene_id)
        if strand not in "+-" or not strand:
            continue
        gene = genes.setdefault(gene_id, Gene(gene_id, name, fasta_contig(chrom, contig_rule), strand))
        gene.exons = _merge(gene.exons + intervals)
    return sorted(genes.values(), key=lambda g: (g.chrom, g.start))
