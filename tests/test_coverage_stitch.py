"""Stitching overlapping window predictions: every base once, in order, from the right window."""

import numpy as np
import pytest

from dnallm.data.genome import Region
from dnallm.eval.coverage_stitch import keep_ranges, plan_windows, stitch

CHROM_SIZE = 10_000


def truth(start: int, end: int) -> np.ndarray:
    """A position-dependent signal, two tracks: any misplaced base shows."""
    pos = np.arange(start, end, dtype=np.float64)
    return np.stack([np.sin(pos / 7.0) + 2, (pos % 97) / 10], axis=1).astype(np.float32)


def predictions(windows, edge: int):
    """Each window right in its middle, garbage within ``edge`` bp of its ends (no context there)."""
    for w in windows:
        values = truth(w.start, w.end)
        values[:edge] = -100.0
        values[len(w) - edge :] = 100.0
        yield values


def run(region, window=1000, overlap=500, mode="centre", edge=0):
    windows = plan_windows(region, window, overlap, CHROM_SIZE)
    chunks = list(stitch(windows, predictions(windows, edge), region, mode))
    starts = [s for s, _ in chunks]
    values = np.concatenate([v for _, v in chunks])
    return windows, starts, values


@pytest.mark.parametrize(
    "region",
    [Region("c", 0, CHROM_SIZE), Region("c", 1234, 6789), Region("c", 9000, CHROM_SIZE), Region("c", 300, 400)],
)
def test_centre_stitching_keeps_only_window_centres(region):
    # Edges up to a quarter window are discarded, except where the chromosome itself ends.
    windows, starts, values = run(region, edge=240)
    assert len(values) == len(region)
    assert starts[0] == region.start and starts == sorted(starts)
    expected = truth(region.start, region.end)
    inner = slice(max(0, 240 - region.start), len(region) - max(0, region.end - (CHROM_SIZE - 240)))
    np.testing.assert_array_equal(values[inner], expected[inner])


def test_centre_cuts_sit_in_the_middle_of_each_overlap():
    windows = plan_windows(Region("c", 0, CHROM_SIZE), 1000, 500, CHROM_SIZE)
    keep = keep_ranges(windows, "centre")
    assert keep[0][0] == 0 and keep[-1][1] == CHROM_SIZE
    assert all(a[1] == b[0] for a, b in zip(keep, keep[1:]))  # contiguous, no gap, no double
    for w, (lo, hi) in zip(windows[1:-1], keep[1:-1]):
        assert lo - w.start >= 250 and w.end - hi >= 250  # a quarter window of context each side


def test_mean_stitching_averages_overlaps():
    region = Region("c", 2000, 5000)
    _, _, values = run(region, mode="mean")
    np.testing.assert_allclose(values, truth(region.start, region.end), rtol=1e-6)
    # Window k predicts truth + k: a base covered by windows k and k+1 gets truth + k + 1/2.
    windows = plan_windows(region, 1000, 500, CHROM_SIZE)
    offset = (truth(w.start, w.end) + k for k, w in enumerate(windows))
    stitched = np.concatenate([v for _, v in stitch(windows, offset, region, "mean")])
    for pos in (2100, 3333, 4900):
        covering = [k for k, w in enumerate(windows) if w.start <= pos < w.end]
        np.testing.assert_allclose(stitched[pos - region.start], truth(pos, pos + 1)[0] + np.mean(covering), rtol=1e-6)


def test_no_overlap_tiles_exactly():
    region = Region("c", 0, 4000)
    windows, _, values = run(region, window=1000, overlap=0)
    assert [(w.start, w.end) for w in windows] == [(0, 1000), (1000, 2000), (2000, 3000), (3000, 4000)]
    np.testing.assert_array_equal(values, truth(0, 4000))


def test_a_wrong_sized_prediction_is_refused():
    region = Region("c", 0, 2000)
    windows = plan_windows(region, 1000, 500, CHROM_SIZE)
    with pytest.raises(ValueError, match="has 999 positions, expected 1000"):
        list(stitch(windows, (np.zeros((999, 2)) for _ in windows), region))
