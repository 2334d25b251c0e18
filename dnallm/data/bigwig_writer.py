"""Writing bigWigs: per-base values, chromosome by chromosome, renamed into place when complete."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np

from dnallm.io import disk_errors_named, new_file_mode, release_space, reserve_space
from dnallm.data.genome import TrackDataError

# libBigWig ignores a failed write inside its loops (bwWrite.c) and goes on filling its 32 KiB
# block buffer past the end, so a full disk never comes back as an error: the writer spins and
# corrupts memory. Disk space is therefore reserved before every call into it, for an upper
# bound of the whole file as it would be if closed right after that call; a disk without that
# room raises ENOSPC here, before libBigWig writes. The bound follows bwWrite.c's layout:
VALUES_PER_BLOCK = 8000  # a data block holds at most 8186 values (4 bytes each in 32 KiB): blocks never undercounted
BYTES_PER_VALUE = 8  # 4 of data, 32 / 12 of zoom records (levels of 16 * 4**k bases), zlib's 0.03 %
BYTES_PER_RUN = 512  # a block header and zlib's tail, and a 32-byte zoom record in each of the 10 levels
BYTES_PER_BLOCK = 128  # its index entry and its share of the index's inner nodes
FIXED_BYTES = 64 << 10  # file, zoom and index headers, the summary, each zoom level's partly filled buffers


class BigWigWriter:
    """``add(chrom, start, values)`` in ascending order; ``close()`` publishes the file.

    Entries must come in the order of ``sizes`` (the header) and by position within a
    chromosome, as the format requires. Bases never added have no value (read as 0).
    ``skip_zeros`` leaves zero runs out, as coverage files usually do. A full disk raises
    ``OSError`` (ENOSPC) naming ``path``; ``abort()`` (or leaving a ``with`` block by an
    exception) then leaves nothing behind.
    """

    def __init__(self, path: str | Path, sizes: dict[str, int], skip_zeros: bool = False):
        import pyBigWig

        self.path = Path(path)
        self.order = {c: i for i, c in enumerate(sizes)}
        self.sizes, self.skip_zeros = sizes, skip_zeros
        self._last = (-1, 0)
        self._values = self._runs = self._blocks = 0
        self._header_bytes = FIXED_BYTES + 2 * len(sizes) * (max(map(len, sizes), default=0) + 16)
        with disk_errors_named(self.path, self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd, self._tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        self._bw = None
        try:
            self._bw = pyBigWig.open(self._tmp, "w")  # the same file: self._fd still reserves its blocks
            self._reserve()
            self._bw.addHeader(list(sizes.items()))
        except BaseException:
            self.abort()
            raise

    def add(self, chrom: str, start: int, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64)
        if not np.isfinite(values).all():
            bad = int(np.flatnonzero(~np.isfinite(values))[0])
            raise TrackDataError(
                f"{self.path}: value {values[bad]} at {chrom}:{start + bad + 1} is not finite; nothing written"
            )
        position = (self.order[chrom], start)
        if position < self._last or start + len(values) > self.sizes[chrom]:
            raise ValueError(
                f"{self.path}: entries must be added in order inside {chrom} (got {chrom}:{start + 1} after {self._last})"
            )
        self._last = (self.order[chrom], start + len(values))
        if not self.skip_zeros:
            runs = np.array([[0, len(values)]])
        else:
            nonzero = np.concatenate([[False], values != 0, [False]])
            runs = np.flatnonzero(nonzero[1:] != nonzero[:-1]).reshape(-1, 2)  # (n_runs, 2): [lo, hi) of each
        self._count(runs)
        self._reserve()
        for lo, hi in runs:
            self._bw.addEntries(chrom, int(start + lo), values=values[lo:hi], span=1, step=1)

    def _count(self, runs: np.ndarray) -> None:
        lengths = runs[:, 1] - runs[:, 0]
        self._values += int(lengths.sum())
        self._runs += len(runs)
        self._blocks += int((lengths // VALUES_PER_BLOCK + 1).sum())

    def size_bound(self) -> int:
        """The most bytes the file can hold once closed, given what was added so far."""
        return (
            self._header_bytes
            + BYTES_PER_VALUE * self._values
            + BYTES_PER_RUN * self._runs
            + BYTES_PER_BLOCK * self._blocks
        )

    def _reserve(self) -> None:
        reserve_space(self._fd, self.size_bound(), self.path)

    def close(self) -> Path:
        try:
            with disk_errors_named(self._tmp, self.path):
                self._bw.close()  # the index and zoom levels, inside the reserved space
                self._bw = None
                release_space(self._tmp)
                os.chmod(self._tmp, new_file_mode())
                os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._close_fd()
        return self.path

    def abort(self) -> None:
        with contextlib.suppress(OSError):  # a disk that turned read-only refuses even this: keep the first error
            Path(self._tmp).unlink(missing_ok=True)
        if self._bw is not None:
            self._bw.close()  # writes only inside the reserved space, into the unlinked file
            self._bw = None
        self._close_fd()

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.close()
        else:
            self.abort()
