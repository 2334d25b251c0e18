"""Overlapping windows over a region, and their predictions stitched back into one track.

``centre``: each base comes from the window in which it lies most centrally (cut in the
middle of each overlap), so every base has at least a quarter window of context on
both sides except at chromosome ends. ``mean``: overlapping predictions are averaged.
Stitching streams: a base is emitted as soon as no later window can touch it.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from dnallm.data.genome import Region
from dnallm.data.regions import tile

STITCH_MODES = ("centre", "mean")


def plan_windows(region: Region, window: int, overlap: int, chrom_size: int) -> list[Region]:
    """Windows covering ``region`` plus half an overlap of context each side (within the chromosome)."""
    if not 0 <= overlap < window:
        raise ValueError(f"overlap={overlap} must be >= 0 and smaller than window={window}")
    pad = overlap // 2
    context = Region(region.chrom, max(0, region.start - pad), min(chrom_size, region.end + pad))
    return tile(context, window, window - overlap)


def keep_ranges(windows: list[Region], mode: str) -> list[tuple[int, int]]:
    """The part of each window (genome coordinates) that contributes to the output."""
    if mode not in STITCH_MODES:
        raise ValueError(f"unknown stitch mode {mode!r}; use one of {', '.join(STITCH_MODES)}")
    if mode == "mean":
        return [(w.start, w.end) for w in windows]
    cuts = [(b.start + a.end) // 2 for a, b in zip(windows, windows[1:])]  # middle of each overlap
    starts = [windows[0].start, *cuts]
    ends = [*cuts, windows[-1].end]
    return list(zip(starts, ends))


def stitch(
    windows: list[Region], preds: Iterable[np.ndarray], region: Region, mode: str = "centre"
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, values (n, T))`` chunks covering ``region`` in order.

    ``windows`` sorted by start, covering ``region``; ``preds`` yields one ``(len(w), T)``
    array per window, in the same order.
    """
    keep = keep_ranges(windows, mode)
    pending: list[tuple[int, np.ndarray]] = []  # (genome start, kept values)
    emitted = region.start
    for k, (w, pred) in enumerate(zip(windows, preds)):
        if len(pred) != len(w):
            raise ValueError(f"prediction for window {w} has {len(pred)} positions, expected {len(w)}")
        lo, hi = keep[k]
        pending.append((lo, pred[lo - w.start : hi - w.start]))
        frontier = keep[k + 1][0] if k + 1 < len(windows) else region.end
        end = min(max(frontier, emitted), region.end)
        if end > emitted:
            yield emitted, _combine(pending, emitted, end)
            emitted = end
        pending = [(s, v) for s, v in pending if s + len(v) > emitted]
    if emitted < region.end:
        raise ValueError(f"windows end at {emitted}, before the end of {region}")


def _combine(pending: list[tuple[int, np.ndarray]], start: int, end: int) -> np.ndarray:
    n_tracks = pending[0][1].shape[1]
    sums = np.zeros((end - start, n_tracks), dtype=np.float64)
    counts = np.zeros(end - start)
    for s, values in pending:
        lo, hi = max(start, s), min(end, s + len(values))
        if lo < hi:
            sums[lo - start : hi - start] += values[lo - s : hi - s]
            counts[lo - start : hi - start] += 1
    if (counts == 0).any():
        gap = start + int(np.flatnonzero(counts == 0)[0])
        raise ValueError(f"no window covers position {gap}")
    return (sums / counts[:, None]).astype(np.float32)
