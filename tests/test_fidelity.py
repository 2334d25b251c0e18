"""Fusion is never worse than its parts: on every planted signal, DNA + text reaches what the
DNA-only head over the same frozen embeddings and the same pair features reaches, at k = 1 and
at k = 8, the head itself is strong, and the same LLM without DNA stays at chance. All three
models through one harness (``dnallm baselines``).

The signals are like real variants: a motif the variant completes, a motif beside it, the
5-mer around it, the variant's single base, the substitution class (only the pair decides),
a binding site the variant creates, breaks or leaves alone, an insertion or deletion of a
given size (the two windows differ in length), and a tandem repeat that gains or loses a unit.
"""

from pathlib import Path

import json

import pytest

from dnallm.config import load_recipe
from dnallm.data.kegg import write_jsonl
from dnallm.data.synthetic import FIXED_CLASSES, planted_signal_records
from dnallm.eval.baselines import BaselinesRecipe, run_baselines

REPO = Path(__file__).resolve().parent.parent


def _planted_task(out: Path, signal: str, n_test: int = 100) -> tuple[Path, int]:
    n_classes = FIXED_CLASSES.get(signal, 4)
    records = planted_signal_records(600 + n_test, n_classes=n_classes, length=4001, seed=11, signal=signal)
    write_jsonl(out / "test.jsonl", records[:n_test])
    write_jsonl(out / "train.jsonl", records[n_test:])
    return out, n_classes


def _baselines(tiny_models, data: Path, out: Path, models: list[str], *overrides: str) -> dict:
    # The recipe of the README's example run, pointed at this test's models and data.
    recipe = load_recipe(
        REPO / "recipes/baselines/planted_tiny.yaml",
        [
            f"output_dir={out}",
            f"encoder.name_or_path={tiny_models['genos']}",
            f"llm.name_or_path={tiny_models['qwen3']}",
            f"data.train={data / 'train.jsonl'}",
            f"test={data / 'test.jsonl'}",
            f"models={','.join(models)}",
            *overrides,
        ],
        cls=BaselinesRecipe,
    )
    return run_baselines(recipe)


def _accuracy(result: dict) -> dict[str, float]:
    return {row["model"]: row["accuracy"] for row in result["rows"]}


def _whole_replies(result: dict) -> None:
    """Every reply is whole and parsed: no label was cut at max_new_tokens."""
    for name, metrics in result["results"].items():
        assert metrics.get("truncated", 0) == 0 and metrics["no_answer"] == 0, (name, metrics)


# Every signal at k = 8 (the real recipes' compression) and at k = 1, each for STEPS steps, half
# the recipe's 600. The LLM reads the summary from step ~100 to ~200 (docs/eval.md, "What was tried").
# `python scripts/fidelity_grid.py --pools 8,1 --records 700 --test 100 train.max_steps=300` runs the
# same cases for every design and writes the signal x design x k table of docs/eval.md and the README.
SIGNALS = ("motif", "flank", "kmer", "centre", "substitution", "site", "indel", "repeat")
STEPS = 300
CASES = [(signal, k) for k in (8, 1) for signal in SIGNALS]


@pytest.fixture(scope="module")
def signal_data(tmp_path_factory):
    """Each signal's planted task, written once for the module: signal -> (data dir, n_classes)."""
    made = {}

    def get(signal: str) -> tuple[Path, int]:
        if signal not in made:
            made[signal] = _planted_task(tmp_path_factory.mktemp(f"data-{signal}"), signal)
        return made[signal]

    return get


@pytest.fixture(scope="module")
def dna_only_accuracy(tiny_models, signal_data, tmp_path_factory):
    """The DNA-only head's test accuracy on each signal, trained once for the module. The head reads
    the encoder's embeddings through the summary's pair features, not the projector: it is the same
    at every k."""
    scores = {}

    def get(signal: str) -> tuple[float, str]:
        if signal not in scores:
            data, _ = signal_data(signal)
            result = _baselines(tiny_models, data, tmp_path_factory.mktemp(f"head-{signal}"), ["dna-only"])
            scores[signal] = (_accuracy(result)["dna-only"], result["table"])
        return scores[signal]

    return get


@pytest.mark.parametrize("signal", SIGNALS)
def test_the_dna_only_head_is_a_strong_baseline(signal, dna_only_accuracy):
    """The head reads the pair as the fusion model's summary does (aligned change, k-mers, pooled)."""
    accuracy, table = dna_only_accuracy(signal)
    assert accuracy >= 0.90, table


@pytest.mark.parametrize("signal, k", CASES, ids=[f"{s}-k{k}" for s, k in CASES])
def test_dna_plus_text_is_never_worse_than_a_strong_dna_only_head(
    signal, k, tiny_models, signal_data, dna_only_accuracy, tmp_path
):
    data, _ = signal_data(signal)
    result = _baselines(
        tiny_models, data, tmp_path / "run", ["dna+text"], f"projector.pool={k}", f"train.max_steps={STEPS}"
    )
    fused, (head, head_table) = _accuracy(result)["dna+text"], dna_only_accuracy(signal)
    table = f"{result['table']}\nDNA-only head: {head:.3f}\n{head_table}"
    assert head >= 0.90, table
    assert fused >= head - 0.02, table
    assert fused >= 0.95, table
    _whole_replies(result)


# The text-only model sees the same question for every record: one run per label set
# (motif, flank, kmer, centre, indel and repeat share their four labels).
TEXT_ONLY = {"site": 3, "motif": 4, "substitution": 6}


@pytest.mark.parametrize("signal", TEXT_ONLY, ids=[f"{n}-classes" for n in TEXT_ONLY.values()])
def test_text_only_stays_at_chance(signal, tiny_models, signal_data, tmp_path):
    data, n_classes = signal_data(signal)
    result = _baselines(tiny_models, data, tmp_path / "run", ["text-only"], f"train.max_steps={STEPS}")
    assert abs(_accuracy(result)["text-only"] - 1 / n_classes) <= 0.10, result["table"]
    _whole_replies(result)


def _train_losses(run_dir):
    [checkpoint] = sorted(run_dir.glob("checkpoint-*"))
    return [h["loss"] for h in json.loads((checkpoint / "trainer_state.json").read_text())["history"] if "loss" in h]


def test_baselines_outputs_and_learning_curves(tiny_models, signal_data, tmp_path):
    data, _ = signal_data("centre")
    # What is written, and that each model learns: briefly (the scores are the tests above).
    result = _baselines(
        tiny_models,
        data,
        tmp_path / "run",
        ["dna+text", "text-only", "dna-only"],
        "train.max_steps=40",
        "dna_head.epochs=20",
    )
    out = tmp_path / "run"
    for run in ("dna_text", "text_only"):
        losses = _train_losses(out / run)
        assert losses[-1] < losses[0]
    fit = result["results"]["dna-only"]["fit"]
    assert fit["last_epoch_loss"] < 0.5 * fit["first_epoch_loss"]
    saved = json.loads((out / "comparison.json").read_text())
    assert [r["model"] for r in saved["rows"]] == ["dna+text", "text-only", "dna-only"]
    assert "DNA adds" in (out / "comparison.md").read_text()
    assert (out / "comparison.png").stat().st_size > 5_000
    for run in ("dna_text", "text_only", "dna_only"):
        assert {p.name for p in (out / run / "eval").iterdir()} == {"metrics.json", "predictions.csv", "confusion.png"}
