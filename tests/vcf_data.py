"""A small reference FASTA and VCFs written by the tests: one record per case to cover."""

from __future__ import annotations

import random
from pathlib import Path

import pysam

CONTIG_LENGTHS = {"chr1": 400, "chr2": 300, "chrM": 60}
N_BLOCKS = ((200, 230), (233, 260))  # 0-based [start, end) of Ns on chr2, around a 3 bp island


def reference_sequences(seed: int = 0) -> dict[str, str]:
    rng = random.Random(seed)
    seqs = {name: "".join(rng.choice("ACGT") for _ in range(n)) for name, n in CONTIG_LENGTHS.items()}
    for start, end in N_BLOCKS:
        seqs["chr2"] = seqs["chr2"][:start] + "N" * (end - start) + seqs["chr2"][end:]
    return seqs


def write_fasta(path: Path, seqs: dict[str, str], width: int = 60) -> Path:
    lines = []
    for name, seq in seqs.items():
        # Soft-masked stretch: the windows must come out upper-case all the same.
        seq = seq[:10] + seq[10:20].lower() + seq[20:]
        lines.append(f">{name} test contig")
        lines += [seq[i : i + width] for i in range(0, len(seq), width)]
    path.write_text("\n".join(lines) + "\n")
    return path


def other_base(base: str) -> str:
    return {"A": "C", "C": "G", "G": "T", "T": "A"}[base]


def cases(seqs: dict[str, str]) -> dict[str, tuple]:
    """name -> (chrom, pos, id, ref, alts) with 1-based positions, in file order."""
    c1, c2 = seqs["chr1"], seqs["chr2"]
    return {
        "near_start": ("chr1", 3, "v_start", c1[2], [other_base(c1[2])]),
        "snv": ("chr1", 50, "v_snv", c1[49], [other_base(c1[49])]),
        "insertion": ("chr1", 80, "v_ins", c1[79], [c1[79] + "TTG"]),
        "deletion": ("chr1", 120, "v_del", c1[119:123], [c1[119]]),
        # One ALT is a deletion, one an SNV at pos+1 spelled with context, one symbolic.
        "multi": ("chr1", 160, "v_multi", c1[159:161], [c1[159], c1[159] + other_base(c1[160]), "<DEL>"]),
        "ref_mismatch": ("chr1", 200, "v_bad_ref", other_base(c1[199]), [other_base(other_base(c1[199]))]),
        "breakend": ("chr1", 240, "v_bnd", c1[239], [f"{c1[239]}]chr2:100]"]),
        "star": ("chr1", 250, "v_star", c1[249], ["*"]),
        "no_alt": ("chr1", 260, "v_noalt", c1[259], []),
        "n_rich": ("chr2", 232, "v_nrich", c2[231], [other_base(c2[231])]),
        "near_end": ("chr2", 298, "v_end", c2[297], [other_base(c2[297])]),
        "missing_contig": ("chr9", 10, "v_chr9", "A", ["G"]),
        "mito": ("chrM", 30, "v_mt", seqs["chrM"][29], [other_base(seqs["chrM"][29])]),
    }


def vcf_text(rows: list[tuple], contigs: dict[str, int] | None = None) -> str:
    header = ["##fileformat=VCFv4.2"]
    header += [f"##contig=<ID={name},length={n}>" for name, n in (contigs or {}).items()]
    header.append('##INFO=<ID=DP,Number=1,Type=Integer,Description="Read depth">')
    header.append("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO")
    body = [
        f"{chrom}\t{pos}\t{vid}\t{ref}\t{','.join(alts) or '.'}\t50\tPASS\tDP=10"
        for chrom, pos, vid, ref, alts in rows
    ]
    return "\n".join(header + body) + "\n"


def write_vcf(path: Path, rows: list[tuple], contigs: dict[str, int] | None = None, bgzip: bool = False) -> Path:
    text = vcf_text(rows, contigs)
    if not bgzip:
        path.write_text(text)
        return path
    plain = path.with_name(path.name.removesuffix(".gz"))
    plain.write_text(text)
    pysam.tabix_compress(str(plain), str(path), force=True)
    plain.unlink()
    return path


def renamed(rows: list[tuple], rename: dict[str, str]) -> list[tuple]:
    return [(rename.get(r[0], r[0]), *r[1:]) for r in rows]
