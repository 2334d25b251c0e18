"""DNA sequence checks and centred windows, done once, in one place."""

from __future__ import annotations

import functools
import re
from pathlib import Path

BASES = "ACGT"
ALPHABET = BASES + "N"  # what a window may hold: N for an unknown base
_INVALID = re.compile(f"[^{ALPHABET}]")


class RecordError(ValueError):
    """A record cannot be used; the message names the record and what is wrong."""


def text_lines(path: Path):
    """(line number, text) of a UTF-8 text file (a byte-order mark allowed). A line that is not
    UTF-8 raises an error naming the file, the line and the byte offset in the file."""
    offset = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                yield lineno, raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise RecordError(
                    f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at byte offset "
                    f"{offset + e.start} of the file); save the file as UTF-8"
                ) from None
            offset += len(raw)


def clean_sequence(seq: str, *, where: str, field: str) -> str:
    """Upper-case ``seq`` and check it holds only A, C, G, T, N."""
    if not isinstance(seq, str):
        raise RecordError(f"{where}: field '{field}' must be a string, got {type(seq).__name__}")
    seq = seq.upper()
    bad = _INVALID.search(seq)
    if bad:
        raise RecordError(
            f"{where}: field '{field}' has invalid character {bad.group()!r} at position "
            f"{bad.start()} (0-based); allowed: {', '.join(ALPHABET)} (any case)"
        )
    return seq


def centre_window(seq: str, window: int, *, where: str, field: str) -> str:
    """The ``window`` bases centred on the middle of ``seq``.

    For the KEGG layout (2,000 bp flank + allele + 2,000 bp flank) the middle of each
    sequence is the middle of its allele, so reference and variant windows both keep
    the variant at position ``window // 2`` even when an indel makes them differ in length.
    """
    if len(seq) < window:
        raise RecordError(f"{where}: field '{field}' is {len(seq)} bp, shorter than dna_window={window}")
    start = len(seq) // 2 - window // 2
    return seq[start : start + window]


def _common_prefix(a: str, b: str, start_a: int = 0, start_b: int = 0) -> int:
    """Length of the common prefix of ``a[start_a:]`` and ``b[start_b:]`` (binary search over
    slice comparisons: each comparison runs in C)."""
    low, high = 0, min(len(a) - start_a, len(b) - start_b)
    while low < high:
        mid = (low + high + 1) // 2
        if a[start_a : start_a + mid] == b[start_b : start_b + mid]:
            low = mid
        else:
            high = mid - 1
    return low


def check_pair(ref: str, var: str, *, where: str) -> None:
    """Reference and variant must be the same locus with the variant in the middle.

    Lengths may differ (insertions, deletions), but both sequences must share their flanks:
    a quarter of the shorter sequence at each end at least. A pair that fails this was cut
    at different offsets or comes from different loci, and its centred windows would not
    line up.
    """
    shorter = min(len(ref), len(var))
    need = shorter // 4
    prefix = _common_prefix(ref, var)
    suffix = _common_prefix(ref[::-1], var[::-1])
    if prefix < need or suffix < need:
        raise RecordError(
            f"{where}: reference_sequence ({len(ref)} bp) and variant_sequence ({len(var)} bp) "
            f"do not share flanks around a centred variant (common prefix {prefix} bp, common "
            f"suffix {suffix} bp, need {need} bp each); both must be the same locus cut "
            f"symmetrically around the variant"
        )


def _aligned_run(a: str, b: str, max_shift: int) -> tuple[int, int, int]:
    """The longest run of equal bases from the start of ``a`` and ``b`` under a shift.

    ``a[i] == b[i + shift]`` for ``i`` in ``[start, start + length)`` where ``start`` is where
    both strings have a base at index 0 of the run. -> (shift, start in a, length), the
    smallest |shift| among the longest runs.
    """
    best = (0, 0, _common_prefix(a, b))
    for magnitude in range(1, max_shift + 1):
        for shift in (magnitude, -magnitude):
            start = max(0, -shift)
            if a[start] != b[start + shift]:  # most shifts fail at once
                continue
            length = _common_prefix(a, b, start, start + shift)
            if length > best[2]:
                best = (shift, start, length)
    return best


@functools.lru_cache(maxsize=4096)  # a training epoch meets the same pairs again
def change_span(ref: str, var: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """Where the variant window differs from the reference window: ``((r0, r1), (v0, v1))``,
    ``ref[r0:r1]`` became ``var[v0:v1]`` (either may be empty: an insertion, a deletion).

    The two windows are aligned as a variant caller would trim an allele: the left flanks
    from the left, the right flanks from the right, each under the shift that lines it up
    (windows centred on their own allele are offset by half the length change on each side).
    What is left between the flanks is the change. Identical windows give an empty span at
    the centre; in a repeat, where an indel's place is ambiguous, the longest left flank wins.
    """
    if ref == var:
        return (len(ref) // 2, len(ref) // 2), (len(var) // 2, len(var) // 2)
    max_shift = min(len(ref), len(var)) // 4
    shift, start, left = _aligned_run(ref, var, max_shift)
    r0 = start + left
    v0 = r0 + shift
    # The right flanks: the same on the reversed windows.
    shift_r, start_r, right = _aligned_run(ref[::-1], var[::-1], max_shift)
    right = max(0, min(right, len(ref) - start_r - r0, len(var) - start_r - shift_r - v0))
    r1 = len(ref) - start_r - right
    v1 = len(var) - start_r - shift_r - right
    return (r0, max(r0, r1)), (v0, max(v0, v1))


# ---- contig names ---------------------------------------------------------------------------
# How another file (VCF, bigWig, GTF) names the FASTA's contigs: one vocabulary for every
# command, and one rule for the mitochondrion: chrM with the prefix, MT without.

CONTIG_RULES = ("same", "add_chr", "strip_chr")
_INVERSE_RULE = {"same": "same", "add_chr": "strip_chr", "strip_chr": "add_chr"}


def rename_contig(name: str, rule: str) -> str:
    """``name`` as ``rule`` spells it: ``add_chr`` 1 -> chr1, MT (or M) -> chrM; ``strip_chr``
    chr1 -> 1, chrM -> MT; ``same`` unchanged."""
    if rule == "same":
        return name
    if rule == "add_chr":
        return "chrM" if name in ("MT", "M") else name if name.startswith("chr") else f"chr{name}"
    if rule == "strip_chr":
        return "MT" if name == "chrM" else name[3:] if name.startswith("chr") else name
    raise ValueError(f"unknown contig naming {rule!r}; use one of {', '.join(CONTIG_RULES)}")


def fasta_contig(name: str, rule: str) -> str:
    """The FASTA name of a contig another file names under ``rule`` (``rename_contig`` undone)."""
    if rule not in _INVERSE_RULE:
        raise ValueError(f"unknown contig naming {rule!r}; use one of {', '.join(CONTIG_RULES)}")
    return rename_contig(name, _INVERSE_RULE[rule])


def contig_key(name: str) -> str:
    """One key per contig whatever the naming style (chr1 = 1, chrM = MT = M), to match annotations."""
    name = name[3:] if name.lower().startswith("chr") else name
    return "MT" if name in ("M", "m") else name
