"""The DNA reaches the answer: on a task whose label lives only in the DNA, the fusion model
learns it and the same LLM without DNA stays at chance. All three baselines, one harness."""

from pathlib import Path

import json

import pytest

from dnallm.config import load_recipe
from dnallm.data.kegg import write_jsonl
from dnallm.data.synthetic import planted_signal_records
from dnallm.eval.baselines import BaselinesRecipe, run_baselines

REPO = Path(__file__).resolve().parent.parent

N_CLASSES = 4


@pytest.fixture(scope="module")
def planted_task(tmp_path_factory):
    out = tmp_path_factory.mktemp("fidelity")
    records = planted_signal_records(800, n_classes=N_CLASSES, length=4001, seed=11, signal="motif")
    write_jsonl(out / "test.jsonl", records[:200])  # 200 test records: one error costs 0.5 points
    write_jsonl(out / "train.jsonl", records[200:])
    return out


def _train_losses(run_dir):
    [checkpoint] = sorted(run_dir.glob("checkpoint-*"))
    return [h["loss"] for h in json.loads((checkpoint / "trainer_state.json").read_text())["history"] if "loss" in h]


def test_dna_plus_text_learns_planted_signal_and_text_only_stays_at_chance(planted_task, tiny_models, tmp_path):
    # The recipe of the README's example run, pointed at this test's models and data.
    recipe = load_recipe(REPO / "recipes/baselines/planted_tiny.yaml", [
        f"output_dir={tmp_path}", f"encoder.name_or_path={tiny_models['genos']}", f"llm.name_or_path={tiny_models['qwen3']}",
        f"data.train={planted_task / 'train.jsonl'}", f"test={planted_task / 'test.jsonl'}",
    ], cls=BaselinesRecipe)
    result = run_baselines(recipe)
    acc = {row["model"]: row["accuracy"] for row in result["rows"]}
    chance = 1 / N_CLASSES

    assert acc["dna+text"] >= 0.95, result["table"]
    assert abs(acc["text-only"] - chance) <= 0.10, result["table"]
    assert acc["dna-only"] >= chance + 0.5, result["table"]  # the frozen encoder alone carries the motif

    for run in ("dna_text", "text_only"):
        losses = _train_losses(tmp_path / run)
        assert losses[-1] < losses[0]
    # Both LLMs learn the answer format; only the one that sees DNA can pick the right label.
    assert result["results"]["text-only"]["no_answer"] == 0 and result["results"]["dna+text"]["no_answer"] == 0
    fit = result["results"]["dna-only"]["fit"]
    assert fit["last_epoch_loss"] < 0.5 * fit["first_epoch_loss"]

    saved = json.loads((tmp_path / "comparison.json").read_text())
    assert [r["model"] for r in saved["rows"]] == ["dna+text", "text-only", "dna-only"]
    assert "DNA adds" in (tmp_path / "comparison.md").read_text()
    assert (tmp_path / "comparison.png").stat().st_size > 5_000
    for run in ("dna_text", "text_only", "dna_only"):
        assert {p.name for p in (tmp_path / run / "eval").iterdir()} == {"metrics.json", "predictions.csv", "confusion.png"}
