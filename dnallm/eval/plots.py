"""Figures a person would rather look at than read: confusion matrix, baseline comparison."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dnallm.eval.metrics import confusion_counts
from dnallm.io import file_figures, save_figure

plt = file_figures()  # files only; no display needed


def _short(label: str, width: int = 32) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"


def plot_confusion(truth: list[str], pred: list[str], path: str | Path, title: str = "") -> None:
    """Row-normalised confusion matrix; counts written in the cells while they still fit.

    The figure grows with the number of classes (about 0.3 inch per class), so 30+ KEGG
    diseases stay legible.
    """
    rows, cols, counts = confusion_counts(truth, pred)
    fractions = counts / counts.sum(1, keepdims=True).clip(min=1)  # (n_rows, n_rows + 1)
    n = len(rows)
    side = max(5.0, 0.32 * n + 3.0)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    image = ax.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    font = max(6, min(10, int(260 / max(n, 1))))
    ax.set_xticks(range(len(cols)), [_short(c) for c in cols], rotation=90, fontsize=font)
    ax.set_yticks(range(n), [f"{_short(r)} ({counts[i].sum()})" for i, r in enumerate(rows)], fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth (support)")
    if n <= 40:
        for i, j in zip(*np.nonzero(counts)):
            ax.text(
                j,
                i,
                str(counts[i, j]),
                ha="center",
                va="center",
                fontsize=font,
                color="white" if fractions[i, j] > 0.5 else "black",
            )
    accuracy = np.trace(counts[:, :n]) / max(counts.sum(), 1)
    ax.set_title(f"{title + ': ' if title else ''}accuracy {accuracy:.3f} on {counts.sum()} records")
    fig.colorbar(image, ax=ax, fraction=0.03, label="fraction of the true class")
    save_figure(fig, path, bbox_inches="tight")


def plot_comparison(rows: list[dict], path: str | Path, title: str = "") -> None:
    """Grouped bars of accuracy and macro F1, one group per model, chance as a dashed line."""
    names = [r["model"] for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(1.8 * len(rows) + 3, 4))
    for offset, key in ((-0.2, "accuracy"), (0.2, "macro_f1")):
        values = [r[key] for r in rows]
        bars = ax.bar(x + offset, values, width=0.4, label=key.replace("_", " "))
        ax.bar_label(bars, fmt="%.2f", fontsize=8)
    if rows and rows[0].get("chance"):
        ax.axhline(rows[0]["chance"], color="grey", linestyle="--", linewidth=1, label="chance (majority class)")
    ax.set_xticks(x, names)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("score on the test set")
    ax.set_title(title or "baselines")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    save_figure(fig, path, bbox_inches="tight")


def plot_numbers(
    truth: list[float], pred: list[float | None], metrics: dict, path: str | Path, title: str = ""
) -> None:
    """Predicted against true values (``eval.score=number``), the identity line, the scores in the
    title; replies without a number counted there."""
    pairs = np.array([(t, p) for t, p in zip(truth, pred) if p is not None]).reshape(-1, 2)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(pairs[:, 0], pairs[:, 1], s=12, alpha=0.6)
    if len(truth):
        low, high = min(truth + list(pairs[:, 1])), max(truth + list(pairs[:, 1]))
        ax.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1, label="predicted = true")
        ax.legend(loc="upper left", fontsize=8)
    ax.set_xlabel("true value")
    ax.set_ylabel("predicted value")

    def shown(key: str) -> str:
        return "n/a" if metrics.get(key) is None else f"{metrics[key]:.3f}"

    ax.set_title(
        f"{title + ': ' if title else ''}Pearson {shown('pearson')}, Spearman {shown('spearman')}, "
        f"MAE {shown('mae')}\n{metrics['n_scored']} of {metrics['n']} replies hold a number",
        fontsize=9,
    )
    save_figure(fig, path, bbox_inches="tight")
