"""The fidelity grid's table: signals down, designs x k across, the bar marked where it is not held."""

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _grid():
    spec = importlib.util.spec_from_file_location("fidelity_grid", REPO / "scripts" / "fidelity_grid.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(signal, design, k, fused, head, text, classes):
    holds = fused >= head - 0.02 and (fused >= 0.95 or head < 0.95)
    return {"signal": signal, "design": design, "k": k, "dna+text": fused, "text-only": text, "dna-only": head,
            "chance": round(1 / classes, 3), "holds": holds}  # fmt: skip


def test_pivot_puts_each_run_in_its_signal_and_design_and_marks_misses(tmp_path):
    grid = _grid()
    rows = [
        _row("site", "pooled+aligned+kmers", 8, 1.0, 1.0, 0.32, 3),
        _row("indel", "pooled+aligned+kmers", 8, 0.99, 1.0, 0.22, 4),
        _row("site", "none", 8, 0.333, 1.0, 0.32, 3),
        _row("indel", "none", 8, 0.985, 1.0, 0.22, 4),
        _row("site", "published", 1, 0.5, 1.0, 0.32, 3),
    ]
    lines = grid.pivot_table(rows).splitlines()
    assert lines[0] == (
        "| signal (classes) | DNA-only head | text-only | pooled+aligned+kmers, k = 8 | none, k = 8 | published, k = 1 |"
    )
    assert lines[2] == "| site (3) | 1.000 | 0.320 | 1.000 | 0.333 ✗ | 0.500 ✗ |"
    assert lines[3] == "| indel (4) | 1.000 | 0.220 | 0.990 | 0.985 |  |"  # no published run for indel
    grid.write_tables(tmp_path, rows)
    text = (tmp_path / "grid.md").read_text()
    assert text.count("| site (3) |") == 1 and text.count("| site | none | 8 | 0.333 |") == 1
