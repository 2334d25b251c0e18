"""Metrics over parsed answers: labels (classification), numbers (correlation, error), free text."""

from __future__ import annotations

import math
import re
import string
from collections import Counter

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


# A number as a reply writes it: 3, -2.5, −2.5, 1e-3, .25, 1,000 (thousands separated by commas).
_NUMBER = re.compile(
    r"[-+\u2212]?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d*)?(?:[eE][-+]?\d+)?|[-+\u2212]?\.\d+(?:[eE][-+]?\d+)?"
)


def _as_float(text: str) -> float | None:
    value = float(text.replace(",", "").replace("\u2212", "-"))
    return value if math.isfinite(value) else None


def parse_number(answer: str) -> float | None:
    """The first number in a reply's answer (``parse_answer``'s text); None when it holds none (or
    one too large to be finite)."""
    match = _NUMBER.search(answer)
    return _as_float(match.group()) if match else None


def whole_number(answer: str) -> float | None:
    """A gold answer that is a number and nothing else ('3', '-1.5', '1,000'); None otherwise."""
    match = _NUMBER.fullmatch(answer.strip().rstrip("."))
    return _as_float(match.group()) if match else None


def number_metrics(truth: list[float], pred: list[float | None]) -> dict:
    """Pearson and Spearman correlation and mean absolute error over the replies that hold a
    number (scipy, scikit-learn); ``no_number`` counts the others (each one a miss, shown). A
    correlation is None where it is undefined (fewer than two replies, or constant values)."""
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import mean_absolute_error

    pairs = [(t, p) for t, p in zip(truth, pred) if p is not None]
    out = {"n": len(truth), "n_scored": len(pairs), "no_number": len(truth) - len(pairs)}
    if not pairs:
        return {**out, "pearson": None, "spearman": None, "mae": None}
    t, p = np.array(pairs).T
    defined = len(pairs) >= 2 and np.ptp(t) > 0 and np.ptp(p) > 0
    return {
        **out,
        "pearson": float(pearsonr(t, p).statistic) if defined else None,
        "spearman": float(spearmanr(t, p).statistic) if defined else None,
        "mae": float(mean_absolute_error(t, p)),
    }


def text_match(truth: str, pred: str) -> bool:
    """Exact match after SQuAD's normalisation."""
    return _text_tokens(truth) == _text_tokens(pred)


def _text_tokens(text: str) -> list[str]:
    """SQuAD's normalisation: lower case, no punctuation or articles, single spaces."""
    text = "".join(c for c in text.lower() if c not in string.punctuation)
    return [w for w in text.split() if w not in ("a", "an", "the")]


def text_metrics(truth: list[str], pred: list[str]) -> dict:
    """Exact match and token F1 (SQuAD's definitions), averaged over the records."""
    exact, f1 = [], []
    for t, p in zip(truth, pred):
        t_tokens, p_tokens = _text_tokens(t), _text_tokens(p)
        exact.append(float(t_tokens == p_tokens))
        common = sum((Counter(t_tokens) & Counter(p_tokens)).values())
        if not t_tokens or not p_tokens:
            f1.append(float(t_tokens == p_tokens))
        elif common == 0:
            f1.append(0.0)
        else:
            precision, recall = common / len(p_tokens), common / len(t_tokens)
            f1.append(2 * precision * recall / (precision + recall))
    n = max(len(truth), 1)
    return {
        "n": len(truth),
        "exact_match": sum(exact) / n,
        "token_f1": sum(f1) / n,
        "no_answer": sum(not p for p in pred),
    }
