"""Label matching, scoring of bad replies, confusion outputs, planted-signal data, CLI commands."""

from pathlib import Path

import csv
import json

import numpy as np
import pytest

from tiny_recipes import tiny_kegg_recipe
from dnallm.cli import main
from dnallm.config import load_recipe
from dnallm.data.dna import RecordError
from dnallm.data.kegg import read_jsonl, write_jsonl
from dnallm.data.synthetic import (
    DISEASES,
    FIXED_CLASSES,
    INDEL_SIGNALS,
    QUESTION,
    SIGNALS,
    SITE,
    SUBSTITUTIONS,
    hard_records,
    planted_records,
    planted_signal_records,
)
from dnallm.eval.kegg import load_eval_examples, score, write_outputs
from dnallm.data.labels import LabelSet
from dnallm.eval.metrics import OTHER, confusion_counts
from dnallm.train.finetune import train

REPO = Path(__file__).resolve().parent.parent

LABELS = LabelSet(["Parkinson's disease", "Prion disease", "Huntington disease"])


@pytest.mark.parametrize(
    "reply, label",
    [
        ("Answer: Parkinson's disease", "parkinson's disease"),
        ("The variant sits in SNCA, so\n\nANSWER:   parkinsons   DISEASE.\n", "parkinson's disease"),
        ("Step 1: prion protein misfolds.\nAnswer: **Prion Disease**", "prion disease"),
        ("<think>\nmaybe Answer: prion disease\n</think>\nAnswer: huntington disease", "huntington disease"),
        ("Answer: melanoma", "melanoma"),  # not a training label: kept, scored wrong
        ("I am not sure.", ""),
    ],
)
def test_replies_map_onto_training_labels(reply, label):
    assert LABELS.predicted_label(reply) == label


def test_reply_without_answer_is_wrong_and_unknown_truth_is_its_own_class():
    answers = ["Parkinson's disease", "Prion disease", "Wilson disease", "Prion disease"]
    texts = ["Answer: parkinson's disease", "no label at all", "Answer: prion disease", "answer: Prion disease"]
    truth, pred, m = score(answers, texts, LABELS, "train.jsonl")
    assert pred == ["parkinson's disease", "", "prion disease", "prion disease"]
    assert m["n"] == 4 and m["accuracy"] == pytest.approx(0.5) and m["no_answer"] == 1
    assert m["labels_unseen_in_training"] == ["wilson disease"]
    assert m["per_class"]["wilson disease"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    # prion: 1 of 2 found, 1 of 2 predictions right
    assert m["per_class"]["prion disease"]["recall"] == pytest.approx(0.5)
    assert m["per_class"]["prion disease"]["precision"] == pytest.approx(0.5)


def test_confusion_counts_put_outside_predictions_in_other_column():
    rows, cols, counts = confusion_counts(["a", "a", "b"], ["a", "", "zebra"])
    assert rows == ["a", "b"] and cols == ["a", "b", OTHER]
    np.testing.assert_array_equal(counts, [[1, 0, 1], [0, 0, 1]])


def test_outputs_with_many_classes(tmp_path):
    names = [f"disease number {i} with a long descriptive name" for i in range(34)]
    truth = [names[i % 34] for i in range(200)]
    pred = [t if i % 3 else "" for i, t in enumerate(truth)]
    labels = LabelSet(names)
    truth, pred, m = score(truth, [f"Answer: {p}" if p else "?" for p in pred], labels)
    write_outputs(tmp_path, m, truth, pred, ["?"] * len(pred), title="34 classes")
    assert json.loads((tmp_path / "metrics.json").read_text())["n"] == 200
    png = (tmp_path / "confusion.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width > 1200 and height > 1200  # grows with the class count, so 34 labels stay legible
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_planted_signal_motif_matches_planted_records():
    old, new = planted_records(40, n_classes=4, seed=5), planted_signal_records(40, n_classes=4, seed=5)
    assert old == new


@pytest.mark.parametrize("signal", sorted(set(SIGNALS) - set(INDEL_SIGNALS)))
def test_planted_signal_is_a_function_of_the_dna_near_the_variant(signal):
    n_classes = FIXED_CLASSES.get(signal, 12)
    records = planted_signal_records(300, n_classes=n_classes, length=4001, seed=1, signal=signal)
    assert {r["question"] for r in records} == {QUESTION}
    assert all(len(r["variant_sequence"]) == 4001 for r in records)
    centre = 2000
    for r in records:  # one SNV, at the centre
        diffs = [i for i, (a, b) in enumerate(zip(r["reference_sequence"], r["variant_sequence"])) if a != b]
        assert diffs == [centre]
    # The label is determined by the 19 bp around the variant: no window maps to two labels.
    by_window = {}
    for r in records:
        window = r["reference_sequence"][centre - 9 : centre + 10] + r["variant_sequence"][centre - 9 : centre + 10]
        assert by_window.setdefault(window, r["answer"]) == r["answer"]
    counts = {}
    for r in records:
        counts[r["answer"]] = counts.get(r["answer"], 0) + 1
    assert len(counts) == n_classes and set(counts.values()) == {300 // n_classes}
    # The background is random: flanks differ between records of one class.
    same_class = [r for r in records if r["answer"] == records[0]["answer"]]
    assert len({r["variant_sequence"][:100] for r in same_class}) == len(same_class)


def test_single_base_signals_centre_and_substitution_class():
    centre = 2000
    for r in planted_signal_records(200, n_classes=4, seed=2, signal="centre"):
        assert DISEASES["ACGT".index(r["variant_sequence"][centre])] == r["answer"]
    records = planted_signal_records(600, n_classes=6, seed=2, signal="substitution")
    fold = str.maketrans("ACGT", "TGCA")
    seen = {}
    for r in records:
        ref, alt = r["reference_sequence"][centre], r["variant_sequence"][centre]
        if ref in "AG":  # read from the other strand: pyrimidine reference
            ref, alt = ref.translate(fold), alt.translate(fold)
        assert DISEASES[SUBSTITUTIONS.index(f"{ref}>{alt}")] == r["answer"]
        seen.setdefault(("ref", r["reference_sequence"][centre]), set()).add(r["answer"])
        seen.setdefault(("alt", r["variant_sequence"][centre]), set()).add(r["answer"])
    # All 12 ordered substitutions occur, and either base alone leaves three classes open (1/3 at best).
    assert len({(r["reference_sequence"][centre], r["variant_sequence"][centre]) for r in records}) == 12
    assert {len(labels) for labels in seen.values()} == {3}


def _sites(seq: str) -> list[int]:
    return [i for i in range(len(seq) - len(SITE) + 1) if seq[i : i + len(SITE)] == SITE]


def test_site_signal_gained_lost_unchanged_and_neither_window_decides():
    centre, k = 2000, len(SITE)
    records = planted_signal_records(600, n_classes=3, seed=3, signal="site")
    label_of = {DISEASES[i]: name for i, name in enumerate(("gained", "lost", "unchanged"))}
    present = {}  # (site in the reference's 32 bp, site in the variant's 32 bp) -> labels seen
    for r in records:
        ref, var = r["reference_sequence"], r["variant_sequence"]
        assert [i for i, (a, b) in enumerate(zip(ref, var)) if a != b] == [centre]  # one SNV, at the centre
        over = lambda seq: [i for i in _sites(seq[centre - k + 1 : centre + k])]  # noqa: E731
        expected = {"gained": (0, 1), "lost": (1, 0), "unchanged": (0, 0)}[label_of[r["answer"]]]
        assert (len(over(ref)), len(over(var))) == expected
        window = slice(centre - 16, centre + 16)
        present.setdefault((bool(_sites(ref[window])), bool(_sites(var[window]))), set()).add(label_of[r["answer"]])
        if label_of[r["answer"]] == "unchanged":  # a copy beside the variant, in both windows
            assert _sites(ref[window]) and _sites(var[window])
    # A site in both windows is any of the three classes: presence alone decides nothing.
    assert present[(True, True)] == {"gained", "lost", "unchanged"}
    assert {label for labels in present.values() for label in labels} == {"gained", "lost", "unchanged"}


def test_indel_and_repeat_signals_change_the_length_as_their_class_says():
    from dnallm.data.dna import centre_window, change_span

    sizes = {0: range(1, 4), 1: range(6, 13), 2: range(-3, 0), 3: range(-12, -5)}  # variant minus reference length
    for r in planted_signal_records(200, n_classes=4, seed=4, signal="indel"):
        label = DISEASES.index(r["answer"])
        change = len(r["variant_sequence"]) - len(r["reference_sequence"])
        assert change in sizes[label]
        # Centred 32-bp windows, aligned: exactly the inserted (deleted) bases differ.
        ref, var = (centre_window(r[f], 32, where="t", field=f) for f in ("reference_sequence", "variant_sequence"))
        (r0, r1), (v0, v1) = change_span(ref, var)
        assert (v1 - v0) - (r1 - r0) == change and min(r1 - r0, v1 - v0) == 0
    for r in planted_signal_records(200, n_classes=4, seed=4, signal="repeat"):
        label = DISEASES.index(r["answer"])
        ref, var = r["reference_sequence"], r["variant_sequence"]
        unit = 2 if label < 2 else 3
        assert len(var) - len(ref) == (unit if label % 2 == 0 else -unit)
        longer, shorter = (var, ref) if label % 2 == 0 else (ref, var)
        (l0, l1), _ = change_span(longer, shorter)
        added = longer[l0:l1]
        assert longer[l0 - unit : l0] == added or longer[l1 : l1 + unit] == added  # a tandem copy of its neighbour


def test_planted_signal_rejects_bad_parameters():
    with pytest.raises(ValueError, match="unknown signal 'colour'"):
        planted_signal_records(10, signal="colour")
    with pytest.raises(ValueError, match="n_classes=99"):
        planted_signal_records(10, n_classes=99, signal="flank")
    with pytest.raises(ValueError, match="'substitution' has exactly 6 classes"):
        planted_signal_records(10, n_classes=4, signal="substitution")


def test_cli_planted_and_hard_kegg(tmp_path, capsys):
    assert (
        main(
            [
                "planted",
                "--out",
                str(tmp_path / "p"),
                "--records",
                "40",
                "--classes",
                "4",
                "--signal",
                "flank",
                "--length",
                "101",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {
        "out": str(tmp_path / "p"),
        "signal": "flank",
        "val": 4,
        "test": 4,
        "train": 32,
    }
    assert {r["answer"] for r in read_jsonl(tmp_path / "p" / "train.jsonl")} <= set(DISEASES)

    source = tmp_path / "kegg.jsonl"
    write_jsonl(
        source,
        [{**r, "question": f"Genes in the pathway: GENE{i}"} for i, r in enumerate(planted_records(6, length=101))],
    )
    assert main(["hard-kegg", str(source), "--out", str(tmp_path / "hard.jsonl"), "--prompt", "Which disease?"]) == 0
    hard = read_jsonl(tmp_path / "hard.jsonl")
    original = read_jsonl(source)
    assert [r["question"] for r in hard] == ["Which disease?"] * 6
    assert [r["variant_sequence"] for r in hard] == [r["variant_sequence"] for r in original]
    assert hard_records(original, "Q")[0]["answer"] == original[0]["answer"]


def test_records_without_dna_need_a_text_only_model(tmp_path):
    records = planted_records(4, length=101)
    del records[2]["variant_sequence"]
    write_jsonl(tmp_path / "no_dna.jsonl", records)
    with pytest.raises(RecordError, match=r"no_dna.jsonl:3: missing field\(s\) variant_sequence.*text-only"):
        load_eval_examples([tmp_path / "no_dna.jsonl"], 32, need_dna=True)
    assert len(load_eval_examples(tmp_path / "no_dna.jsonl", 32, need_dna=False)) == 4


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, tiny_models):
    out = tmp_path_factory.mktemp("suite")
    write_jsonl(out / "train.jsonl", planted_records(64, n_classes=4, seed=3))
    recipe = tiny_kegg_recipe(tiny_models, out / "run", out / "train.jsonl", "train.max_steps=4", "train.save_every=0")
    return train(recipe)


def test_cli_eval_on_real_kegg_val_and_test_writes_four_outputs(tiny_checkpoint, shared_kegg, tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(
        [
            "eval",
            str(tiny_checkpoint),
            "--data",
            str(shared_kegg / "val.jsonl"),
            "--data",
            str(shared_kegg / "test.jsonl"),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "macro_F1" in printed and "support" in printed and "confusion.png" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 290  # val + test, as BioReason reports
    # The tiny model was trained on planted labels only: KEGG diseases it never saw are their own classes.
    unseen = metrics["labels_unseen_in_training"]
    assert len(unseen) >= 25 and set(unseen) <= set(metrics["per_class"]) and not set(unseen) & set(DISEASES[:4])
    assert metrics["label_source"].endswith("train.jsonl") and metrics["n_training_labels"] == 4
    assert sum(c["support"] for c in metrics["per_class"].values()) == 290
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 290 and list(rows[0]) == ["ground_truth", "pred_label", "generated_text", "correct"]
    assert (out / "confusion.png").stat().st_size > 10_000


def test_cli_eval_counts_and_warns_about_replies_cut_at_max_new_tokens(tiny_checkpoint, tmp_path, capsys):
    write_jsonl(tmp_path / "test.jsonl", planted_records(6, n_classes=4, seed=9, length=101))
    out = tmp_path / "cut"
    assert (
        main(
            [
                "eval",
                str(tiny_checkpoint),
                "eval.max_new_tokens=2",
                "--data",
                str(tmp_path / "test.jsonl"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert (
        metrics["truncated"] == 6
        and metrics["max_new_tokens"] == 2
        and metrics["max_new_tokens_from"] == "eval.max_new_tokens"
    )
    assert "truncated" in printed.splitlines()[0]
    assert "warning: 6 of 6 replies reached max_new_tokens=2" in printed and "eval.max_new_tokens=" in printed


def test_eval_sizes_max_new_tokens_from_the_longest_training_reply(tiny_checkpoint, tmp_path):
    from transformers import AutoTokenizer

    from dnallm.eval.kegg import evaluate

    write_jsonl(tmp_path / "test.jsonl", planted_records(4, n_classes=4, seed=9, length=101))
    metrics = evaluate(tiny_checkpoint, tmp_path / "test.jsonl", tmp_path / "auto")
    recipe = load_recipe(tiny_checkpoint / "recipe.yaml")
    assert recipe.eval.max_new_tokens == 0  # unset in the tiny recipe
    tok = AutoTokenizer.from_pretrained(recipe.llm.name_or_path)
    longest = max(len(tok(f"Answer: {r['answer']}")["input_ids"]) for r in read_jsonl(recipe.data.train))
    assert metrics["max_new_tokens"] == longest + 1 + 32  # + end of turn + margin
    assert metrics["max_new_tokens_from"] == f"the longest reply in {recipe.data.train}"


def test_cli_eval_without_dna_names_the_record(tiny_checkpoint, tmp_path, capsys):
    records = planted_records(3, length=101)
    del records[1]["reference_sequence"]
    write_jsonl(tmp_path / "bad.jsonl", records)
    assert (
        main(["eval", str(tiny_checkpoint), "--data", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "e")]) == 2
    )
    err = capsys.readouterr().err
    assert "bad.jsonl:2" in err and "reference_sequence" in err and "data.use_dna=false" in err
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize(
    "override, message",
    [
        ("models=dna+text,vision", "unknown model(s) vision in models"),
        ("test=", "no test file: set test=PATH"),
    ],
)
def test_cli_baselines_rejects_bad_settings_before_training(tmp_path, capsys, override, message):
    code = main(
        ["baselines", str(REPO / "recipes/baselines/planted_tiny.yaml"), f"output_dir={tmp_path / 'run'}", override]
    )
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
