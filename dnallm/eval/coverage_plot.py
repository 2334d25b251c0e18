"""Observed vs predicted coverage over a region, one panel per track, gene models underneath."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dnallm.data.gene_models import Gene
from dnallm.data.genome import Region
from dnallm.data.tracks import Track
from dnallm.io import save_figure

MAX_POINTS = 4000  # longer regions are averaged into this many points


def _downsample(values: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(positions, values) with at most ``n`` points, each the mean of its stretch."""
    if len(values) <= n:
        return np.arange(len(values)), values
    edges = np.linspace(0, len(values), n + 1).astype(int)
    means = np.add.reduceat(values, edges[:-1], axis=0) / np.diff(edges)[:, None]
    return (edges[:-1] + edges[1:]) / 2, means


def _log1p_r(a: np.ndarray, b: np.ndarray) -> float:
    x, y = np.log1p(a), np.log1p(b)
    if x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def _draw_genes(ax, genes: list[Gene], region: Region) -> None:
    shown = [g for g in genes if g.chrom == region.chrom and g.start < region.end and g.end > region.start]
    for row, g in enumerate(shown):
        y = -(row % 3)  # three lanes keep neighbouring labels apart
        color = "tab:red" if g.strand == "+" else "tab:blue"
        ax.plot([g.start, g.end], [y, y], color=color, lw=1)
        for s, e in g.exons:
            ax.add_patch(_box(s, y, e - s, color))
        arrow = "\u2192" if g.strand == "+" else "\u2190"
        ax.text(
            (max(g.start, region.start) + min(g.end, region.end)) / 2,
            y + 0.3,
            f"{g.name} {arrow}",
            ha="center",
            fontsize=7,
        )
    ax.set_ylim(-2.6, 0.9)
    ax.set_yticks([])
    ax.set_ylabel("genes", rotation=0, ha="right", va="center")
    if not shown:
        ax.text(0.5, 0.5, "no genes in region", transform=ax.transAxes, ha="center", color="gray")


def _box(start: int, y: float, width: int, color: str):
    from matplotlib.patches import Rectangle

    return Rectangle((start, y - 0.25), width, 0.5, color=color)


def plot_tracks(
    region: Region,
    observed: np.ndarray,
    predicted: np.ndarray,
    tracks: list[Track],
    genes: list[Gene],
    out: str | Path,
    title: str = "",
) -> Path:
    """``observed``, ``predicted``: (len(region), n_tracks) raw coverage. Writes a PNG atomically."""
    from dnallm.io import file_figures

    plt = file_figures()

    n = len(tracks)
    fig, axes = plt.subplots(
        n + 1, 1, figsize=(12, 1.6 * n + 1.4), sharex=True, gridspec_kw={"height_ratios": [2] * n + [1.2]}
    )
    x0 = region.start
    for i, (ax, t) in enumerate(zip(axes, tracks)):
        pos, obs = _downsample(observed[:, i : i + 1], MAX_POINTS)
        _, pred = _downsample(predicted[:, i : i + 1], MAX_POINTS)
        ax.fill_between(pos + x0, obs[:, 0], color="0.6", lw=0, label="observed")
        ax.plot(pos + x0, pred[:, 0], color="tab:orange", lw=0.9, label="predicted")
        r = _log1p_r(predicted[:, i], observed[:, i])
        score = f"log1p r = {r:.3f}" if np.isfinite(r) else "log1p r: n/a (observed is flat here)"
        ax.set_ylabel(f"{t.name}\n({t.cell_type} {t.strand})", rotation=0, ha="right", va="center", fontsize=8)
        ax.text(0.995, 0.92, score, transform=ax.transAxes, ha="right", va="top", fontsize=8)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].legend(loc="upper left", fontsize=8, frameon=False, ncol=2)
    _draw_genes(axes[-1], genes, region)
    axes[-1].set_xlim(region.start, region.end)
    axes[-1].set_xlabel(f"{region.chrom} position (bp)")
    fig.suptitle(title or f"{region}: observed vs predicted coverage", fontsize=10)
    fig.tight_layout()
    out = Path(out)
    save_figure(fig, out)
    return out
