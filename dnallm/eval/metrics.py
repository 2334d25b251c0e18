"""Classification metrics over parsed answers."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import precision_recall_fscore_support

# Macro averages depend on two choices, so published figures differ by convention; three
# are reported, each named by what it is:
# - training_labels_zero_division_0: every label the model was trained on (plus ground-truth
#   labels it never saw); a label without predictions or records scores 0;
# - truth_labels_zero_division_0: the labels present in the ground truth, 0 for a label never
#   predicted (BioReason's KEGG analysis: per-class one-vs-rest scores, averaged);
# - truth_labels_zero_division_1: the labels present in the ground truth, a label never
#   predicted scoring precision 1 (scikit-learn's classification_report called with
#   zero_division=1, as the Genos fusion fork's evaluation does).
MACRO_CONVENTIONS = ("training_labels_zero_division_0", "truth_labels_zero_division_0", "truth_labels_zero_division_1")

# Binary tasks name their positive class; otherwise the second label in sorted order is
# positive (as BioReason takes it: benign / pathogenic -> pathogenic).
POSITIVE_LABELS = ("pathogenic",)


def macro_scores(truth: list[str], pred: list[str], labels: list[str], zero_division: int) -> dict:
    p, r, f, _ = precision_recall_fscore_support(truth, pred, labels=labels, average=None, zero_division=zero_division)
    return {
        "labels": len(labels),
        "zero_division": zero_division,
        "precision": float(np.mean(p)),
        "recall": float(np.mean(r)),
        "f1": float(np.mean(f)),
    }


def positive_label(labels: list[str]) -> str | None:
    """The positive class of a two-label task; None for more or fewer labels."""
    if len(labels) != 2:
        return None
    named = [x for x in labels if x in POSITIVE_LABELS]
    return named[0] if named else sorted(labels)[1]


def classification_metrics(truth: list[str], pred: list[str], training_labels: list[str] | None = None) -> dict:
    """Accuracy, macro precision / recall / F1 under each convention, per-class scores over
    the ground-truth classes, and for a two-label task the positive class's scores.

    ``training_labels``: the labels the model was trained on (default: the ground-truth
    labels). ``macro_*`` at the top level are ``macro.training_labels_zero_division_0``. A prediction
    outside the labels (or empty: no 'Answer:' found) is simply wrong.
    """
    if len(truth) != len(pred):
        raise ValueError(f"{len(truth)} ground-truth labels but {len(pred)} predictions")
    if not truth:
        raise ValueError("no examples to score")
    truth_labels = sorted(set(truth))
    all_labels = sorted(set(training_labels or ()) | set(truth_labels))
    macro = {
        "training_labels_zero_division_0": macro_scores(truth, pred, all_labels, zero_division=0),
        "truth_labels_zero_division_0": macro_scores(truth, pred, truth_labels, zero_division=0),
        "truth_labels_zero_division_1": macro_scores(truth, pred, truth_labels, zero_division=1),
    }
    p, r, f, support = precision_recall_fscore_support(truth, pred, labels=truth_labels, average=None, zero_division=0)
    metrics = {
        "n": len(truth),
        "accuracy": float(np.mean([t == q for t, q in zip(truth, pred)])),
        "macro_precision": macro["training_labels_zero_division_0"]["precision"],
        "macro_recall": macro["training_labels_zero_division_0"]["recall"],
        "macro_f1": macro["training_labels_zero_division_0"]["f1"],
        "macro": macro,
        "per_class": {
            label: {"precision": float(pi), "recall": float(ri), "f1": float(fi), "support": int(si)}
            for label, pi, ri, fi, si in zip(truth_labels, p, r, f, support)
        },
    }
    positive = positive_label(list(training_labels) if training_labels else truth_labels)
    if positive is not None:
        bp, br, bf, bs = precision_recall_fscore_support(truth, pred, labels=[positive], average=None, zero_division=0)
        metrics["binary"] = {
            "positive_label": positive,
            "precision": float(bp[0]),
            "recall": float(br[0]),
            "f1": float(bf[0]),
            "support": int(bs[0]),
        }
    return metrics


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
