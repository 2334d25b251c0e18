"""Peak host memory of a block of work, for benchmarks and memory checks."""

from __future__ import annotations

import threading

import psutil


def _anon(info) -> int:
    """Resident memory that is this process's own: RSS less file-backed and shared pages
    (``shared`` is RssFile + RssShmem on Linux; elsewhere 0)."""
    return info.rss - getattr(info, "shared", 0)


class PeakRSS:
    """Highest resident set size of this process while the block runs (sampled every
    ``interval`` seconds): ``peak``, ``start`` and ``rise`` (peak - start) in bytes.

    ``anon_rise`` is the rise of the process's own memory alone. Reading a memory-mapped
    safetensors file onto a GPU maps its pages into RSS, but those pages are the kernel's page
    cache, shared by every process on the node that reads the same file and given back under
    pressure; ``anon_rise`` leaves them out, so it is what each rank costs the host."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval

    def __enter__(self):
        info = psutil.Process().memory_info()
        self.start = self.peak = info.rss
        self.anon_start = self.anon_peak = _anon(info)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _take(self, proc) -> None:
        info = proc.memory_info()
        self.peak = max(self.peak, info.rss)
        self.anon_peak = max(self.anon_peak, _anon(info))

    def _sample(self):
        proc = psutil.Process()
        while not self._stop.wait(self.interval):
            self._take(proc)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._take(psutil.Process())

    @property
    def rise(self) -> int:
        return self.peak - self.start

    @property
    def anon_rise(self) -> int:
        return self.anon_peak - self.anon_start
