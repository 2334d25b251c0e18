"""What a user meets when things go wrong, through the command line.

- Every command that writes refuses an output that is (or resolves to, through a link or a
  relative path) one of its inputs, and checks its outputs before any work; the input is
  left byte for byte as it was.
- A checkpoint trained in one folder is used from another; a checkpoint whose base models
  cannot be found says which recipe key, where it looked and how to override it.
- A VCF record at POS 0 (a telomere) is skipped with its reason.
- Coverage commands report bad data as one ``error:`` line with exit status 2, like the rest.
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
from pathlib import Path

import pysam
import pytest
import yaml
from tiny_recipes import BRIEF_STAGE1
from vcf_data import cases, reference_sequences, write_fasta, write_vcf

from dnallm.cli import main
from dnallm.config import recipe_from_dict
from dnallm.data.kegg import write_jsonl
from dnallm.data.synthetic import planted_records
from dnallm.data.synthetic_tracks import write_synthetic_tracks
from dnallm.fusion import DNAFusionLM
from dnallm.hub import ModelNotFound, locate_models

REPO = Path(__file__).resolve().parent.parent
KEGG_TINY = REPO / "recipes" / "kegg" / "tiny.yaml"
COVERAGE_TINY = REPO / "recipes" / "coverage" / "tiny.yaml"


def run(capsys, *args) -> tuple[int, str]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def error_line(err: str) -> str:
    """The command's one line about the problem (progress bars aside), without a traceback."""
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def digest(*paths: Path) -> list[str]:
    return [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths]


@pytest.fixture(scope="module")
def project(tiny_models, tmp_path_factory) -> dict:
    """A KEGG run trained inside its own folder with the tiny recipe's relative model paths."""
    root = tmp_path_factory.mktemp("project")
    for name in ("genos", "qwen3"):
        shutil.copytree(tiny_models[name], root / ".dnallm" / "tiny" / name)
    data = root / ".dnallm" / "data" / "planted"
    write_jsonl(data / "train.jsonl", planted_records(16, length=101, seed=0))
    write_jsonl(data / "val.jsonl", planted_records(4, length=101, seed=1))
    write_jsonl(data / "test.jsonl", planted_records(4, length=101, seed=2))
    seqs = reference_sequences()
    fasta = write_fasta(root / "ref.fa", seqs)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        assert main(["train", str(KEGG_TINY), "train.max_steps=1", "train.save_every=0", BRIEF_STAGE1]) == 0
    return {
        "root": root,
        "run": root / "runs" / "kegg-tiny",
        "checkpoint": root / "runs" / "kegg-tiny" / "checkpoint-1",
        "data": data,
        "seqs": seqs,
        "fasta": fasta,
        "genos": root / ".dnallm/tiny/genos",
        "qwen3": root / ".dnallm/tiny/qwen3",
    }


@pytest.fixture(scope="module")
def coverage(tiny_models, tmp_path_factory) -> dict:
    """A coverage checkpoint (one step), its synthetic data, and one predict-tracks output."""
    root = tmp_path_factory.mktemp("coverage")
    data = write_synthetic_tracks(root / "tracks", n_chroms=3, chrom_length=6000, seed=0)
    run_dir = root / "run"
    assert (
        main(
            [
                "train-tracks",
                str(COVERAGE_TINY),
                f"output_dir={run_dir}",
                f"encoder.name_or_path={tiny_models['genos']}",
                f"data.fasta={data['fasta']}",
                f"data.tracks={data['tracks']}",
                "data.chroms=[chr1]",
                "data.val_chroms=[chr2]",
                "data.test_chroms=[chr3]",
                "data.window=256",
                "data.overlap=128",
                "train.max_steps=1",
                "train.micro_batch_size=2",
                "train.global_batch_size=2",
                "eval.max_val_windows=2",
            ]
        )
        == 0
    )
    preds = root / "preds"
    assert main(["predict-tracks", str(run_dir), "--region", "chr1:1-600", "--out", str(preds)]) == 0
    bigwigs = sorted(data["fasta"].parent.glob("*.bw"))
    return {"root": root, "run": run_dir, "preds": preds, "bigwigs": bigwigs, **data}


@pytest.fixture
def elsewhere(tmp_path, monkeypatch) -> Path:
    """An empty working folder away from the project."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


@pytest.fixture
def in_project(project, monkeypatch) -> Path:
    """The project folder as working folder (where its checkpoint was trained)."""
    monkeypatch.chdir(project["root"])
    return project["root"]


@pytest.fixture
def vcf(project, tmp_path) -> Path:
    return write_vcf(tmp_path / "in.vcf", [cases(project["seqs"])["snv"], cases(project["seqs"])["deletion"]])


# ---- an output that is an input ---------------------------------------------------------


def _kegg_cases(p: dict, vcf: Path, tmp: Path) -> dict[str, tuple[list, Path, str]]:
    """command -> (arguments, the input that must survive, the output the error names)."""
    test = tmp / "train.jsonl"
    shutil.copy(p["data"] / "test.jsonl", test)
    link = tmp / "link.jsonl"
    link.symlink_to(vcf)
    models = [f"encoder.name_or_path={p['genos']}", f"llm.name_or_path={p['qwen3']}"]
    variants = ["--vcf", vcf, "--fasta", p["fasta"]]
    relative = Path("nowhere", "..", os.path.relpath(vcf))
    return {
        "windows": (["windows", *variants, "--flank", "20", "--out", vcf], vcf, str(vcf)),
        "windows through a link": (["windows", *variants, "--flank", "20", "--out", link], vcf, str(link)),
        "windows by a relative path": (["windows", *variants, "--flank", "20", "--out", relative], vcf, str(relative)),
        "annotate": (["annotate", p["checkpoint"], *variants, "--out", vcf], vcf, str(vcf)),
        "annotate tsv": (
            ["annotate", p["checkpoint"], *variants, "--out", tmp / "a.vcf", "--tsv", p["fasta"]],
            p["fasta"],
            str(p["fasta"]),
        ),
        "eval": (["eval", p["checkpoint"], "--data", test, "--out", test], test, str(test)),
        "split": (["split", test, "--out", tmp], test, str(test)),
        "hard-kegg": (["hard-kegg", test, "--out", test], test, str(test)),
        "cache-embeddings": (
            ["cache-embeddings", KEGG_TINY, f"data.train={test}", "data.val=", f"encoder.cache_dir={test}", *models],
            test,
            str(test),
        ),
        "baselines": (
            ["baselines", KEGG_TINY, f"data.train={test}", "data.val=", f"test={test}", f"output_dir={test}", *models],
            test,
            str(test),
        ),
    }


@pytest.mark.parametrize(
    "command",
    [
        "windows",
        "windows through a link",
        "windows by a relative path",
        "annotate",
        "annotate tsv",
        "eval",
        "split",
        "hard-kegg",
        "cache-embeddings",
        "baselines",
    ],
)
def test_kegg_and_vcf_commands_refuse_to_write_over_an_input(command, project, vcf, tmp_path, in_project, capsys):
    args, kept, named = _kegg_cases(project, vcf, tmp_path)[command]
    before = digest(kept)
    code, err = run(capsys, *args)
    line = error_line(err)
    assert code == 2 and "is the input" in line and named in line and str(kept) in line, line
    assert digest(kept) == before
    assert not (tmp_path / "a.vcf.progress.jsonl").exists()


def test_coverage_commands_refuse_to_write_over_an_input(coverage, tmp_path, elsewhere, capsys):
    tracks_dir, fasta = coverage["fasta"].parent, coverage["fasta"]
    kept = [fasta, *coverage["bigwigs"], *sorted(coverage["preds"].glob("*.bw"))]
    before = digest(*kept)
    # predict-tracks into the folder of the training bigWigs would replace them with predictions.
    code, err = run(capsys, "predict-tracks", coverage["run"], "--region", "chr1:1-600", "--out", tracks_dir)
    assert code == 2 and f"{tracks_dir / 'B_plus.bw'} is the input" in error_line(err)
    code, err = run(capsys, "eval-tracks", coverage["run"], "--region", "chr3:1-600", "--out", fasta)
    assert code == 2 and f"output {fasta} is the input {fasta}" in error_line(err)
    bigwig = coverage["preds"] / "B_plus.bw"
    code, err = run(capsys, "plot-tracks", coverage["preds"], "--region", "chr1:1-500", "--out", bigwig)
    assert code == 2 and f"output {bigwig} is the input {bigwig}" in error_line(err)
    assert digest(*kept) == before


# ---- outputs checked before any work ------------------------------------------------------


def test_an_unusable_output_is_refused_before_any_work(project, coverage, tmp_path, in_project, capsys):
    taken = tmp_path / "taken"
    taken.write_text("a user's file\n")
    folder = tmp_path / "a-folder"
    folder.mkdir()
    test = project["data"] / "test.jsonl"
    models = [f"encoder.name_or_path={project['genos']}", f"llm.name_or_path={project['qwen3']}"]
    variants = ["--vcf", write_vcf(tmp_path / "in.vcf", [cases(project["seqs"])["snv"]]), "--fasta", project["fasta"]]
    attempts = {
        "eval": ["eval", project["checkpoint"], "--data", test, "--out", taken],
        "annotate": ["annotate", project["checkpoint"], *variants, "--out", tmp_path / "a.vcf", "--tsv", folder],
        "predict-tracks": ["predict-tracks", coverage["run"], "--region", "chr1:1-600", "--out", taken],
        "eval-tracks": ["eval-tracks", coverage["run"], "--region", "chr3:1-600", "--out", taken / "eval"],
        "plot-tracks": ["plot-tracks", coverage["preds"], "--region", "chr1:1-500", "--out", folder],
        "baselines": [
            "baselines",
            KEGG_TINY,
            f"data.train={test}",
            "data.val=",
            f"test={test}",
            f"output_dir={taken}",
            *models,
        ],
        "cache-embeddings": [
            "cache-embeddings",
            KEGG_TINY,
            f"data.train={test}",
            "data.val=",
            f"encoder.cache_dir={taken}",
            *models,
        ],
        "make-tiny": ["make-tiny", "--out", taken],
    }
    for command, args in attempts.items():
        code, err = run(capsys, *args)
        line = error_line(err)
        assert code == 2 and (str(taken) in line or str(folder) in line), (command, line)
        for work in (
            "generating:",
            "annotating:",
            "predicting:",
            "evaluating:",
            "training:",
            "caching embeddings:",
        ):  # progress bars
            assert work not in err, (command, err)
    assert taken.read_text() == "a user's file\n" and not any(folder.iterdir())
    assert not (tmp_path / "a.vcf.progress.jsonl").exists()


# ---- base models found from any folder -------------------------------------------------


def test_checkpoint_trained_in_one_folder_is_evaluated_from_another(project, elsewhere, capsys):
    saved = yaml.safe_load((project["checkpoint"] / "recipe.yaml").read_text())
    assert saved["encoder"]["name_or_path"] == str(project["genos"].resolve())
    assert saved["llm"]["name_or_path"] == str(project["qwen3"].resolve())
    code, err = run(
        capsys,
        "eval",
        project["run"],
        "eval.max_new_tokens=2",
        "--data",
        project["data"] / "test.jsonl",
        "--out",
        "eval",
    )
    assert code == 0, err
    assert (elsewhere / "eval" / "metrics.json").is_file()


def test_checkpoint_with_models_that_cannot_be_found_names_the_key(project, tmp_path, elsewhere, capsys):
    # As checkpoints written before paths were pinned hold them: relative to the training folder.
    old = tmp_path / "old" / "checkpoint-1"
    shutil.copytree(project["checkpoint"], old)
    (old / "fusion_config.json").unlink()  # they had no model config either: the recipe describes the model
    recipe = yaml.safe_load((old / "recipe.yaml").read_text())
    recipe["encoder"]["name_or_path"], recipe["llm"]["name_or_path"] = ".dnallm/tiny/genos", ".dnallm/tiny/qwen3"
    (old / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    out = tmp_path / "annotated.vcf"
    vcf = write_vcf(tmp_path / "in.vcf", [cases(project["seqs"])["snv"]])
    for args in (
        ["annotate", old, "--vcf", vcf, "--fasta", project["fasta"], "--out", out],
        ["eval", old, "--data", project["data"] / "test.jsonl", "--out", tmp_path / "eval"],
    ):
        code, err = run(capsys, *args)
        line = error_line(err)
        assert code == 2 and "encoder.name_or_path='.dnallm/tiny/genos'" in line, line
        assert (
            str(elsewhere / ".dnallm/tiny/genos") in line and str(old / ".dnallm/tiny/genos") in line
        )  # where it looked
        assert "pass encoder.name_or_path=PATH" in line  # how to override
    assert not out.exists() and not Path(f"{out}.progress.jsonl").exists() and not (tmp_path / "eval").exists()
    # The override it names works.
    moved = [f"encoder.name_or_path={project['genos']}", f"llm.name_or_path={project['qwen3']}"]
    loaded = DNAFusionLM.from_pretrained(old, "cpu", moved)
    assert loaded.model.config.llm.name_or_path == str(project["qwen3"].resolve())


def test_model_paths_resolve_against_the_checkpoint_and_hub_ids_stay_ids(project, elsewhere):
    checkpoint = project["checkpoint"]
    recipe = recipe_from_dict(yaml.safe_load((checkpoint / "recipe.yaml").read_text()))
    recipe.encoder.name_or_path = "../../../.dnallm/tiny/genos"  # relative to the checkpoint
    recipe.llm.name_or_path = "Qwen/Qwen3-4B"
    locate_models(recipe, relative_to=checkpoint)
    assert recipe.encoder.name_or_path == str(project["genos"].resolve())
    assert recipe.llm.name_or_path == "Qwen/Qwen3-4B"
    recipe.llm.name_or_path = "models/qwen/Qwen3-4B"  # no hub ID has two slashes
    with pytest.raises(ModelNotFound, match=r"llm\.name_or_path='models/qwen/Qwen3-4B': no such model folder"):
        locate_models(recipe, relative_to=checkpoint)


def test_train_with_a_missing_model_names_the_key_before_any_work(project, tmp_path, elsewhere, capsys, monkeypatch):
    import huggingface_hub.constants

    # Offline (the hub library reads the variable once, at import): no minute of retries to a hub it cannot reach.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    data = [f"data.train={project['data'] / 'train.jsonl'}", "data.val=", f"output_dir={tmp_path / 'run'}"]
    code, err = run(
        capsys,
        "train",
        KEGG_TINY,
        *data,
        f"encoder.name_or_path={project['genos']}",
        "llm.name_or_path=./models/qwen3",
    )
    line = error_line(err)
    assert (
        code == 2
        and "llm.name_or_path='./models/qwen3': no such model folder" in line
        and "pass llm.name_or_path=PATH" in line
    )
    # A hub ID that cannot be loaded (here: offline) is named with its key too.
    code, err = run(
        capsys,
        "train",
        KEGG_TINY,
        *data,
        "encoder.name_or_path=nobody/no-such-dna-model",
        f"llm.name_or_path={project['qwen3']}",
    )
    line = error_line(err)
    assert code == 2 and "encoder.name_or_path='nobody/no-such-dna-model': cannot load this model" in line, line
    assert not (tmp_path / "run").exists()


# ---- VCF edge cases -----------------------------------------------------------------------


def test_pos_zero_is_skipped_with_its_reason(project, tmp_path, elsewhere, capsys):
    seqs = project["seqs"]
    rows = [("chr1", 0, "v_telomere", "N", ["A"]), cases(seqs)["snv"]]
    vcf = write_vcf(tmp_path / "telomere.vcf", rows)
    for edge in ("pad", "skip"):
        out = tmp_path / f"windows-{edge}.jsonl"
        code, err = run(
            capsys, "windows", "--vcf", vcf, "--fasta", project["fasta"], "--out", out, "--flank", "20", "--edge", edge
        )
        assert code == 0, err
        with (tmp_path / f"windows-{edge}.skipped.tsv").open() as f:
            skipped = list(csv.DictReader(f, delimiter="\t"))
        assert [(r["id"], r["pos"], r["reason"]) for r in skipped] == [("v_telomere", "0", "position_zero")]
        assert len(out.read_text().splitlines()) == 1
    out = tmp_path / "annotated.vcf"
    code, err = run(
        capsys,
        "annotate",
        project["checkpoint"],
        "--vcf",
        vcf,
        "--fasta",
        project["fasta"],
        "--out",
        out,
        "--max-new-tokens",
        "2",
    )
    assert code == 0, err
    with (tmp_path / "annotated.tsv").open() as f:
        status = {r["id"]: r["status"] for r in csv.DictReader(f, delimiter="\t")}
    assert status["v_telomere"] == "position_zero" and status["v_snv"] != "position_zero"
    records = list(pysam.VariantFile(str(out)))
    assert [r.pos for r in records] == [0, rows[1][1]] and records[0].info["DNALLM_SKIP"] == ("position_zero",)


# ---- coverage errors ----------------------------------------------------------------------


def test_coverage_data_errors_are_one_line_with_exit_status_2(coverage, tiny_models, tmp_path, elsewhere, capsys):
    code, err = run(
        capsys,
        "train-tracks",
        COVERAGE_TINY,
        f"data.fasta={tmp_path / 'missing.fa'}",
        f"output_dir={tmp_path / 'run'}",
        f"encoder.name_or_path={tiny_models['genos']}",
    )
    assert code == 2 and f"reference FASTA not found: {tmp_path / 'missing.fa'}" in error_line(err)
    code, err = run(capsys, "predict-tracks", coverage["run"], "--out", tmp_path / "preds")
    assert code == 2 and "nothing to predict: give --region" in error_line(err)
    code, err = run(
        capsys,
        "eval-tracks",
        coverage["run"],
        "--region",
        "chr3:1-600",
        "--gtf",
        tmp_path / "missing.gtf",
        "--out",
        tmp_path / "eval",
    )
    assert code == 2 and "gene annotation not found" in error_line(err) and "evaluating" not in err
    code, err = run(capsys, "plot-tracks", coverage["preds"], "--region", "chr9:1-500", "--out", tmp_path / "plot.png")
    assert code == 2 and "contig 'chr9' is not in the genome" in error_line(err)
    assert not (tmp_path / "run").exists() and not (tmp_path / "eval").exists()
