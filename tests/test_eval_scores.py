"""Replies scored as the task needs (``eval.score``): a number (Pearson, Spearman, MAE; replies
without a number counted) or free text (exact match, token F1), besides today's labels."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import rankdata
from tiny_recipes import tiny_kegg_recipe

from dnallm.config import RecipeError
from dnallm.data.dna import RecordError
from dnallm.data.kegg import write_jsonl
from dnallm.data.synthetic import planted_records
from dnallm.eval.kegg import evaluate, score_numbers, score_texts


def test_numbers_are_read_from_the_answer_and_scored():
    examples = {"answer": ["1", "2", "3", "4", "5"], "where": [f"r{i}" for i in range(5)]}
    texts = ["Answer: 1", "It is short.\n\nAnswer: 2.5", "Answer: 2", "Answer: many", "answer: 5 copies"]
    truth, pred, m = score_numbers(examples, texts)
    assert truth == [1, 2, 3, 4, 5] and pred == [1, 2.5, 2, None, 5]
    t, p = np.array([1, 2, 3, 5.0]), np.array([1, 2.5, 2, 5.0])
    assert (m["n"], m["n_scored"], m["no_number"]) == (5, 4, 1)
    assert m["pearson"] == pytest.approx(np.corrcoef(t, p)[0, 1])
    assert m["spearman"] == pytest.approx(np.corrcoef(rankdata(t), rankdata(p))[0, 1])
    assert m["mae"] == pytest.approx((0 + 0.5 + 1 + 0) / 4)


def test_a_gold_answer_without_a_number_names_its_record():
    with pytest.raises(RecordError, match=r"^data.jsonl:7: answer 'several' is not a number \(eval.score=number\)"):
        score_numbers({"answer": ["2", "several"], "where": ["data.jsonl:6", "data.jsonl:7"]}, ["Answer: 2"] * 2)


def test_free_text_is_scored_by_exact_match_and_token_f1():
    examples = {"answer": ["Parkinson disease", "the long QT syndrome", "Lynch syndrome"]}
    texts = ["Answer: parkinson disease.", "Answer: QT syndrome", "no answer here"]
    _, pred, m = score_texts(examples, texts)
    assert pred == ["parkinson disease", "qt syndrome", ""]
    # exact: 1, 0, 0; F1: 1, (2 common of 2 predicted, 3 true: P 1, R 2/3 -> 0.8), 0
    assert m["exact_match"] == pytest.approx(1 / 3) and m["token_f1"] == pytest.approx((1 + 0.8 + 0) / 3)
    assert m["no_answer"] == 1


@pytest.fixture(scope="module")
def counted(tiny_models, tmp_path_factory):
    """A tiny checkpoint trained briefly on pair records whose answer is a number."""
    from dnallm.train.finetune import train

    root = tmp_path_factory.mktemp("numbers")
    records = planted_records(40, n_classes=4, length=4001, seed=5)
    names = sorted({r["answer"] for r in records})
    for r in records:
        r["answer"] = str(names.index(r["answer"]) + 1)
        r["question"] = "How many copies of the motif does the variant window hold?"
    write_jsonl(root / "train.jsonl", records)
    brief = ("train.max_steps=8", "train.save_every=0", "data.dna_window=32", "eval.score=number")
    return {
        "checkpoint": train(tiny_kegg_recipe(tiny_models, root / "run", root / "train.jsonl", *brief)),
        "root": root,
    }


def test_eval_scores_numbers_and_plots_them(counted):
    out = counted["root"] / "eval"
    metrics = evaluate(counted["checkpoint"], counted["root"] / "train.jsonl", out)
    assert metrics["score"] == "number" and metrics["n"] == 40
    assert metrics["n_scored"] + metrics["no_number"] == 40 and "pearson" in metrics and "accuracy" not in metrics
    assert {p.name for p in out.iterdir()} == {"metrics.json", "predictions.csv", "scatter.png"}
    assert json.loads((out / "metrics.json").read_text())["mae"] == metrics["mae"]
    with open(out / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["ground_truth", "pred_value", "generated_text", "abs_error"] and len(rows) == 40
    assert (out / "scatter.png").stat().st_size > 5_000


@pytest.mark.parametrize(
    "text, value",
    [("1,000 copies", 1000.0), ("3,4", 3.0), ("\u22123", -3.0), ("-2.5e1", -25.0), (".5", 0.5), ("1e999", None)],
)
def test_a_replys_first_number(text, value):
    from dnallm.eval.metrics import parse_number

    assert parse_number(text) == value


def test_a_gold_answer_is_a_number_alone():
    for answer in ("2/3", "chr17", "3 copies"):
        with pytest.raises(RecordError, match="is not a number"):
            score_numbers({"answer": [answer], "where": ["r0"]}, ["Answer: 2"])


def test_the_eval_command_prints_and_writes_each_score(counted, capsys):
    from dnallm.cli import main

    out = counted["root"] / "eval-cli"
    assert (
        main(["eval", str(counted["checkpoint"]), "--data", str(counted["root"] / "train.jsonl"), "--out", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    assert "pearson" in printed and "with a number" in printed
    assert printed.strip().endswith(f"wrote {out}/metrics.json, predictions.csv, scatter.png")
    # The same checkpoint scored as text: exact match agrees with the CSV's `correct` column.
    text = counted["root"] / "eval-text"
    metrics = evaluate(counted["checkpoint"], counted["root"] / "train.jsonl", text, ["eval.score=text"])
    with open(text / "predictions.csv") as f:
        correct = [int(row["correct"]) for row in csv.DictReader(f)]
    assert metrics["score"] == "text" and metrics["exact_match"] == pytest.approx(sum(correct) / len(correct))
    assert {p.name for p in text.iterdir()} == {"metrics.json", "predictions.csv"}


def _baselines(recipe):
    from dnallm.eval.baselines import run_baselines

    return run_baselines(recipe)


def _grpo(recipe):
    from dnallm.train.grpo import grpo

    return grpo(recipe)


@pytest.mark.parametrize(
    "recipe_file, kind, run, says",
    [
        ("baselines/planted_tiny.yaml", "baselines", _baselines, "baselines compares models on label tasks"),
        ("grpo/tiny.yaml", "grpo", _grpo, "GRPO's rewards score labels"),
    ],
)
def test_baselines_and_grpo_take_label_tasks_only(recipe_file, kind, run, says, tmp_path):
    from dnallm.config import GRPORecipe, load_recipe
    from dnallm.eval.baselines import BaselinesRecipe

    cls = {"baselines": BaselinesRecipe, "grpo": GRPORecipe}[kind]
    path = Path(__file__).resolve().parent.parent / "recipes" / recipe_file
    recipe = load_recipe(path, ["eval.score=number", f"output_dir={tmp_path}"], cls=cls)
    with pytest.raises(RecipeError, match=f"eval.score=number: {says}"):
        run(recipe)
    assert not any(tmp_path.iterdir())
