"""Variant effect (pathogenic / benign): binary metrics in eval and baselines, on a planted task."""

import csv
import json
from pathlib import Path

import pytest

from dnallm.cli import main
from dnallm.config import load_recipe
from dnallm.eval.metrics import classification_metrics
from dnallm.eval.table import metrics_summary

REPO = Path(__file__).resolve().parent.parent


def test_binary_scores_name_the_pathogenic_class():
    truth = ["pathogenic", "pathogenic", "benign", "benign", "benign"]
    pred = ["pathogenic", "benign", "benign", "benign", ""]
    m = classification_metrics(truth, pred, training_labels=["benign", "pathogenic"])
    assert m["accuracy"] == pytest.approx(0.6)
    b = m["binary"]  # pathogenic: P 1/1, R 1/2
    assert b["positive_label"] == "pathogenic" and b["f1"] == pytest.approx(2 / 3) and b["support"] == 2
    # benign: P 2/3 R 2/3 -> F1 2/3; macro F1 = (2/3 + 2/3) / 2 either way (both labels occur)
    for convention in m["macro"].values():  # both labels occur and are predicted: every convention agrees
        assert convention["f1"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx(2 / 3)
    assert classification_metrics(["a", "b", "c"], ["a", "b", "c"]).get("binary") is None


def test_macro_conventions_differ_when_a_training_label_is_absent_or_never_predicted():
    training = ["a", "b", "c", "d"]
    truth, pred = ["a", "a", "b", "c"], ["a", "a", "b", "b"]
    m = classification_metrics(truth, pred, training_labels=training)
    # over a, b, c, d with zero_division=0: P (1 + .5 + 0 + 0) / 4, F1 (1 + 2/3 + 0 + 0) / 4
    assert m["macro"]["training_labels_zero_division_0"] == pytest.approx(
        {"labels": 4, "zero_division": 0, "precision": 1.5 / 4, "recall": 2 / 4, "f1": (1 + 2 / 3) / 4}
    )
    assert (m["macro_precision"], m["macro_f1"]) == pytest.approx((1.5 / 4, (1 + 2 / 3) / 4))
    # over a, b, c: c was never predicted, so its precision counts 0, or 1 with zero_division=1
    assert m["macro"]["truth_labels_zero_division_0"] == pytest.approx(
        {"labels": 3, "zero_division": 0, "precision": 1.5 / 3, "recall": 2 / 3, "f1": (1 + 2 / 3) / 3}
    )
    assert m["macro"]["truth_labels_zero_division_1"] == pytest.approx(
        {"labels": 3, "zero_division": 1, "precision": 2.5 / 3, "recall": 2 / 3, "f1": (1 + 2 / 3) / 3}
    )
    table = metrics_summary(m)
    assert "all training labels" in table and "labels in the ground truth" in table


def test_variant_effect_recipes_load_and_name_the_published_models():
    for task in ("coding", "non_snv"):
        for llm, name in (("4b", "Qwen/Qwen3-4B"), ("1.7b", "Qwen/Qwen3-1.7B")):
            recipe = load_recipe(REPO / f"recipes/vep/{task}_genos1b_qwen3_{llm}.yaml")
            assert recipe.encoder.name_or_path == "BGI-HangzhouAI/Genos-1.2B" and recipe.llm.name_or_path == name
            assert (
                recipe.data.train == f"data/vep-{task.replace('_', '-')}/train.jsonl"
                and not recipe.data.with_reasoning
            )


def test_planted_binary_task_trains_scores_and_appears_in_baselines(tmp_path, tiny_models, capsys):
    data = tmp_path / "planted-vep"
    assert (
        main(["planted", "--out", str(data), "--records", "200", "--labels", "benign,pathogenic", "--length", "201"])
        == 0
    )
    out = tmp_path / "baselines"
    code = main(
        [
            "baselines",
            str(REPO / "recipes/vep/planted_tiny.yaml"),
            f"test={data / 'test.jsonl'}",
            f"data.train={data / 'train.jsonl'}",
            f"output_dir={out}",
            f"encoder.name_or_path={tiny_models['genos']}",
            f"llm.name_or_path={tiny_models['qwen3']}",
            "models=dna+text,dna-only",
            "train.max_steps=30",
        ]
    )
    assert code == 0
    assert "F1 pathogenic" in capsys.readouterr().out
    rows = {r["model"]: r for r in json.loads((out / "comparison.json").read_text())["rows"]}
    assert set(rows) == {"dna+text", "dna-only"} and all(r["positive_label"] == "pathogenic" for r in rows.values())
    losses = [
        json.loads(line)["train/loss"]
        for line in (out / "dna_text" / "train_log.jsonl").read_text().splitlines()
        if "train/loss" in line
    ]
    assert losses[-1] < 0.5 * losses[0]  # the fusion model trains
    assert rows["dna-only"]["accuracy"] >= 0.9  # the planted label is in the DNA
    for run in ("dna_text", "dna_only"):  # the pathogenic F1 is the one the predictions give
        with open(out / run / "eval" / "predictions.csv", newline="") as f:
            pairs = [(r["ground_truth"], r["pred_label"]) for r in csv.DictReader(f)]
        tp = sum(t == p == "pathogenic" for t, p in pairs)
        predicted, actual = sum(p == "pathogenic" for _, p in pairs), sum(t == "pathogenic" for t, _ in pairs)
        f1 = 2 * tp / (predicted + actual) if predicted + actual else 0.0
        metrics = json.loads((out / run / "eval" / "metrics.json").read_text())
        assert len(pairs) == metrics["n"] == 20 and actual > 0
        assert (
            metrics["binary"]["f1"]
            == pytest.approx(f1)
            == rows[{"dna_text": "dna+text", "dna_only": "dna-only"}[run]]["positive_f1"]
        )


def test_the_eval_table_says_where_the_label_set_came_from(tmp_path):
    from dnallm.config import Recipe
    from dnallm.eval.kegg import score, training_label_set

    recipe = Recipe()
    recipe.data.train = str(tmp_path / "moved" / "train.jsonl")  # trained from a file no longer there
    labels, source = training_label_set(recipe, {"answer": ["a", "b", "c"]})
    assert labels.labels == ["a", "b", "c"] and source == "eval data (training file not found)"
    _, _, m = score(["a", "b", "c"], ["Answer: a", "Answer: b", "Answer: a"], labels, source)
    assert "\nlabel set: eval data (training file not found)" in metrics_summary(m)
