"""Hostile checkpoints and runs: a checkpoint that would run code, a resume with another recipe,
Ctrl-C, odd VCF headers, huge prompts, corrupt checkpoint files. Each case ends in one line (exit
status 2, no traceback) with inputs and other runs unchanged, or in the behaviour named.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pysam
import pytest
import yaml
from transformers import AutoConfig, MistralConfig, MistralModel
from test_faults import KEGG_TINY, REPO, coverage, digest, error_line, in_project, project, run  # noqa: F401 (fixtures)
from tiny_recipes import BRIEF_STAGE1
from vcf_data import cases, vcf_text

import dnallm
from dnallm.data.kegg import write_jsonl
from dnallm.data.synthetic import planted_records
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


# ---- a resume continues the recipe it resumes ------------------------------------------------


@pytest.fixture(scope="module")
def resumable(project, tmp_path_factory) -> dict:
    """A two-step run (a checkpoint at each step) on copies of the project's data."""
    root = tmp_path_factory.mktemp("resumable")
    data = root / "data"
    shutil.copytree(project["data"], data)
    args = [
        KEGG_TINY,
        f"output_dir={root / 'run'}",
        f"data.train={data / 'train.jsonl'}",
        f"data.val={data / 'val.jsonl'}",
        f"encoder.name_or_path={project['genos']}",
        f"llm.name_or_path={project['qwen3']}",
        BRIEF_STAGE1,
        "train.max_steps=2",
        "train.save_every=1",
    ]
    from dnallm.cli import main

    assert main(["train", *map(str, args)]) == 0
    return {"root": root, "run": root / "run", "data": data, "args": args}


def resume(capsys, fixture: dict, *changes: str, run_dir: Path | None = None) -> tuple[int, str]:
    args = [a for a in fixture["args"] if not str(a).startswith("output_dir=")]
    return run(
        capsys,
        "train",
        *args,
        f"output_dir={run_dir or fixture['run']}",
        "train.resume_from_checkpoint=auto",
        *changes,
    )


@pytest.mark.parametrize(
    "change, named",
    [
        ("encoder.layer=-2", "encoder.layer -1 -> -2"),
        ("projector.pool=4", "projector.pool 8 -> 4"),
        ("data.dna_window=64", "data.dna_window 32 -> 64"),
        ("train.lr=1e-3", "train.lr 0.002 -> 0.001"),
        ("projector.kind=mlp", "projector.kind 'conv' -> 'mlp'"),
    ],
)
def test_a_resume_with_another_model_or_schedule_names_each_key(resumable, capsys, change, named):
    before = files_of(resumable["run"])
    code, err = resume(capsys, resumable, change, "train.max_steps=3")
    line = error_line(err)
    assert code == 2 and named in line and "checkpoint-2" in line and "train.allow_recipe_change=true" in line
    assert "training:" not in err and files_of(resumable["run"]) == before


def test_a_resume_on_changed_data_names_the_file_and_a_moved_copy_resumes(resumable, tmp_path, capsys):
    data, before = resumable["data"], files_of(resumable["run"])
    other = tmp_path / "other.jsonl"
    other.write_text((data / "val.jsonl").read_text())
    code, err = resume(capsys, resumable, f"data.train={other}", "train.max_steps=3")
    assert code == 2 and f"data.train '{data / 'train.jsonl'}' -> '{other}' (other content)" in error_line(err)

    train_file = data / "train.jsonl"
    whole = train_file.read_text()
    try:
        train_file.write_text("".join(whole.splitlines(keepends=True)[1:]))  # one record fewer, in place
        code, err = resume(capsys, resumable, "train.max_steps=3")
    finally:
        train_file.write_text(whole)
    line = error_line(err)
    assert code == 2 and f"data.train {train_file} changed since the checkpoint (content hash differs)" in line
    assert files_of(resumable["run"]) == before

    # The same content elsewhere is the same data; max_steps may change on resume.
    moved = tmp_path / "moved"
    shutil.copytree(resumable["root"], moved)
    fixture = {**resumable, "args": [str(a).replace(str(resumable["root"]), str(moved)) for a in resumable["args"]]}
    code, err = resume(capsys, fixture, "train.max_steps=3", run_dir=moved / "run")
    assert code == 0, err
    assert (moved / "run" / "checkpoint-3").is_dir()


def test_allowed_recipe_change_over_another_projector_is_one_line(resumable, capsys):
    before = files_of(resumable["run"])
    code, err = resume(capsys, resumable, "projector.kind=mlp", "train.allow_recipe_change=true", "train.max_steps=3")
    line = error_line(err)
    assert code == 2 and "checkpoint-2" in line and "do not match the model built from its recipe" in line
    assert files_of(resumable["run"]) == before


@pytest.mark.parametrize("name", ["trainable.safetensors", "optimizer.safetensors", "rng_state.safetensors"])
def test_a_corrupt_checkpoint_file_is_named(resumable, tmp_path, capsys, name):
    run_dir = tmp_path / "run"
    shutil.copytree(resumable["run"], run_dir)
    broken = run_dir / "checkpoint-2" / name
    broken.write_bytes(b"\xff" * 64)  # its header length alone: far past the file's end
    code, err = resume(capsys, resumable, "train.max_steps=3", run_dir=run_dir)
    line = error_line(err)
    assert code == 2 and f"{broken}: not a readable safetensors file" in line
    assert not (run_dir / "checkpoint-3").exists()


# ---- VCF headers ---------------------------------------------------------------------------


def test_an_undeclared_info_end_is_declared_and_every_output_written(project, tmp_path, capsys):
    seqs = project["seqs"]
    vcf = tmp_path / "sv.vcf"
    text = vcf_text([cases(seqs)["snv"], ("chr1", 120, "v_sv", seqs["chr1"][119], ["<DEL>"])])
    text = text.replace("\tDP=10\n", "\tDP=10;END=130\n")  # END used, never declared (SV and gVCF files)
    vcf.write_text(text)
    out = tmp_path / "out.vcf"
    code, err = run(capsys, "annotate", project["checkpoint"], "--vcf", vcf, "--fasta", project["fasta"], "--out", out)
    assert code == 0, err
    assert out.is_file() and out.with_suffix(".tsv").is_file() and out.with_suffix(".png").is_file()
    with pysam.VariantFile(str(out)) as vin:
        assert (vin.header.info["END"].type, vin.header.info["END"].number) == ("Integer", 1)
        assert [rec.stop for rec in vin] == [130, 130]
    assert vcf.read_text() == text


def test_a_clashing_info_header_is_named_before_any_inference(project, tmp_path, capsys):
    vcf = tmp_path / "clash.vcf"
    text = vcf_text([cases(project["seqs"])["snv"]]).replace(
        "#CHROM", '##INFO=<ID=DNALLM_PROB,Number=1,Type=String,Description="theirs">\n#CHROM'
    )
    vcf.write_text(text)
    out = tmp_path / "out.vcf"
    code, err = run(capsys, "annotate", project["checkpoint"], "--vcf", vcf, "--fasta", project["fasta"], "--out", out)
    line = error_line(err)
    assert code == 2 and str(vcf) in line and "INFO DNALLM_PROB" in line
    assert "annotating:" not in err and list(tmp_path.iterdir()) == [vcf]


# ---- Ctrl-C ----------------------------------------------------------------------------------


def interrupted(args: list, cwd: Path, when, tmp_path: Path) -> tuple[int, str]:
    """Run ``dnallm ARGS`` and press Ctrl-C (SIGINT) once ``when(stderr so far)`` holds."""
    err_file = tmp_path / f"stderr-{len(list(tmp_path.glob('stderr-*')))}.txt"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")}
    with open(err_file, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dnallm", *map(str, args)],
            cwd=cwd,
            env={**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)},
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        deadline = time.monotonic() + 300
        while not when(err_file.read_text()):
            assert proc.poll() is None, err_file.read_text()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=300)
    return proc.returncode, err_file.read_text()


def started(bar: str, err: str) -> bool:
    """Whether the progress bar ``bar`` has counted some of its work."""
    return re.search(rf"{bar}:\s+\d+%\|[^|]*\| [1-9]\d*/", err) is not None


def test_ctrl_c_in_train_saves_at_the_step_and_the_run_resumes(project, tmp_path):
    data = project["data"]
    common = [
        "train",
        KEGG_TINY,
        f"output_dir={tmp_path / 'run'}",
        f"data.train={data / 'train.jsonl'}",
        "data.val=",
        f"encoder.name_or_path={project['genos']}",
        f"llm.name_or_path={project['qwen3']}",
        BRIEF_STAGE1,
        "train.max_steps=400",
        "train.save_every=0",
        "train.micro_batch_size=2",
    ]
    code, err = interrupted(common, tmp_path, lambda err: "training:  " in err and "/400 [" in err, tmp_path)
    assert code == 130 and "Traceback" not in err, err
    last = [line for line in err.splitlines() if "dnallm train:" in line][-1]
    saved = sorted((tmp_path / "run").glob("checkpoint-*"))
    assert len(saved) == 1 and f"stopped by Ctrl-C after step {saved[0].name.split('-')[1]}" in last
    assert "train.resume_from_checkpoint=auto" in last
    from dnallm.cli import main

    step = int(saved[0].name.split("-")[1])
    assert main([*map(str, common), "train.resume_from_checkpoint=auto", f"train.max_steps={step + 2}"]) == 0
    assert (tmp_path / "run" / f"checkpoint-{step + 2}").is_dir()


def test_ctrl_c_in_cache_and_annotate_says_what_is_kept(project, tmp_path):
    records = tmp_path / "many.jsonl"
    write_jsonl(records, planted_records(2000, length=101, seed=5))
    cache = tmp_path / "cache"
    code, err = interrupted(
        [
            "cache-embeddings",
            KEGG_TINY,
            f"encoder.name_or_path={project['genos']}",
            f"llm.name_or_path={project['qwen3']}",
            f"data.train={records}",
            "data.val=",
            f"encoder.cache_dir={cache}",
            "encoder.batch_size=1",
        ],
        tmp_path,
        lambda err: started("caching embeddings", err),
        tmp_path,
    )
    line = error_line(err.replace("interrupted:", "error: interrupted:"))
    assert code == 130 and "shards written so far are kept" in line and "run the same command again" in line

    seqs = project["seqs"]
    rows = [("chr1", pos, f"v{pos}", seqs["chr1"][pos - 1], ["ACGT"[(pos + 1) % 4]]) for pos in range(30, 370)]
    rows = [r for r in rows if r[3] != r[4][0]]
    vcf = tmp_path / "many.vcf"
    vcf.write_text(vcf_text(rows))
    out = tmp_path / "annotated.vcf"
    args = ["annotate", project["checkpoint"], "--vcf", vcf, "--fasta", project["fasta"], "--out", out]
    code, err = interrupted([*args, "--batch-size", "1"], tmp_path, lambda err: started("annotating", err), tmp_path)
    line = error_line(err.replace("interrupted:", "error: interrupted:"))
    assert code == 130 and "progress log" in line and not out.exists()


# ---- prompts past the context ----------------------------------------------------------------


def test_a_question_past_the_llms_context_is_named_before_any_generation(project, tmp_path, capsys):
    records = [json.loads(line) for line in (project["data"] / "test.jsonl").read_text().splitlines()]
    records[1]["question"] = "why " * 50_000  # more tokens than the tiny Qwen3's 40,960 positions
    data = tmp_path / "long.jsonl"
    write_jsonl(data, records)
    code, err = run(capsys, "eval", project["checkpoint"], "--data", data, "--out", tmp_path / "eval")
    line = error_line(err)
    assert code == 2 and f"{data}:2:" in line and "passes the LLM's context of 40,960" in line
    assert "generating:" not in err and not (tmp_path / "eval").exists()


# ---- small things, one line each ---------------------------------------------------------------


def test_small_mistakes_are_one_line_each(project, in_project, tmp_path, capsys):
    records = [json.loads(line) for line in (project["data"] / "test.jsonl").read_text().splitlines()]
    records[2]["answer"] = "Answer: " + records[2]["answer"]
    twice = tmp_path / "twice.jsonl"
    write_jsonl(twice, records)
    code, err = run(capsys, "eval", project["checkpoint"], "--data", twice, "--out", tmp_path / "eval")
    assert code == 2 and f"{twice}:3: field 'answer' holds 'Answer:'" in error_line(err)

    test = project["data"] / "test.jsonl"
    explain = ["explain", project["checkpoint"], "--data", test, "--record", "0"]
    code, err = run(capsys, *explain, "--out", tmp_path / "x1", "--region", "10-5")
    assert code == 2 and "region 10-5: START is past END" in error_line(err) and "5-10" in error_line(err)
    code, err = run(capsys, *explain, "--out", tmp_path / "x2", "--label", "no such disease")
    line = error_line(err)
    assert (
        code == 2 and "--label 'no such disease' is none of the" in line and "labels the model was trained on" in line
    )
    with pytest.raises(SystemExit) as exit_:
        run(capsys, *explain, "--out", tmp_path / "x3", "--plots", "-1")
    assert exit_.value.code == 2 and "argument --plots: -1 is out of range" in capsys.readouterr().err
    assert not any((tmp_path / name).exists() for name in ("eval", "x1", "x2", "x3"))


def test_a_coverage_checkpoint_cannot_switch_remote_code_on(coverage, tmp_path, capsys):
    run_dir = tmp_path / "theirs"
    shutil.copytree(coverage["run"], run_dir)
    ckpt = next(run_dir.glob("checkpoint-*"))
    marker = tmp_path / "MARKER"
    trunk = ckpt / "trunk"
    (trunk / "hostile_genos.py").write_text(HOSTILE_CODE.format(marker=str(marker)))
    config = json.loads((trunk / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "hostile_genos.HostileConfig", "AutoModel": "hostile_genos.HostileModel"}
    (trunk / "config.json").write_text(json.dumps(config))
    recipe = yaml.safe_load((ckpt / "recipe.yaml").read_text())
    recipe["encoder"]["trust_remote_code"] = True
    (ckpt / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    before = files_of(run_dir)
    code, err = run(capsys, "predict-tracks", run_dir, "--region", "chr1:1-600", "--out", tmp_path / "preds")
    line = error_line(err)
    assert code == 2 and str(trunk / "hostile_genos.py") in line and "--trust-remote-code" in line
    with pytest.raises(RemoteCodeNotAllowed):
        dnallm.load(run_dir)
    assert not marker.exists() and not (tmp_path / "preds").exists() and files_of(run_dir) == before
