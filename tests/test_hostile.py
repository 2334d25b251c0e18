"""Hostile inputs and broken disks: each case ends in exit status 2 and one line naming the
problem, no traceback, with the inputs and other runs left as they were.

Two runs into one folder, outputs that name an input (the checkpoint's files and the FASTA
index too), a stale FASTA index, generators over existing data, full and read-only disks
(a small tmpfs: these cases need root and are skipped without it), bad text, out-of-range
arguments, and Python API calls on the wrong kind of object. The server's cases are in
tests/serve/test_serve_hostile.py.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyBigWig
import pytest
import torch
from safetensors.torch import load_file
from test_faults import KEGG_TINY, coverage, digest, error_line, in_project, project, run  # noqa: F401 (fixtures)
from vcf_data import cases, write_vcf

import dnallm
from dnallm.hub import ModelNotFound

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO), "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
# progress bars: their absence shows that no work began
WORK = ("training:", "caching embeddings:", "annotating:", "predicting:", "evaluating:", "generating:")

# Holds the lock of a folder (argv[1]) or a file (argv[2] == "file") until killed.
HOLD_LOCK = (
    "import sys, time\n"
    "from dnallm.io import exclusive_output\n"
    "with exclusive_output(sys.argv[1], folder=sys.argv[2] == 'folder'):\n"
    "    print('held', flush=True)\n"
    "    time.sleep(300)\n"
)


def models(p: dict) -> list[str]:
    return [f"encoder.name_or_path={p['genos']}", f"llm.name_or_path={p['qwen3']}"]


def kegg_recipe(p: dict, out: Path, *more: str) -> list[str]:
    data = p["data"]
    return [
        KEGG_TINY,
        f"output_dir={out}",
        f"data.train={data / 'train.jsonl'}",
        f"data.val={data / 'val.jsonl'}",
        *models(p),
        *more,
    ]


def no_work(err: str) -> None:
    for bar in WORK:
        assert bar not in err, err


@contextmanager
def lock_holder(path: Path, kind: str = "folder"):
    """Another process holding ``path``'s lock; yields its PID."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(path), kind], stdout=subprocess.PIPE, text=True, env=ENV
    )
    try:
        assert proc.stdout.readline() == "held\n"
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=30)


@contextmanager
def small_disk(where: Path, size: str, readonly: bool = False):
    """A tmpfs of ``size`` mounted at ``where`` (root only)."""
    where.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if readonly else "")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip()}); the disk cases need root")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def fill(disk: Path, leave: int) -> Path:
    """A file taking all of ``disk``'s free space but ``leave`` bytes."""
    filler = disk / "filler"
    free = shutil.disk_usage(disk).free
    with filler.open("wb") as f:
        f.truncate(0)
        f.write(b"\0" * max(0, free - leave))
    return filler


def fasta_text(seqs: dict[str, str], width: int) -> str:
    return "".join(
        f">{name}\n" + "".join(seq[i : i + width] + "\n" for i in range(0, len(seq), width))
        for name, seq in seqs.items()
    )


def all_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def log_lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


# ---- case 1: two runs in one folder ---------------------------------------------------------


def test_a_second_train_into_a_running_output_dir_stops_at_once(project, tmp_path, capsys):
    out = tmp_path / "run"
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dnallm",
            "train",
            *map(str, kegg_recipe(project, out, "train.max_steps=40", "train.save_every=10", "train.log_every=5")),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        cwd=project["root"],
    )
    try:
        deadline = time.monotonic() + 240
        while not (out / ".dnallm.lock").is_file():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()[1][-3000:]
            time.sleep(0.05)
        started = time.monotonic()
        code, err = run(capsys, "train", *kegg_recipe(project, out, "train.max_steps=20", "train.save_every=5"))
        line = error_line(err)
        holder = f"(PID {first.pid} on {socket.gethostname()})"
        assert code == 2 and f"output_dir {out} is in use by another run {holder}" in line, line
        assert time.monotonic() - started < 30
        no_work(err)
    finally:
        _, first_err = first.communicate(timeout=600)
    assert first.returncode == 0, first_err[-3000:]
    # The first run's files alone: its checkpoints, and every step logged once, in order.
    states = [json.loads((c / "trainer_state.json").read_text()) for c in sorted(out.glob("checkpoint-*"))]
    assert {s["run_id"] for s in states} == {states[0]["run_id"]} and [s["step"] for s in states] == [30, 40]
    assert [e["step"] for e in log_lines(out) if "train/loss" in e] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert not (out / ".dnallm.lock").exists()


def test_a_deepspeed_run_into_a_locked_output_dir_stops_at_once(
    project, tmp_path, in_project, single_process_env, capsys
):
    """Rank 0 of a DeepSpeed launch (its environment: RANK, WORLD_SIZE, MASTER_*) takes the lock
    before the process group or the engine starts, and stops at once when it is held."""
    out = tmp_path / "run"
    zero2 = REPO / "recipes" / "deepspeed" / "zero2.json"
    with lock_holder(out) as holder:
        before = all_files(out)
        started = time.monotonic()
        code, err = run(capsys, "train", *kegg_recipe(project, out, f"deepspeed={zero2}", "train.max_steps=2"))
        line = error_line(err)
        assert code == 2 and f"output_dir {out} is in use by another run (PID {holder.pid} on " in line, line
        assert time.monotonic() - started < 30
        no_work(err)
        assert all_files(out) == before


def test_cache_and_annotate_refuse_a_locked_output_and_a_killed_holder_blocks_nothing(
    project, tmp_path, in_project, capsys
):
    cache = tmp_path / "cache"
    cache_args = [
        "cache-embeddings",
        KEGG_TINY,
        f"data.train={project['data'] / 'train.jsonl'}",
        "data.val=",
        f"encoder.cache_dir={cache}",
        *models(project),
    ]
    with lock_holder(cache) as holder:
        code, err = run(capsys, *cache_args)
        assert code == 2 and f"encoder.cache_dir {cache} is in use by another run (PID {holder.pid}" in error_line(err)
        no_work(err)
    vcf = write_vcf(tmp_path / "in.vcf", [cases(project["seqs"])["snv"]])
    out = tmp_path / "ann" / "a.vcf"
    progress = out.with_name("a.vcf.progress.jsonl")
    with lock_holder(progress, "file") as holder:
        code, err = run(
            capsys, "annotate", project["checkpoint"], "--vcf", vcf, "--fasta", project["fasta"], "--out", out
        )
        assert code == 2 and f"progress log {progress} is in use by another run (PID {holder.pid}" in error_line(err)
        no_work(err)
    assert not out.exists()
    # kill -9 took the holder: the kernel dropped its lock, and the command runs.
    code, err = run(capsys, *cache_args)
    assert code == 0, err[-2000:]
    assert (cache / "manifest.json").is_file() and not (cache / ".dnallm.lock").exists()


# ---- case 2a-2d: outputs over inputs, stale index, generators -----------------------------------


def test_outputs_may_not_name_the_checkpoints_files_or_the_fasta_index(project, tmp_path, in_project, capsys):
    recipe = project["checkpoint"] / "recipe.yaml"
    fai = Path(f"{project['fasta']}.fai")
    if not fai.is_file():
        import pysam

        pysam.faidx(str(project["fasta"]))
    before = digest(recipe, fai)
    vcf = write_vcf(tmp_path / "in.vcf", [cases(project["seqs"])["snv"]])
    variants = ["--vcf", vcf, "--fasta", project["fasta"]]
    code, err = run(
        capsys, "annotate", project["checkpoint"], *variants, "--out", tmp_path / "ann" / "y.vcf", "--tsv", recipe
    )
    line = error_line(err)
    assert code == 2 and f"output {recipe} is inside the input folder {project['checkpoint']}" in line, line
    code, err = run(capsys, "windows", *variants, "--flank", "20", "--out", fai)
    assert code == 2 and f"output {fai} is the input {fai}" in error_line(err)
    assert digest(recipe, fai) == before
    code, err = run(
        capsys, "annotate", project["checkpoint"], *variants, "--out", tmp_path / "ann" / "z.vcf", "--batch-size", "4"
    )
    assert code == 0, err[-2000:]  # the checkpoint still works


def test_a_stale_fasta_index_is_named_before_any_record_is_read(project, tmp_path, capsys):
    fasta = tmp_path / "ref.fa"
    fasta.write_text(fasta_text(project["seqs"], width=60))
    import pysam

    pysam.faidx(str(fasta))
    fai = Path(f"{fasta}.fai")
    index = fai.read_bytes()
    # Rewritten with 70-column lines after indexing: the old index reads line ends as bases.
    fasta.write_text(fasta_text(project["seqs"], width=70))
    vcf = write_vcf(tmp_path / "in.vcf", [cases(project["seqs"])["snv"]])
    out = tmp_path / "w.jsonl"
    code, err = run(capsys, "windows", "--vcf", vcf, "--fasta", fasta, "--flank", "20", "--out", out)
    line = error_line(err)
    assert code == 2 and f"{fai} line 1" in line and f"samtools faidx {fasta}" in line and "60 bases" in line, line
    assert not out.exists() and fai.read_bytes() == index
    fai.unlink()  # the fix the line names
    code, err = run(capsys, "windows", "--vcf", vcf, "--fasta", fasta, "--flank", "20", "--out", out)
    assert code == 0 and json.loads(out.read_text().splitlines()[0])["reference_sequence"].isupper()


def test_generators_refuse_existing_outputs_without_overwrite(tmp_path, capsys):
    planted = ["planted", "--out", tmp_path / "p", "--records", "20", "--length", "101"]
    assert run(capsys, *planted)[0] == 0
    before = digest(*sorted((tmp_path / "p").glob("*.jsonl")))
    code, err = run(capsys, *planted[:-4], "--records", "30", "--length", "101", "--seed", "1")
    line = error_line(err)
    assert code == 2 and f"{tmp_path / 'p' / 'train.jsonl'} exists" in line and "--overwrite" in line, line
    assert digest(*sorted((tmp_path / "p").glob("*.jsonl"))) == before
    assert run(capsys, *planted[:-4], "--records", "30", "--length", "101", "--seed", "1", "--overwrite")[0] == 0
    assert digest(*sorted((tmp_path / "p").glob("*.jsonl"))) != before
    (tmp_path / "t" / "tiny" / "genos").mkdir(parents=True)
    (tmp_path / "t" / "tiny" / "genos" / "config.json").write_text("{}")
    code, err = run(capsys, "make-tiny", "--out", tmp_path / "t")
    assert code == 2 and f"{tmp_path / 't' / 'tiny' / 'genos'} exists" in error_line(err)
    assert (tmp_path / "t" / "tiny" / "genos" / "config.json").read_text() == "{}"


# ---- cases 2-5: full, read-only and unusable outputs ---------------------------------------------


def test_a_full_disk_while_training_leaves_no_partial_checkpoint_and_resume_matches(
    project, tmp_path, in_project, capsys
):
    steps = ("train.max_steps=4", "train.save_every=2", "train.log_every=3", "train.keep_last=0")
    whole = tmp_path / "whole"
    assert run(capsys, "train", *kegg_recipe(project, whole, *steps))[0] == 0
    checkpoint_bytes = sum(f.stat().st_size for f in (whole / "checkpoint-2").iterdir())
    with small_disk(tmp_path / "disk", f"{4 * checkpoint_bytes + (1 << 20)}") as disk:
        out = disk / "run"
        filler = fill(disk, leave=checkpoint_bytes + checkpoint_bytes // 2)  # room for one checkpoint, not two
        code, err = run(capsys, "train", *kegg_recipe(project, out, *steps))
        line = error_line(err)
        assert code == 2 and "No space left on device" in line and str(out / "checkpoint-4") in line, line
        assert "free there" in line, line
        kept = [f"checkpoint-2/{f}" for f in all_files(whole / "checkpoint-2")]
        assert all_files(out) == sorted(["train_log.jsonl", *kept])
        filler.unlink()  # space freed: resume from the last complete checkpoint
        code, err = run(capsys, "train", *kegg_recipe(project, out, *steps, "train.resume_from_checkpoint=auto"))
        assert code == 0, err[-2000:]
        resumed = load_file(out / "checkpoint-4" / "trainable.safetensors")
        expected = load_file(whole / "checkpoint-4" / "trainable.safetensors")
        assert all(torch.equal(resumed[k], expected[k]) for k in expected)
        # Logged numbers too (case 19): the loss average restarts at each checkpoint, as a resume does.
        assert [{k: v for k, v in e.items() if "per_s" not in k and "seconds" not in k} for e in log_lines(out)] == [
            {k: v for k, v in e.items() if "per_s" not in k and "seconds" not in k} for e in log_lines(whole)
        ]


def test_a_full_disk_while_caching_leaves_no_partial_shard_and_a_rerun_matches(project, tmp_path, in_project, capsys):
    def cache_args(cache: Path) -> list:
        return [
            "cache-embeddings",
            KEGG_TINY,
            f"data.train={project['data'] / 'train.jsonl'}",
            "data.val=",
            f"encoder.cache_dir={cache}",
            *models(project),
        ]

    assert run(capsys, *cache_args(tmp_path / "whole"))[0] == 0
    shard = tmp_path / "whole" / "shard-00000.safetensors"
    with small_disk(tmp_path / "disk", f"{2 * shard.stat().st_size + (1 << 20)}") as disk:
        cache = disk / "cache"
        filler = fill(disk, leave=shard.stat().st_size // 2)
        code, err = run(capsys, *cache_args(cache))
        line = error_line(err)
        assert code == 2 and "No space left on device" in line and str(cache / "shard-00000.safetensors") in line, line
        assert all_files(cache) == ["manifest.json"]  # no shard, no temporary file
        filler.unlink()
        assert run(capsys, *cache_args(cache))[0] == 0
        rebuilt, expected = load_file(cache / shard.name), load_file(shard)
        assert rebuilt.keys() == expected.keys() and all(torch.equal(rebuilt[k], expected[k]) for k in expected)


# Writes random (incompressible) values into a bigWig at argv[1], 100 kb at a time; prints the one line.
# With argv[2] == "no-fallocate", as on a filesystem that cannot allocate ahead (the free space is checked).
WRITE_BIGWIG = (
    "import errno, sys, numpy as np\n"
    "import dnallm.io\n"
    "from dnallm.data.bigwig_writer import BigWigWriter\n"
    "from dnallm.io import disk_error_message\n"
    "if sys.argv[2:] == ['no-fallocate']:\n"
    "    dnallm.io._fallocate_keep_size = lambda fd, length: errno.EOPNOTSUPP\n"
    "values = np.random.default_rng(0).random(1_000_000)\n"
    "try:\n"
    "    with BigWigWriter(sys.argv[1], {'chr1': 2_000_000}) as writer:\n"
    "        for start in range(0, len(values), 100_000):\n"
    "            writer.add('chr1', start, values[start : start + 100_000])\n"
    "except OSError as e:\n"
    "    print(disk_error_message(e))\n"
)


def test_a_full_disk_while_writing_a_bigwig_is_one_line_not_a_hang(tmp_path):
    """libBigWig spins on a failed write; the writer must stop before it, leaving nothing."""
    for how in ("fallocate", "no-fallocate"):
        with small_disk(tmp_path / "disk", "2m") as disk:
            path = disk / "preds" / "track.bw"
            done = subprocess.run(
                [sys.executable, "-c", WRITE_BIGWIG, str(path), how],
                capture_output=True,
                text=True,
                env=ENV,
                timeout=120,
            )
            line = done.stdout.strip()
            assert done.returncode == 0 and line.startswith(f"{path}: No space left on device ("), (
                how,
                done.stdout + done.stderr,
            )
            assert "free there" in line, line
            assert all_files(disk) == [] and shutil.disk_usage(disk).free > 1_900_000  # no temporary file left
    done = subprocess.run(
        [sys.executable, "-c", WRITE_BIGWIG, str(tmp_path / "track.bw")],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout == "", done.stdout + done.stderr  # the same writes, with room
    with pyBigWig.open(str(tmp_path / "track.bw")) as bw:
        written = np.array(bw.values("chr1", 0, 1_000_000))
    assert np.allclose(written, np.random.default_rng(0).random(1_000_000).astype(np.float32))


def test_predict_tracks_on_a_full_disk_is_one_line_and_leaves_no_bigwig(coverage, tmp_path):
    tracks = sorted(p.name for p in coverage["preds"].glob("*.bw"))
    # Room for the first file's header only, then for each file's header but not for three chromosomes.
    for leave in (96 << 10, len(tracks) * (96 << 10)):
        with small_disk(tmp_path / "disk", "1m") as disk:
            out = disk / "preds"
            fill(disk, leave=leave)
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "dnallm",
                    "predict-tracks",
                    str(coverage["run"]),
                    "--chroms",
                    "chr1,chr2,chr3",
                    "--out",
                    str(out),
                ],
                capture_output=True,
                text=True,
                env=ENV,
                timeout=300,
                stdin=subprocess.DEVNULL,
            )
            line = error_line(done.stderr)
            assert done.returncode == 2 and "No space left on device" in line and "free there" in line, line
            assert any(f"{out / name}:" in line for name in tracks), line
            assert all_files(disk) == ["filler"], (leave, all_files(disk))


def test_the_bigwig_size_bound_holds_for_hostile_layouts(tmp_path):
    """The space reserved ahead of libBigWig is an upper bound of what it writes, however the values lie."""
    from dnallm.data.bigwig_writer import BigWigWriter

    rng = np.random.default_rng(1)
    sparse = rng.random(200_000)
    sparse[::2] = 0
    layouts = {  # (chromosome sizes, entries, skip_zeros)
        "far-apart single bases": (
            {"chr1": 2_100_000_000},
            [("chr1", i * 4_200_000, rng.random(1)) for i in range(499)],
            False,
        ),
        "short runs": ({"chr1": 3_000_000}, [("chr1", i * 100, rng.random(17)) for i in range(5000)], False),
        "many chromosomes with long names": (
            {f"chrUn_{'x' * 100}_{i}": 700 for i in range(500)},
            [(f"chrUn_{'x' * 100}_{i}", 0, rng.random(700)) for i in range(500)],
            False,
        ),
        "alternating zeros": ({"chr1": 300_000}, [("chr1", 0, sparse)], True),
        "one long run": ({"chr1": 3_000_000}, [("chr1", 5, rng.random(2_000_000))], False),
    }
    for name, (sizes, entries, skip_zeros) in layouts.items():
        writer = BigWigWriter(tmp_path / "b.bw", sizes, skip_zeros=skip_zeros)
        for chrom, start, values in entries:
            writer.add(chrom, start, values)
        bound = writer.size_bound()
        writer.close()
        size = (tmp_path / "b.bw").stat().st_size
        assert size <= bound, (name, size, bound)
        assert (tmp_path / "b.bw").stat().st_blocks * 512 < size + (64 << 10), name  # the reserve was given back


def test_a_read_only_output_is_refused_before_any_work(project, tmp_path, in_project, capsys):
    test = project["data"] / "test.jsonl"
    with small_disk(tmp_path / "ro", "1m", readonly=True) as ro:
        for args, named in [
            (["train", *kegg_recipe(project, ro / "run")], ro),
            (["eval", project["checkpoint"], "--data", test, "--out", ro / "eval"], ro),
            (["split", test, "--out", ro / "split"], ro),
        ]:
            code, err = run(capsys, *args)
            line = error_line(err)
            assert code == 2 and f"folder {named} is not writable" in line, (args[0], line)
            no_work(err)


def test_unusable_output_paths_are_named_before_any_work(project, coverage, tmp_path, in_project, capsys):
    taken = tmp_path / "taken"
    taken.write_text("a user's file\n")
    code, err = run(capsys, "train", *kegg_recipe(project, taken))
    assert code == 2 and f"output folder {taken} is an existing file" in error_line(err)
    no_work(err)
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    code, err = run(capsys, "predict-tracks", coverage["run"], "--region", "chr1:1-600", "--out", dangling)
    line = error_line(err)
    assert code == 2 and f"output {dangling} is a link to {tmp_path / 'nowhere'}, which does not exist" in line, line
    no_work(err)
    assert not (tmp_path / "nowhere").exists() and taken.read_text() == "a user's file\n"
    folder = tmp_path / "preds"
    folder.mkdir()
    link = tmp_path / "preds-link"
    link.symlink_to(folder)
    code, err = run(capsys, "predict-tracks", coverage["run"], "--region", "chr1:1-600", "--out", link)
    assert code == 0, err[-2000:]
    assert sorted(p.name for p in folder.glob("*.bw")) == sorted(p.name for p in coverage["preds"].glob("*.bw"))


# ---- cases 6, 9, 10, 11, 16, 18: bad input as one line ------------------------------------------


def test_non_utf8_jsonl_names_file_line_and_byte(project, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    good = (project["data"] / "test.jsonl").read_bytes()
    first_end = good.index(b"\n") + 1
    bad.write_bytes(good[:first_end] + good[first_end : first_end + 40] + b"\xff" + good[first_end + 40 :])
    code, err = run(capsys, "split", bad, "--out", tmp_path / "split")
    line = error_line(err)
    assert code == 2 and f"{bad}:2: not UTF-8 text (byte 0xff at byte offset {first_end + 40} of the file)" in line, (
        line
    )
    assert not (tmp_path / "split").exists()


def test_encoder_layer_out_of_range_names_the_range_when_the_encoder_loads(project, tmp_path, in_project, capsys):
    fasta = project["fasta"]
    code, err = run(capsys, "embed", fasta, "--out", tmp_path / "e.npy", "--model", project["genos"], "--layer", "99")
    line = error_line(err)
    assert code == 2 and "layer 99 is out of range: the model gives hidden states 0..2" in line, line
    code, err = run(
        capsys,
        "cache-embeddings",
        KEGG_TINY,
        f"data.train={project['data'] / 'test.jsonl'}",
        "data.val=",
        f"encoder.cache_dir={tmp_path / 'cache'}",
        "encoder.layer=-7",
        *models(project),
    )
    assert code == 2 and "layer -7 is out of range" in error_line(err) and "encoder.layer" in error_line(err)
    assert not (tmp_path / "e.npy").exists()


@pytest.mark.parametrize(
    "args, named",
    [
        (["chat", "CKPT", "--record", "-1"], "argument --record: -1 is out of range (0..)"),
        (["serve", "CKPT", "--port", "70000"], "argument --port: 70000 is out of range (1..65535)"),
        (["serve", "CKPT", "--port", "99999"], "argument --port: 99999 is out of range"),
        (["serve", "CKPT", "--max-body-bytes", "-5"], "argument --max-body-bytes: -5 is out of range"),
        (["serve", "CKPT", "--max-queue", "-1"], "argument --max-queue: -1 is out of range (0..)"),
    ],
)
def test_argument_ranges_are_checked_by_the_parser(args, named, project):
    args = [str(project["checkpoint"]) if a == "CKPT" else a for a in args]
    result = subprocess.run(
        [sys.executable, "-m", "dnallm", *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2 and named in error_line(result.stderr), result.stderr


def test_serve_on_a_port_in_use_fails_before_the_model_loads(project, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        code, err = run(capsys, "serve", project["checkpoint"], "--port", port, "--device", "cpu")
    line = error_line(err)
    assert code == 2 and f"cannot listen on 127.0.0.1:{port}" in line and "another server holds the port" in line, line
    assert time.monotonic() - started < 5 and "serving" not in err


def test_chat_errors_exit_2_and_a_checkpoint_of_the_other_kind_is_named(project, coverage, tmp_path, capsys):
    code, err = run(capsys, "chat", project["checkpoint"], "--ref", "ACGT")
    assert code == 2 and "dnallm chat: error: give both --ref and --var" in error_line(err)
    code, err = run(capsys, "eval", coverage["run"], "--data", project["data"] / "test.jsonl", "--out", tmp_path / "e")
    assert code == 2 and f"{coverage['run']} is a coverage-track checkpoint" in error_line(err)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, err = run(capsys, "serve", coverage["run"], "--port", port, "--device", "cpu")
    assert code == 2 and f"{coverage['run']} is a coverage-track checkpoint" in error_line(err)
    code, err = run(capsys, "predict-tracks", project["run"], "--region", "chr1:1-600", "--out", tmp_path / "p")
    assert code == 2 and f"{project['run']} is a KEGG fusion checkpoint" in error_line(err)


# ---- cases 12, 17, 18: the Python API -----------------------------------------------------------


def test_api_says_what_the_object_is(project, coverage, in_project):
    kegg = dnallm.load(project["run"], device="cpu")
    with pytest.raises(
        TypeError,
        match=f"{project['run']} is a KEGG fusion model; predict_tracks is for coverage "
        r"models \(dnallm.load of a train-tracks run\)",
    ):
        kegg.predict_tracks("chr1:1-100")
    tracks = dnallm.load(coverage["run"], device="cpu")
    with pytest.raises(TypeError, match=f"{coverage['run']} is a coverage-track model; ask is for fusion models"):
        tracks.ask(reference="ACGT", variant="ACGA", question="q")
    with pytest.raises(TypeError, match="sequences: give a list of sequences, got one str of 8 characters"):
        dnallm.embed(project["genos"], "ACGTACGT")
    with pytest.raises(ModelNotFound) as err:
        dnallm.embed("/nope", ["ACGT"])
    assert "model='/nope': no such model folder" in str(err.value) and "as model=" in str(err.value)
    assert "command line" not in str(err.value)


def test_a_write_refused_by_the_disk_names_the_output_not_its_temporary_file(tmp_path):
    """What the one line is built from, for each kind of write: the output's own path and errno."""
    from dnallm.io import atomic_directory, atomic_write_text, disk_error_message, save_tensors

    with small_disk(tmp_path / "ro", "1m", readonly=True) as ro:
        writes = {
            "text": (lambda: atomic_write_text(ro / "metrics.json", "{}"), ro / "metrics.json"),
            "tensors": (lambda: save_tensors({"x": torch.zeros(4)}, ro / "a.safetensors"), ro / "a.safetensors"),
            "folder": (lambda: atomic_directory(ro / "checkpoint-2").__enter__(), ro / "checkpoint-2"),
        }
        for kind, (write, path) in writes.items():
            with pytest.raises(OSError) as err:
                write()
            line = disk_error_message(err.value)
            assert line and line.startswith(f"{path}: Read-only file system (") and "free there" in line, (kind, line)
        assert all_files(ro) == []
