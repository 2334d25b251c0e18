"""Reference genome access: a FASTA read through its index, a few bases at a time.

``pyfaidx`` seeks into the file for each fetch (plain or bgzip-compressed FASTA), so
a whole genome never sits in memory. Regions are 0-based, half-open.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dnallm.data.dna import ALPHABET, rename_contig

IUPAC_AMBIGUOUS = "RYSWKMBDHVU"  # read as N: the model has no token for them
_COMPLEMENT = bytes.maketrans(ALPHABET.encode(), b"TGCAN")
_BASE_TO_N = bytes.maketrans(IUPAC_AMBIGUOUS.encode(), b"N" * len(IUPAC_AMBIGUOUS))
_INVALID = re.compile(f"[^{ALPHABET}]".encode())


class TrackDataError(ValueError):
    """A genome, track or region file cannot be used; the message names the file and place."""


def stale_index_problem(fasta: str | Path) -> str | None:
    """What shows that ``fasta``'s ``.fai`` was built for another version of the file, or None.

    Checked as samtools would trust it: each record's sequence starts just after a line end,
    its lines are ``linebases`` long and end where the index says, and its last base lies inside
    the file. A stale index otherwise reads line ends as bases, silently. Only plain FASTA is
    checked (a bgzipped one's offsets are into the uncompressed text).
    """
    fasta, fai = Path(fasta), Path(f"{fasta}.fai")
    if not fai.is_file() or _is_compressed(fasta):
        return None
    size = fasta.stat().st_size
    with fasta.open("rb") as f:
        for number, line in enumerate(fai.read_text(errors="replace").splitlines(), start=1):
            problem = _index_line_problem(f, size, line)
            if problem:
                return f"{fai} line {number}: {problem}"
        # After the last indexed base only line ends may follow: more means records the index lacks.
        if f.read(4).strip():
            return f"{fai}: the FASTA goes on after the index's last record"
    return None


def _index_line_problem(f, size: int, line: str) -> str | None:
    fields = line.split("\t")
    try:
        name, (length, offset, line_bases, line_width) = fields[0], map(int, fields[1:5])
    except ValueError:
        return f"not a FASTA index line ({line[:60]!r})"
    full_lines, rest = divmod(length - 1, line_bases) if length else (0, 0)
    last_base = offset + full_lines * line_width + rest
    if last_base >= size:
        return f"record {name} ends at byte {last_base:,}, past the end of the FASTA ({size:,} bytes)"
    f.seek(max(offset - 1, 0))
    if offset and f.read(1) != b"\n":
        return f"record {name}'s sequence does not start after a line end (byte {offset:,})"
    if length > line_bases:
        f.seek(offset + line_bases)
        if f.read(line_width - line_bases).strip() or f.read(1).isspace():
            return f"record {name}'s lines are not {line_bases} bases long"
    f.seek(last_base + 1)  # the caller reads on from the end of this record
    return None


def _is_compressed(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(2) == b"\x1f\x8b"


def stale_index_message(fasta: str | Path) -> str | None:
    """One line for a stale ``.fai``, naming the fix; None when the index fits (or is absent)."""
    problem = stale_index_problem(fasta)
    if problem is None:
        return None
    return (
        f"{fasta}: its index does not match the file ({problem}); the FASTA changed after it was indexed: "
        f"delete {fasta}.fai (it is rebuilt) or run samtools faidx {fasta}"
    )


@dataclass(frozen=True, order=True)
class Region:
    chrom: str
    start: int  # 0-based, inclusive
    end: int  # exclusive

    def __len__(self) -> int:
        return self.end - self.start

    def __str__(self) -> str:
        # Genome-browser style: 1-based, inclusive.
        return f"{self.chrom}:{self.start + 1}-{self.end}"

    def overlaps(self, other: "Region") -> bool:
        return self.chrom == other.chrom and self.start < other.end and other.start < self.end


def suggest_rule(fasta_names, other_names) -> str | None:
    """The naming rule that would make ``other_names`` match the FASTA, if one does."""
    other = set(other_names)
    for rule in ("add_chr", "strip_chr"):
        if other and sum(rename_contig(n, rule) in other for n in fasta_names) >= max(1, len(other) // 2):
            return rule
    return None


def names_preview(names, limit: int = 8) -> str:
    names = list(names)
    more = f", ... ({len(names)} in all)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


class Genome:
    """A reference FASTA: ``sizes`` and ``codes(region)`` (upper-case ASCII bytes).

    The file handle opens lazily and again in each process, so data-loader workers
    never share one file offset.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise TrackDataError(f"reference FASTA not found: {self.path}")
        self._fasta, self._pid = None, None
        self.sizes = {name: len(record) for name, record in self._open().items()}

    def _open(self):
        if self._fasta is None or self._pid != os.getpid():
            import pyfaidx

            stale = stale_index_message(self.path)
            if stale:
                raise TrackDataError(stale)
            try:
                self._fasta = pyfaidx.Fasta(str(self.path), as_raw=True, sequence_always_upper=True)
            except Exception as err:  # pyfaidx raises several types for a malformed file
                raise TrackDataError(f"{self.path}: cannot index this FASTA ({err})") from err
            self._pid = os.getpid()
        return self._fasta

    def __getstate__(self):
        return {"path": self.path, "sizes": self.sizes, "_fasta": None, "_pid": None}

    def check_region(self, region: Region, what: str = "region") -> None:
        size = self.sizes.get(region.chrom)
        if size is None:
            raise TrackDataError(
                f"{what} {region}: contig '{region.chrom}' is not in {self.path} (contigs: {names_preview(self.sizes)})"
            )
        if region.start < 0 or region.end > size or region.start >= region.end:
            raise TrackDataError(
                f"{what} {region} runs past the end of {region.chrom} (length {size:,} in {self.path})"
            )

    def codes(self, region: Region) -> np.ndarray:
        """(length,) uint8: A, C, G, T or N; IUPAC ambiguity codes read as N."""
        self.check_region(region)
        raw = self._open()[region.chrom][region.start : region.end].encode("ascii").translate(_BASE_TO_N)
        bad = _INVALID.search(raw)
        if bad:
            pos = region.start + bad.start()
            raise TrackDataError(
                f"{self.path}: {region.chrom}:{pos + 1} holds {chr(raw[bad.start()])!r}, not a DNA base"
            )
        return np.frombuffer(raw, dtype=np.uint8)

    def n_counts(self, chrom: str, block: int) -> np.ndarray:
        """Number of N in each ``block``-sized piece of ``chrom`` (the last piece may be shorter)."""
        size = self.sizes[chrom]
        step = block * max(1, (1 << 22) // block)  # read about 4 Mb at a time
        counts = []
        for start in range(0, size, step):
            codes = self.codes(Region(chrom, start, min(size, start + step)))
            is_n = codes == ord("N")
            pad = -len(is_n) % block
            counts.append(np.pad(is_n, (0, pad)).reshape(-1, block).sum(axis=1))
        return np.concatenate(counts) if counts else np.zeros(0, dtype=np.int64)


def reverse_complement(codes: np.ndarray) -> np.ndarray:
    return np.frombuffer(codes.tobytes().translate(_COMPLEMENT)[::-1], dtype=np.uint8)
