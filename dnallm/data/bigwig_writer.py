"""Writing bigWigs: per-base values, chromosome by chromosome, renamed into place when complete."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from dnallm.io import new_file_mode
from dnallm.data.genome import TrackDataError


class BigWigWriter:
    """``add(chrom, start, values)`` in ascending order; ``close()`` publishes the file.

    Entries must come in the order of ``sizes`` (the header) and by position within a
    chromosome, as the format requires. Bases never added have no value (read as 0).
    ``skip_zeros`` leaves zero runs out, as coverage files usually do.
    """

    def __init__(self, path: str | Path, sizes: dict[str, int], skip_zeros: bool = False):
        import pyBigWig

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        os.close(fd)
        self.order = {c: i for i, c in enumerate(sizes)}
        self.sizes, self.skip_zeros = sizes, skip_zeros
        self._last = (-1, 0)
        self._bw = pyBigWig.open(self._tmp, "w")
        self._bw.addHeader(list(sizes.items()))

    def add(self, chrom: str, start: int, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64)
        if not np.isfinite(values).all():
            bad = int(np.flatnonzero(~np.isfinite(values))[0])
            raise TrackDataError(f"{self.path}: value {values[bad]} at {chrom}:{start + bad + 1} is not finite; nothing written")
        position = (self.order[chrom], start)
        if position < self._last or start + len(values) > self.sizes[chrom]:
            raise ValueError(f"{self.path}: entries must be added in order inside {chrom} (got {chrom}:{start + 1} after {self._last})")
        self._last = (self.order[chrom], start + len(values))
        if not self.skip_zeros:
            self._bw.addEntries(chrom, int(start), values=values, span=1, step=1)
            return
        nonzero = np.concatenate([[False], values != 0, [False]])
        edges = np.flatnonzero(nonzero[1:] != nonzero[:-1]).reshape(-1, 2)
        for lo, hi in edges:
            self._bw.addEntries(chrom, int(start + lo), values=values[lo:hi], span=1, step=1)

    def close(self) -> Path:
        self._bw.close()
        os.chmod(self._tmp, new_file_mode())
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        self._bw.close()
        Path(self._tmp).unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.close()
        else:
            self.abort()
