"""Coverage metrics, accumulated chunk by chunk: Pearson of log1p at base, bin and gene level.

- base: every base of the evaluated regions, per track.
- binned: coverage summed over ``bin_size`` bp bins (from each region's start; a last
  partial bin is dropped), then log1p.
- gene: coverage summed over each gene's exons (union over transcripts), then log1p;
  ``+`` tracks score ``+`` genes, ``-`` tracks ``-`` genes, unstranded tracks all genes.
  Only genes lying wholly inside the evaluated regions count.
- predicted_over_observed: total predicted over total observed coverage (1: right scale);
  Pearson alone cannot see a prediction that is right in shape but too low everywhere.
"""

from __future__ import annotations

import numpy as np
import torch

from dnallm.data.gene_models import Gene
from dnallm.data.genome import Region
from dnallm.data.tracks import Track
from dnallm.data.transform import RunningPearson


def _r(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def _log1p_pearson(x: np.ndarray, y: np.ndarray) -> RunningPearson:
    p = RunningPearson(x.shape[1])
    p.update(torch.from_numpy(np.log1p(x)), torch.from_numpy(np.log1p(y)))
    return p


class Binner:
    """Sums of consecutive ``bin_size`` rows across chunks of one region."""

    def __init__(self, bin_size: int):
        self.bin_size = bin_size
        self.carry: np.ndarray | None = None

    def __call__(self, values: np.ndarray) -> np.ndarray:
        if self.carry is not None:
            values = np.concatenate([self.carry, values])
        n_full = len(values) // self.bin_size * self.bin_size
        self.carry = values[n_full:]
        return values[:n_full].reshape(-1, self.bin_size, values.shape[1]).sum(axis=1)


class GeneSums:
    """Per gene and track, the sum of predicted and of observed coverage over its exons."""

    def __init__(self, genes: list[Gene], n_tracks: int):
        self.genes = genes
        self.pred = np.zeros((len(genes), n_tracks))
        self.obs = np.zeros((len(genes), n_tracks))
        self._exons: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        rows = [(g.chrom, s, e, i) for i, g in enumerate(genes) for s, e in g.exons]
        for chrom in {r[0] for r in rows}:
            mine = sorted((s, e, i) for c, s, e, i in rows if c == chrom)
            self._exons[chrom] = tuple(np.array(col) for col in zip(*mine))
        self.max_exon = max((e - s for _, s, e, _ in rows), default=0)

    def add(self, chrom: str, start: int, pred: np.ndarray, obs: np.ndarray) -> None:
        if chrom not in self._exons:
            return
        starts, ends, gene_idx = self._exons[chrom]
        end = start + len(pred)
        lo, hi = np.searchsorted(starts, start - self.max_exon), np.searchsorted(starts, end)
        cum_pred = np.concatenate([np.zeros((1, pred.shape[1])), np.cumsum(pred, axis=0, dtype=np.float64)])
        cum_obs = np.concatenate([np.zeros((1, obs.shape[1])), np.cumsum(obs, axis=0, dtype=np.float64)])
        for s, e, g in zip(starts[lo:hi], ends[lo:hi], gene_idx[lo:hi]):
            a, b = max(s, start) - start, min(e, end) - start
            if a < b:
                self.pred[g] += cum_pred[b] - cum_pred[a]
                self.obs[g] += cum_obs[b] - cum_obs[a]


class CoverageMetrics:
    """Feed ``(region, start, pred, obs)`` chunks of each region in order; ``result()`` at the end."""

    def __init__(self, tracks: list[Track], genes: list[Gene], regions: list[Region], bin_size: int = 32):
        self.tracks = tracks
        self.base = RunningPearson(len(tracks))
        self.binned = RunningPearson(len(tracks)) if bin_size > 0 else None
        self.bin_size = bin_size
        self._binners: dict[Region, tuple[Binner, Binner]] = {}
        inside = [g for g in genes if any(g.inside(r) for r in regions)]
        self.genes = GeneSums(inside, len(tracks))
        self.n_genes_outside = len(genes) - len(inside)
        self.missing = np.zeros(len(tracks), dtype=np.int64)
        self.totals = np.zeros((2, len(tracks)))  # summed predicted, observed: is the scale right, not only the shape?
        self.n_bases = 0

    def add(self, region: Region, start: int, pred: np.ndarray, obs: np.ndarray, n_missing: np.ndarray) -> None:
        """``pred``, ``obs``: (n, n_tracks) raw units for bases ``start .. start+n`` of ``region``."""
        self.base.merge(_log1p_pearson(pred, obs))
        if self.binned is not None:
            bin_pred, bin_obs = self._binners.setdefault(region, (Binner(self.bin_size), Binner(self.bin_size)))
            p, o = bin_pred(pred), bin_obs(obs)
            if len(p):
                self.binned.merge(_log1p_pearson(p, o))
        self.genes.add(region.chrom, start, pred, obs)
        self.missing += n_missing
        self.totals += [pred.sum(axis=0, dtype=np.float64), obs.sum(axis=0, dtype=np.float64)]
        self.n_bases += len(pred)

    def _gene_level(self, i: int, track: Track) -> tuple[float | None, int]:
        use = [k for k, g in enumerate(self.genes.genes) if track.strand in (".", g.strand)]
        if len(use) < 2:
            return None, len(use)
        p = _log1p_pearson(self.genes.pred[use, i : i + 1], self.genes.obs[use, i : i + 1])
        return _r(p.value()[0]), len(use)

    def result(self) -> dict:
        base = self.base.value()
        binned = self.binned.value() if self.binned is not None else None
        per_track = {}
        for i, t in enumerate(self.tracks):
            gene_r, n_genes = self._gene_level(i, t)
            entry = {"cell_type": t.cell_type, "strand": t.strand, "pearson_log1p_base": _r(base[i])}
            if self.binned is not None:
                entry[f"pearson_log1p_bin{self.bin_size}"] = _r(binned[i])
            pred_total, obs_total = self.totals[:, i]
            entry.update(
                {
                    "pearson_log1p_gene": gene_r,
                    "n_genes": n_genes,
                    "predicted_over_observed": float(pred_total / obs_total) if obs_total > 0 else None,
                    "bases_without_value": int(self.missing[i]),
                }
            )
            per_track[t.name] = entry
        return {
            "n_bases": self.n_bases,
            "bin_size": self.bin_size,
            "genes_outside_regions": self.n_genes_outside,
            "tracks": per_track,
        }
