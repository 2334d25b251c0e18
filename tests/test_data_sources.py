"""``dnallm data NAME``: local copies in the hub's formats -> cleaned, checked train/val/test JSONL."""

import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import datasets
import pytest

from dnallm.data.dna import RecordError
from dnallm.data.kegg import read_jsonl
from dnallm.data.sources import SourceError, first_listed_label, prepare_dataset, unlisted_label

REPO = Path(__file__).resolve().parent.parent


def _row(rng: random.Random, answer: str, *, indel: bool = False, variant_column: str = "variant_sequence") -> dict:
    flank = "".join(rng.choice("ACGT") for _ in range(40))
    right = "".join(rng.choice("acgt") for _ in range(40))  # lower case, as some sources write it
    alt = "TTT" if indel else "C"
    return {
        "question": "Is this variant pathogenic or benign?",
        "answer": answer,
        "reference_sequence": flank + "A" + right,
        variant_column: flank + alt + right,
    }


def _dataset(rows: list[dict]) -> datasets.Dataset:
    return datasets.Dataset.from_list(rows)


def test_answer_cleaning_follows_the_published_rules():
    assert first_listed_label("Pathogenic; Likely pathogenic") == "pathogenic"
    assert first_listed_label(" Benign ") == "benign"
    assert unlisted_label("['Pathogenic']") == "pathogenic"
    assert unlisted_label("['Likely_benign']") == "likely benign"


def test_kegg_in_the_hubs_parquet_layout_keeps_its_splits(tmp_path):
    rng = random.Random(0)
    hub = tmp_path / "kegg-hub" / "data"
    hub.mkdir(parents=True)
    sizes = {"train": 16, "val": 2, "test": 2}
    for split, n in sizes.items():
        rows = [
            {**_row(rng, ["Parkinson's disease", "melanoma"][i % 2]), "reasoning": "Step 1: ..."} for i in range(n)
        ]
        _dataset(rows).to_parquet(str(hub / f"{split}-00000-of-00001.parquet"))
    summary = prepare_dataset("kegg", tmp_path / "out", local=tmp_path / "kegg-hub", dna_window=32)
    assert summary["records"] == sizes and summary["splits"] == "source splits"
    train = read_jsonl(tmp_path / "out" / "train.jsonl")
    assert {r["answer"] for r in train} == {"Parkinson's disease", "melanoma"}  # KEGG answers kept as written
    assert all(r["reference_sequence"].isupper() and r["reasoning"] == "Step 1: ..." for r in train)
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["with_reasoning"] == 20


def test_vep_coding_train_test_gets_a_stratified_val_and_clean_labels(tmp_path):
    rng = random.Random(1)
    answers = ["Pathogenic; Likely pathogenic"] * 30 + ["Benign"] * 60
    parts = {"train": [_row(rng, a) for a in answers], "test": [_row(rng, a) for a in answers[::9]]}
    datasets.DatasetDict({k: _dataset(v) for k, v in parts.items()}).save_to_disk(str(tmp_path / "coding"))
    summary = prepare_dataset("vep-coding", tmp_path / "out", local=tmp_path / "coding", dna_window=32)
    assert summary["labels"] == {"benign": 66, "pathogenic": 34}
    assert summary["records"] == {"train": 80, "val": 10, "test": 10}
    val = Counter(r["answer"] for r in read_jsonl(tmp_path / "out" / "val.jsonl"))
    assert val == {"benign": 7, "pathogenic": 3}  # a ninth of train, per class


def test_vep_non_snv_single_split_is_split_8_1_1_with_unequal_windows(tmp_path):
    rng = random.Random(2)
    rows = [
        _row(rng, ["['Pathogenic']", "['Benign']"][i % 2], indel=True, variant_column="mutated_sequence")
        for i in range(100)
    ]
    _dataset(rows).save_to_disk(str(tmp_path / "non_snv"))
    summary = prepare_dataset("vep-non-snv", tmp_path / "out", local=tmp_path / "non_snv", dna_window=32)
    assert summary["records"] == {"train": 80, "val": 10, "test": 10}
    assert summary["labels"] == {"pathogenic": 50, "benign": 50}
    assert summary["unequal_lengths"] == 100 and summary["variant_bp"]["max"] == 83
    test = read_jsonl(tmp_path / "out" / "test.jsonl")
    assert Counter(r["answer"] for r in test) == {"pathogenic": 5, "benign": 5}
    assert "mutated_sequence" not in test[0] and len(test[0]["variant_sequence"]) == 83


def test_a_bad_record_is_named_or_dropped_and_counted(tmp_path):
    rng = random.Random(3)
    rows = [_row(rng, "Benign") for _ in range(9)] + [{**_row(rng, "Benign"), "variant_sequence": "ACGTXACGT" * 9}]
    datasets.DatasetDict({"train": _dataset(rows), "test": _dataset(rows[:3])}).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(RecordError, match=r"bad\[train\]\[9\]: field 'variant_sequence' has invalid character 'X'"):
        prepare_dataset("vep-coding", tmp_path / "out", local=tmp_path / "bad", dna_window=32)
    assert not (tmp_path / "out").exists()
    summary = prepare_dataset("vep-coding", tmp_path / "out", local=tmp_path / "bad", dna_window=32, drop_invalid=True)
    assert summary["dropped"] == 1 and sum(summary["records"].values()) == 12
    with pytest.raises(SourceError, match="train.jsonl exists; choose another --out or pass --overwrite"):
        prepare_dataset("vep-coding", tmp_path / "out", local=tmp_path / "bad", dna_window=32)


def test_command_line_offline_says_how_to_pass_a_local_copy(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "dnallm", "data", "vep-non-snv", "--out", str(tmp_path / "out")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip()
    assert "\n" not in line and line.startswith("dnallm data: error: cannot reach the Hugging Face hub")
    assert "wanglab/variant_effect_non_snv" in line and "HF_HUB_OFFLINE" in line and "--from" in line
    assert not (tmp_path / "out").exists()


def test_command_line_prints_a_summary(tmp_path, capsys):
    from dnallm.cli import main

    rng = random.Random(4)
    rows = [_row(rng, ["Pathogenic", "Benign; Likely benign"][i % 2]) for i in range(30)]
    _dataset(rows).save_to_disk(str(tmp_path / "one"))
    assert (
        main(
            [
                "data",
                "vep-coding",
                "--from",
                str(tmp_path / "one"),
                "--out",
                str(tmp_path / "out"),
                "--dna-window",
                "32",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "stratified 8:1:1 of all): train 22, val 4, test 4" in printed  # round(15 * 0.1) = 2 per label
    assert "2 labels: pathogenic 15, benign 15" in printed and "reference 81-81 bp (median 81)" in printed
    assert (
        main(
            [
                "data",
                "vep-coding",
                "--from",
                str(tmp_path / "one"),
                "--out",
                str(tmp_path / "short"),
                "--dna-window",
                "128",
            ]
        )
        == 2
    )
    assert "one[all][0]: field 'reference_sequence' is 81 bp, shorter than dna_window=128" in capsys.readouterr().err
    assert not (tmp_path / "short").exists()
