"""Answer parsing, metrics, and ``evaluate`` on real KEGG records with a tiny checkpoint."""

from pathlib import Path

import csv
import json

import pytest

from tiny_recipes import tiny_kegg_recipe
from dnallm.data.chat import parse_answer
from dnallm.data.kegg import write_jsonl
from dnallm.data.synthetic import planted_records
from dnallm.eval.kegg import evaluate
from dnallm.eval.metrics import classification_metrics
from dnallm.train.finetune import train

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "text, label",
    [
        ("Answer: Parkinson disease", "parkinson disease"),
        ("The variant disrupts splicing.\n\nAnswer:  Prion disease.\n", "prion disease"),
        ("answer:Huntington disease", "huntington disease"),
        ("First guess Answer: A\nthen ANSWER: B", "b"),
        ("no label here", ""),
        ("Answer:", ""),
    ],
)
def test_parse_answer(text, label):
    assert parse_answer(text) == label


def test_metrics_macro_over_ground_truth_classes_and_zero_division():
    truth = ["a", "a", "b", "c"]
    pred = ["a", "b", "b", ""]  # '' : no "Answer:" found, counted wrong
    m = classification_metrics(truth, pred)
    assert m["n"] == 4 and m["accuracy"] == pytest.approx(0.5)
    # a: P 1 R .5; b: P .5 R 1; c: P 0 (zero_division) R 0
    assert m["macro_precision"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert m["macro_recall"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert m["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_metrics_reject_mismatched_lengths():
    with pytest.raises(ValueError, match="2 ground-truth labels but 1 predictions"):
        classification_metrics(["a", "b"], ["a"])


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, tiny_models):
    out = tmp_path_factory.mktemp("ckpt")
    write_jsonl(out / "train.jsonl", planted_records(64, n_classes=4, seed=3))
    recipe = tiny_kegg_recipe(tiny_models, out / "run", out / "train.jsonl", "train.max_steps=4", "train.save_every=0")
    return train(recipe)


def test_evaluate_on_real_kegg_records_writes_outputs(tiny_checkpoint, shared_kegg, tmp_path):
    metrics = evaluate(tiny_checkpoint, shared_kegg / "test.jsonl", tmp_path / "eval")
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["n"] == metrics["n"] == 146
    assert 0.0 <= saved["accuracy"] <= 1.0 and "macro_f1" in saved
    with open(tmp_path / "eval" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 146
    assert list(rows[0]) == ["ground_truth", "pred_label", "generated_text", "correct"]
    assert all(r["correct"] == str(int(r["ground_truth"] == r["pred_label"])) for r in rows)
