"""The command line: bad input ends with one clear line and exit status 2, nothing written."""

from pathlib import Path

import json
import subprocess
import sys

REPO = Path(__file__).resolve().parent.parent


def _dnallm(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "dnallm", *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_unknown_recipe_key_is_named_with_suggestions(tmp_path):
    r = _dnallm("train", REPO / "recipes/kegg/tiny.yaml", "train.lrr=1e-4", cwd=tmp_path)
    assert r.returncode == 2
    assert "unknown recipe key 'train.lrr'; did you mean train.lr" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists()


def test_bad_record_is_named_and_no_run_directory_is_left(tmp_path, tiny_models):
    data = tmp_path / "train.jsonl"
    flank = "ACGT" * 10
    good = {
        "question": "q",
        "answer": "a",
        "reasoning": "r",
        "reference_sequence": flank + "A" + flank,
        "variant_sequence": flank + "C" + flank,
    }
    bad = {**good, "variant_sequence": flank + "C" + "AXGT" + flank[4:]}
    data.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    r = _dnallm(
        "train",
        REPO / "recipes/kegg/tiny.yaml",
        f"data.train={data}",
        "data.val=",
        f"output_dir={tmp_path / 'run'}",
        f"encoder.name_or_path={tiny_models['genos']}",
        f"llm.name_or_path={tiny_models['qwen3']}",
        cwd=tmp_path,
    )
    assert r.returncode == 2, r.stderr
    assert f"{data}:2" in r.stderr and "variant_sequence" in r.stderr and "'X' at position 42" in r.stderr
    assert not (tmp_path / "run").exists()


def test_eval_of_missing_checkpoint(tmp_path):
    r = _dnallm("eval", tmp_path / "nowhere", "--data", tmp_path / "x.jsonl", "--out", tmp_path / "out", cwd=tmp_path)
    assert r.returncode == 2 and "no checkpoint found at" in r.stderr
    assert not (tmp_path / "out").exists()


def test_split_writes_three_stratified_files(tmp_path):
    records = [
        {
            "question": "q",
            "answer": f"disease {i % 3}",
            "reasoning": "",
            "reference_sequence": "A",
            "variant_sequence": "C",
        }
        for i in range(30)
    ]
    (tmp_path / "all.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    r = _dnallm("split", tmp_path / "all.jsonl", "--out", tmp_path / "splits", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"train": 24, "val": 3, "test": 3}
    for name in ("train", "val", "test"):
        assert (tmp_path / "splits" / f"{name}.jsonl").is_file()
