"""DNA sequence checks and centred windows, done once, in one place."""

from __future__ import annotations

import re

ALPHABET = "ACGTN"
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
                raise RecordError(f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at byte offset "
                                  f"{offset + e.start} of the file); save the file as UTF-8") from None
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


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


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
