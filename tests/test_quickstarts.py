"""The README's and docs' quick starts, run in their documented order in a fresh folder: the
README's demo, then docs/coverage.md's coverage quick start (they share the tiny Genos the
first builds). Training runs are shortened by overrides; the commands are read from the docs."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

from dnallm.cli import main

REPO = Path(__file__).resolve().parent.parent
BRIEF = {
    "demo": ["train.max_steps=20", "projector.pretrain_epochs=2"],
    "train-tracks": ["train.max_steps=4", "eval.max_val_windows=4"],
}


def documented_commands(path: Path, first: str) -> list[list[str]]:
    """The ``dnallm`` commands (lines, or steps joined by ``&&``) of the first bash block in ``path`` holding a ``dnallm FIRST`` line."""
    for block in re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.S):
        steps = [step.strip() for line in block.splitlines() for step in line.split("#", 1)[0].split("&&")]
        commands = [shlex.split(step) for step in steps if step.startswith("dnallm ") or step == "dnallm"]
        if any(c[1] == first for c in commands):
            return [c[1:] for c in commands]
    raise AssertionError(f"no bash block in {path} runs dnallm {first}")


def test_the_demo_then_the_coverage_quick_start_in_a_fresh_folder(tmp_path, monkeypatch, capsys):
    shutil.copytree(REPO / "recipes", tmp_path / "recipes")
    monkeypatch.chdir(tmp_path)
    readme = REPO / "README.md"
    demo = next(c for c in documented_commands(readme, "demo") if c[0] == "demo")
    assert main([*demo, *BRIEF["demo"]]) == 0
    assert json.loads((tmp_path / "runs/kegg-tiny/eval/metrics.json").read_text())["n"] > 0
    genos = sorted(p.name for p in (tmp_path / ".dnallm/tiny/genos").iterdir())

    for command in documented_commands(REPO / "docs/coverage.md", "make-tiny-tracks"):
        overrides = BRIEF.get(command[0], [])
        # key=value overrides follow the recipe (train-tracks) or the checkpoint
        args = command[:2] + overrides + command[2:] if overrides else command
        assert main(args) == 0, (command, capsys.readouterr().err)
    assert (tmp_path / "runs/coverage-tiny/eval/metrics.json").is_file()
    # The two quick starts share the tiny Genos: the demo's checkpoints still name a model that is there.
    assert sorted(p.name for p in (tmp_path / ".dnallm/tiny/genos").iterdir()) == genos
    assert main(["eval", "runs/kegg-tiny", "--data", ".dnallm/data/planted/test.jsonl", "--out", "again"]) == 0
