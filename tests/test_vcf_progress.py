"""The progress log that lets ``dnallm annotate`` resume after a crash."""

from __future__ import annotations

import json

import pytest

from dnallm.eval.progress import ProgressLog, ProgressMismatch


def test_batches_survive_and_a_cut_last_line_is_dropped(tmp_path):
    path = tmp_path / "run.progress.jsonl"
    log = ProgressLog(path, {"batch_size": 2})
    assert log.load() == {}
    log.append(0, [[1, 1, "melanoma", 0.5, "Answer: melanoma"]])
    log.append(1, [[2, 1, "", None, "no idea"]])
    with path.open("a") as f:
        f.write('{"batch": 2, "rows": [[3, 1, "mel')  # the write a crash interrupted
    assert ProgressLog(path, {"batch_size": 2}).load() == {
        0: [[1, 1, "melanoma", 0.5, "Answer: melanoma"]],
        1: [[2, 1, "", None, "no idea"]],
    }
    assert path.read_text().endswith('"no idea"]]}\n')  # truncated back to the last whole batch


def test_other_options_are_refused_once_batches_exist(tmp_path):
    path = tmp_path / "run.progress.jsonl"
    log = ProgressLog(path, {"batch_size": 2, "edge": "pad"})
    log.load()
    # Stopped before any batch finished: a rerun with other options simply starts afresh.
    assert ProgressLog(path, {"batch_size": 4, "edge": "pad"}).load() == {}
    ProgressLog(path, {"batch_size": 4, "edge": "pad"}).append(0, [[1, 1, "x", 0.1, "Answer: x"]])
    with pytest.raises(
        ProgressMismatch, match=r"batch_size: 4 then, 8 now.*delete .*run\.progress\.jsonl to start over"
    ):
        ProgressLog(path, {"batch_size": 8, "edge": "pad"}).load()


def test_a_corrupt_line_in_the_middle_is_an_error(tmp_path):
    path = tmp_path / "run.progress.jsonl"
    lines = [json.dumps({"fingerprint": {}}), "{not json", json.dumps({"batch": 0, "rows": []})]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ProgressMismatch, match=r"run\.progress\.jsonl:2: corrupt line in the middle"):
        ProgressLog(path, {}).load()
