"""Classification metrics over parsed answers."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import precision_recall_fscore_support


def classification_metrics(truth: list[str], pred: list[str]) -> dict:
    """Accuracy and macro precision / recall / F1 over the ground-truth classes.

    A prediction outside those classes (or empty: no 'Answer:' found) is simply wrong.
    ``zero_division=0`` as in scikit-learn's convention.
    """
    if len(truth) != len(pred):
        raise ValueError(f"{len(truth)} ground-truth labels but {len(pred)} predictions")
    if not truth:
        raise ValueError("no examples to score")
    labels = sorted(set(truth))
    p, r, f, support = precision_recall_fscore_support(truth, pred, labels=labels, average=None, zero_division=0)
    return {
        "n": len(truth),
        "accuracy": float(np.mean([t == q for t, q in zip(truth, pred)])),
        "macro_precision": float(np.mean(p)),
        "macro_recall": float(np.mean(r)),
        "macro_f1": float(np.mean(f)),
        "per_class": {
            label: {"precision": float(pi), "recall": float(ri), "f1": float(fi), "support": int(si)}
            for label, pi, ri, fi, si in zip(labels, p, r, f, support)
        },
    }


OTHER = "(other / none)"


def confusion_counts(truth: list[str], pred: list[str]) -> tuple[list[str], list[str], np.ndarray]:
    """Counts of (true class, predicted class).

    Rows: ground-truth classes (sorted). Columns: the same classes, then one ``OTHER``
    column for every prediction outside them (no answer, or an answer no record has).
    -> (row labels, column labels, counts (n_rows, n_rows + 1))
    """
    labels = sorted(set(truth))
    index = {label: i for i, label in enumerate(labels)}
    counts = np.zeros((len(labels), len(labels) + 1), dtype=np.int64)
    for t, p in zip(truth, pred):
        counts[index[t], index.get(p, len(labels))] += 1
    return labels, labels + [OTHER], counts
