"""Plain-text tables for the terminal and markdown tables for reports."""

from __future__ import annotations


def text_table(header: list[str], rows: list[list], align: str | None = None) -> str:
    """Columns padded to the widest cell; ``align`` one of 'l'/'r' per column (default: text left, numbers right)."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    align = align or "".join("r" if rows and isinstance(rows[0][i], (int, float)) else "l" for i in range(len(header)))

    def line(values):
        return "  ".join(v.rjust(w) if a == "r" else v.ljust(w) for v, w, a in zip(values, widths, align)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in cells])


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def number_summary(metrics: dict) -> str:
    """``eval.score=number``: the correlations and error over the replies that hold a number."""
    return text_table(
        ["n", "with a number", "pearson", "spearman", "MAE", "truncated"],
        [
            [
                metrics["n"],
                metrics["n_scored"],
                *("n/a" if metrics[k] is None else metrics[k] for k in ("pearson", "spearman", "mae")),
                metrics.get("truncated", 0),
            ]
        ],
    )


def text_summary(metrics: dict) -> str:
    """``eval.score=text``: exact match and token F1."""
    return text_table(
        ["n", "exact match", "token F1", "no_answer", "truncated"],
        [
            [
                metrics["n"],
                metrics["exact_match"],
                metrics["token_f1"],
                metrics["no_answer"],
                metrics.get("truncated", 0),
            ]
        ],
    )


def metrics_summary(metrics: dict, max_classes: int = 12) -> str:
    """Overall scores, both macro conventions, the positive class of a two-label task, then
    per-class rows by support (the largest ``max_classes``)."""
    overall = text_table(
        ["n", "accuracy", "no_answer", "truncated"],
        [[metrics["n"], metrics["accuracy"], metrics.get("no_answer", 0), metrics.get("truncated", 0)]],
    )
    over = {"training": "all training labels", "truth": "labels in the ground truth"}
    macro = text_table(
        ["macro over", "labels", "zero_division", "macro_P", "macro_R", "macro_F1"],
        [
            [over[k.split("_")[0]], m["labels"], m["zero_division"], m["precision"], m["recall"], m["f1"]]
            for k, m in metrics["macro"].items()
        ],
    )
    if metrics.get("label_source"):
        # Macro scores depend on the label set: say whether it came from the training file or (moved) the eval data.
        macro += f"\nlabel set: {metrics['label_source']}"
    parts = [overall, macro]
    if "binary" in metrics:
        b = metrics["binary"]
        parts.append(
            text_table(
                ["positive class", "support", "P", "R", "F1"],
                [[b["positive_label"], b["support"], b["precision"], b["recall"], b["f1"]]],
            )
        )
    per_class = sorted(metrics["per_class"].items(), key=lambda kv: (-kv[1]["support"], kv[0]))
    rows = [
        [_short(label), c["support"], c["precision"], c["recall"], c["f1"]] for label, c in per_class[:max_classes]
    ]
    parts.append(text_table(["class", "support", "P", "R", "F1"], rows))
    more = f"\n... {len(per_class) - max_classes} more classes in metrics.json" if len(per_class) > max_classes else ""
    return "\n\n".join(parts) + more


def _short(label: str, width: int = 40) -> str:
    return label if len(label) <= width else label[: width - 1] + "~"
