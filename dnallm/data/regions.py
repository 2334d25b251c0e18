"""Regions and windows: parsing, tiling, hold-out splits, N filtering."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from dnallm.data.genome import Genome, Region, TrackDataError, names_preview

_REGION = re.compile(r"^([^:\s]+):([\d,]+)-([\d,]+)$")


def parse_region(text: str, sizes: dict[str, int]) -> Region:
    """``chr1:1,001-2,000`` (1-based, inclusive, as in genome browsers) or a bare ``chr1``."""
    text = text.strip()
    if text in sizes:
        return Region(text, 0, sizes[text])
    m = _REGION.match(text)
    if not m:
        raise TrackDataError(f"region {text!r}: expected chrom:start-end (1-based, inclusive) or a contig name")
    chrom, start, end = m.group(1), int(m.group(2).replace(",", "")), int(m.group(3).replace(",", ""))
    if chrom not in sizes:
        raise TrackDataError(
            f"region {text!r}: contig '{chrom}' is not in the genome (contigs: {names_preview(sizes)})"
        )
    if start < 1 or end < start:
        raise TrackDataError(f"region {text!r}: start must be >= 1 and end >= start")
    if end > sizes[chrom]:
        raise TrackDataError(f"region {text!r} runs past the end of {chrom} (length {sizes[chrom]:,})")
    return Region(chrom, start - 1, end)


def read_bed(path: str | Path, sizes: dict[str, int]) -> list[Region]:
    """Regions from the first three columns of a BED file (0-based, half-open)."""
    path = Path(path)
    if not path.is_file():
        raise TrackDataError(f"region list not found: {path}")
    regions = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith(("#", "track", "browser")):
            continue
        cols = line.split("\t") if "\t" in line else line.split()
        try:
            region = Region(cols[0], int(cols[1]), int(cols[2]))
        except (IndexError, ValueError):
            raise TrackDataError(f"{path}:{n}: expected chrom, start, end (BED), got {line!r}") from None
        if region.chrom not in sizes:
            raise TrackDataError(
                f"{path}:{n}: contig '{region.chrom}' is not in the genome (contigs: {names_preview(sizes)})"
            )
        if region.start < 0 or region.end <= region.start:
            raise TrackDataError(f"{path}:{n}: empty or negative interval {region.start}-{region.end}")
        if region.end > sizes[region.chrom]:
            raise TrackDataError(
                f"{path}:{n}: {region} runs past the end of {region.chrom} (length {sizes[region.chrom]:,})"
            )
        regions.append(region)
    return regions


def tile(region: Region, window: int, stride: int) -> list[Region]:
    """Windows of ``window`` bp every ``stride`` bp covering ``region``.

    The last window is moved back to end at the region's end rather than run past it;
    a region shorter than ``window`` is one shorter window.
    """
    if len(region) <= window:
        return [region]
    starts = list(range(region.start, region.end - window + 1, stride))
    if starts[-1] + window < region.end:
        starts.append(region.end - window)
    return [Region(region.chrom, s, s + window) for s in starts]


def widen(region: Region, window: int, size: int) -> Region:
    """``region`` grown to at least ``window`` bp around its centre, inside ``[0, size)``."""
    if len(region) >= window:
        return region
    start = max(0, min(size - window, (region.start + region.end) // 2 - window // 2))
    return Region(region.chrom, start, min(size, start + window))


def split_windows(
    sizes: dict[str, int],
    *,
    chroms: list[str],
    window: int,
    stride: int,
    val_chroms=(),
    test_chroms=(),
    val_regions=(),
    test_regions=(),
) -> dict[str, list[Region]]:
    """Train / val / test windows: held-out chromosomes and regions, the rest for training.

    Held-out regions shorter than a window are widened to one, and a training window
    overlapping a (widened) held-out region is dropped, so no base a held-out window
    holds is ever a training target.
    """
    unknown = [c for c in [*chroms, *val_chroms, *test_chroms] if c not in sizes]
    if unknown:
        raise TrackDataError(
            f"chromosomes {names_preview(unknown)} are not in the genome (contigs: {names_preview(sizes)})"
        )
    both = set(val_chroms) & set(test_chroms)
    if both:
        raise TrackDataError(f"chromosomes {sorted(both)} are both validation and test chromosomes")
    held_out = set(val_chroms) | set(test_chroms)
    held_regions = [widen(r, window, sizes[r.chrom]) for r in [*val_regions, *test_regions]]

    def held(chrom_list, regions) -> list[Region]:
        out = [w for c in chrom_list for w in tile(Region(c, 0, sizes[c]), window, stride)]
        return out + [w for r in regions for w in tile(widen(r, window, sizes[r.chrom]), window, stride)]

    train = [
        w
        for c in chroms
        if c not in held_out
        for w in tile(Region(c, 0, sizes[c]), window, stride)
        if not any(w.overlaps(r) for r in held_regions)
    ]
    return {"train": train, "val": held(val_chroms, val_regions), "test": held(test_chroms, test_regions)}


def n_fractions(genome: Genome, windows: list[Region], block: int, show_progress: bool = True) -> np.ndarray:
    """Fraction of N bases in each window, reading each chromosome once.

    N is counted per ``block`` bp (``gcd(window, stride)`` for a tiling from 0), so each
    window on that grid is a sum of whole blocks; any other window is read directly.
    """
    out = np.zeros(len(windows))
    by_chrom: dict[str, list[int]] = {}
    for i, w in enumerate(windows):
        by_chrom.setdefault(w.chrom, []).append(i)
    for chrom, idx in tqdm(by_chrom.items(), desc="scanning for N", unit="chrom", disable=not show_progress):
        size = genome.sizes[chrom]
        cum = np.concatenate([[0], np.cumsum(genome.n_counts(chrom, block))])
        for i in idx:
            w = windows[i]
            if w.start % block == 0 and (w.end % block == 0 or w.end == size):
                n = cum[-(-w.end // block)] - cum[w.start // block]
            else:
                n = int((genome.codes(w) == ord("N")).sum())
            out[i] = n / len(w)
    return out
