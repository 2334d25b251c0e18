"""Hostile checkpoints and runs: a checkpoint that would run code, a resume with another recipe,
Ctrl-C, odd VCF headers, huge prompts, corrupt checkpoint files. Each case ends in one line (exit
status 2, no traceback) with inputs and other runs unchanged, or in the behaviour named.
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest
import yaml
from transformers import AutoConfig, MistralConfig, MistralModel
from test_faults import KEGG_TINY, digest, error_line, project, run  # noqa: F401 (fixtures)

import dnallm
from dnallm.hub import RemoteCodeNotAllowed

# The code a hostile checkpoint ships: it leaves a marker when imported, then serves transformers'
# Mistral as its encoder (of the Genos stand-in's width), so that with the user's permission it loads.
HOSTILE_CODE = """
from pathlib import Path
Path({marker!r}).write_text("ran")
from transformers import MistralConfig as HostileConfig, MistralModel as HostileModel
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def files_of(folder: Path) -> dict[str, list[str]]:
    return {str(p.relative_to(folder)): digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def hostile(project, tmp_path) -> dict:
    """A copy of the project's checkpoint whose recipe and config turn on remote code for an
    encoder folder inside it, with an ``auto_map`` to a file that leaves a marker when run."""
    ckpt = tmp_path / "theirs" / "checkpoint-1"
    shutil.copytree(project["checkpoint"], ckpt)
    enc = ckpt / "enc"
    genos = AutoConfig.from_pretrained(project["genos"])
    sizes = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    MistralModel(MistralConfig(**{k: getattr(genos, k) for k in (*sizes, "num_key_value_heads")})).save_pretrained(enc)
    for tokenizer_file in Path(project["genos"]).glob("*token*"):
        shutil.copy(tokenizer_file, enc)
    marker = tmp_path / "MARKER"
    (enc / "hostile_genos.py").write_text(HOSTILE_CODE.format(marker=str(marker)))
    config = json.loads((enc / "config.json").read_text())
    config.update(
        auto_map={"AutoConfig": "hostile_genos.HostileConfig", "AutoModel": "hostile_genos.HostileModel"},
    )
    (enc / "config.json").write_text(json.dumps(config))
    fusion = json.loads((ckpt / "fusion_config.json").read_text())
    fusion["encoder"].update(name_or_path="enc", trust_remote_code=True)
    (ckpt / "fusion_config.json").write_text(json.dumps(fusion))
    recipe = yaml.safe_load((ckpt / "recipe.yaml").read_text())
    recipe["encoder"].update(name_or_path="enc", trust_remote_code=True)
    (ckpt / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return {"checkpoint": ckpt, "marker": marker, "code": enc / "hostile_genos.py", "files": files_of(ckpt)}


def test_a_checkpoint_cannot_switch_remote_code_on(project, hostile, tmp_path, capsys, monkeypatch):
    ckpt, marker = hostile["checkpoint"], hostile["marker"]
    test = project["data"] / "test.jsonl"
    monkeypatch.setattr("builtins.input", lambda *a: "/quit")
    commands = {
        "eval": ["eval", ckpt, "--data", test, "--out", tmp_path / "eval"],
        "chat": ["chat", ckpt],
        "serve": ["serve", ckpt, "--port", free_port()],
        "explain": ["explain", ckpt, "--data", test, "--out", tmp_path / "explain", "--record", "0"],
    }
    for name, args in commands.items():
        code, err = run(capsys, *args)
        line = error_line(err)
        assert code == 2, (name, err)
        assert str(hostile["code"]) in line and "--trust-remote-code" in line and "encoder.trust_remote_code" in line
    with pytest.raises(RemoteCodeNotAllowed, match="trust_remote_code=True"):
        dnallm.load(ckpt)
    assert not marker.exists()
    assert not (tmp_path / "eval").exists() and not (tmp_path / "explain").exists()
    assert files_of(ckpt) == hostile["files"]  # nothing in the checkpoint was written either

    # The user's word at load time: the code runs, and the checkpoint answers as the original does.
    model = dnallm.load(ckpt, trust_remote_code=True)
    assert marker.read_text() == "ran"
    assert type(model.session.encoder.model).__name__ == "MistralModel"
    marker.unlink()
    # An explicit override decides too: without the code, the encoder loads as transformers' own class.
    code, err = run(
        capsys, "eval", ckpt, "encoder.trust_remote_code=false", "--data", test, "--out", tmp_path / "eval2"
    )
    assert code == 0 and not marker.exists(), err
