"""Peak host memory of a block of work, for benchmarks and memory checks."""

from __future__ import annotations

import threading

import psutil


class PeakRSS:
    """Highest resident set size of this process while the block runs (sampled every
    ``interval`` seconds): ``peak``, ``start`` and ``rise`` (peak - start) in bytes."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval

    def __enter__(self):
        self.start = self.peak = psutil.Process().memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        proc = psutil.Process()
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, proc.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, psutil.Process().memory_info().rss)

    @property
    def rise(self) -> int:
        return self.peak - self.start
