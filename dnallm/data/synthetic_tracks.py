"""A synthetic genome whose RNA-seq coverage is a planted function of sequence.

For tests and the tiny recipe: a FASTA, one bigWig per (cell type, strand), a GTF of
the planted genes and a track sheet, small enough to train on in minutes on a CPU.

The planted rule. Background is uniform random sequence. Each gene has 2-3 exons
separated by background introns. Read on the gene's own strand, exons are purine-only:
``B`` genes 80 % A / 20 % G, ``NK`` genes 20 % A / 80 % G; a ``-`` gene's exons are
written reverse-complemented (pyrimidine-only on the forward strand). Coverage is
Poisson noise around 40 (B) or 20 (NK) in exons and 3 in introns, on the track of the
gene's cell type and strand only; elsewhere no value (reads as 0). The signal is
strand- and cell-type-specific and consistent under reverse complement.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from dnallm.data.bigwig_writer import BigWigWriter
from dnallm.data.dna import rename_contig
from dnallm.io import atomic_write_text

CELL_LEVELS = {"B": 40.0, "NK": 20.0}
INTRON_LEVEL = 3.0
A_FRACTION = {"B": 0.8, "NK": 0.2}
TRACKS = [("B_plus", "B", "+"), ("B_minus", "B", "-"), ("NK_plus", "NK", "+"), ("NK_minus", "NK", "-")]
_BASES = np.frombuffer(b"ACGT", dtype=np.uint8)
_COMP = bytes.maketrans(b"ACGT", b"TGCA")


def _exon(rng: np.random.Generator, length: int, cell: str, strand: str) -> bytes:
    seq = np.where(rng.random(length) < A_FRACTION[cell], ord("A"), ord("G")).astype(np.uint8).tobytes()
    return seq if strand == "+" else seq.translate(_COMP)[::-1]


def _plant_chrom(rng: np.random.Generator, chrom: str, length: int, n_run: tuple[int, int] | None):
    """-> (sequence bytes, coverage (length, 4), GTF lines)."""
    seq = bytearray(rng.choice(_BASES, size=length).tobytes())
    cover = np.zeros((length, len(TRACKS)))
    gtf, n_genes = [], 0
    pos = int(rng.integers(200, 800))
    while True:
        cell, strand = rng.choice(list(CELL_LEVELS)), rng.choice(["+", "-"])
        exons = [int(rng.integers(120, 400)) for _ in range(int(rng.integers(2, 4)))]
        introns = [int(rng.integers(100, 300)) for _ in exons[1:]]
        if pos + sum(exons) + sum(introns) + 200 > length:
            break
        col = [name for name, c, s in TRACKS].index(f"{cell}_{'plus' if strand == '+' else 'minus'}")
        gene_id = f"{chrom}_g{n_genes}"
        n_genes += 1
        for i, size in enumerate(exons):
            seq[pos : pos + size] = _exon(rng, size, cell, strand)
            cover[pos : pos + size, col] = rng.poisson(CELL_LEVELS[cell], size)
            gtf.append((chrom, pos, pos + size, strand, gene_id))
            pos += size
            if i < len(introns):
                cover[pos : pos + introns[i], col] = rng.poisson(INTRON_LEVEL, introns[i])
                pos += introns[i]
        pos += int(rng.integers(200, 1500))
    if n_run:
        lo, hi = n_run[0], min(n_run[1], length)
        seq[lo:hi] = b"N" * (hi - lo)
        cover[lo:hi] = 0
    return bytes(seq), cover, gtf


def _gtf_line(chrom: str, start: int, end: int, strand: str, gene_id: str) -> str:
    attrs = f'gene_id "{gene_id}"; transcript_id "{gene_id}.1"; gene_name "{gene_id.upper()}";'
    return "\t".join([chrom, "planted", "exon", str(start + 1), str(end), ".", strand, ".", attrs])


def write_synthetic_tracks(
    out_dir: str | Path,
    *,
    n_chroms: int = 4,
    chrom_length: int = 40_000,
    seed: int = 0,
    bigwig_contigs: str = "same",
) -> dict[str, Path]:
    """Write ``genome.fa``, ``<track>.bw``, ``genes.gtf`` and ``tracks.yaml`` under ``out_dir``.

    Contigs are ``chr1..chrN``; ``chr1`` starts with a 1 kb run of N and ``chr2`` holds a
    run of N longer than 2 kb in its middle. ``bigwig_contigs`` names the bigWig contigs
    (``strip_chr``: ``1, 2, ...``) to exercise naming mismatches.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sizes = {f"chr{i + 1}": chrom_length for i in range(n_chroms)}
    n_runs = {"chr1": (0, 1000), "chr2": (chrom_length // 2, chrom_length // 2 + 2500)}
    fasta, gtf, covers = [], [], {}
    for chrom, length in sizes.items():
        seq, covers[chrom], genes = _plant_chrom(rng, chrom, length, n_runs.get(chrom))
        fasta.append(f">{chrom}\n" + "\n".join(seq[i : i + 80].decode() for i in range(0, length, 80)))
        gtf += [_gtf_line(*g) for g in genes]
    atomic_write_text(out_dir / "genome.fa", "\n".join(fasta) + "\n")
    atomic_write_text(out_dir / "genes.gtf", "\n".join(gtf) + "\n")
    bw_sizes = {rename_contig(c, bigwig_contigs): n for c, n in sizes.items()}
    for col, (name, _, _) in enumerate(TRACKS):
        with BigWigWriter(out_dir / f"{name}.bw", bw_sizes, skip_zeros=True) as writer:
            for chrom in sizes:
                writer.add(rename_contig(chrom, bigwig_contigs), 0, covers[chrom][:, col])
    sheet = [{"name": n, "file": f"{n}.bw", "strand": s, "cell_type": c} for n, c, s in TRACKS]
    atomic_write_text(out_dir / "tracks.yaml", yaml.safe_dump({"tracks": sheet}, sort_keys=False))
    return {
        "fasta": out_dir / "genome.fa",
        "tracks": out_dir / "tracks.yaml",
        "gtf": out_dir / "genes.gtf",
        "dir": out_dir,
    }
