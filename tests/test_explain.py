"""Which bases made the answer: attribution checked where we know the answer.

On planted tasks the label is a function of known bases (a motif around the variant, the
variant's base, the substitution), so in-silico mutagenesis and gradient x input must find
them. The tiny models train once per module (scripts/explain_planted.py, which prints the
README's numbers), for the steps tests/test_fidelity.py gives each signal at k = 8 (never more
than the planted recipe's 600).
"""

from __future__ import annotations

import importlib.util
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tiny_recipes import two_threads

from dnallm.data.kegg import examples_from_records, read_jsonl, write_jsonl
from dnallm.data.synthetic import planted_signal_records
from dnallm.eval.explain import (
    Explainer,
    attribution_metrics,
    explain_examples,
    ism_work,
    parse_region,
    planted_positions,
)
from dnallm.fusion.model import DNAFusionLM
from dnallm.train.finetune import train
from tests.vcf_data import write_fasta, write_vcf

REPO = Path(__file__).resolve().parent.parent
N_EXPLAINED = 40  # held-out records explained per signal


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


planted_script = _script("explain_planted")


@pytest.fixture(scope="module")
def planted(tiny_models, tmp_path_factory) -> dict[str, dict]:
    """signal -> {"checkpoint", "test"}: the tiny fusion model trained on each planted signal for
    the steps the fidelity tests give it."""
    root = tmp_path_factory.mktemp("explain")
    with two_threads():
        return {
            signal: planted_script.planted_checkpoint(tiny_models, root, signal, steps)
            for signal, steps in planted_script.STEPS.items()
        }


@pytest.fixture(scope="module")
def ism(planted) -> dict[str, list]:
    with two_threads():
        return {
            signal: planted_script.explain_planted(planted[signal], "ism", N_EXPLAINED)
            for signal in planted_script.STEPS
        }


def test_ism_top_positions_are_the_planted_motif(ism):
    metrics = attribution_metrics(ism["motif"], planted_positions("motif", 32))
    assert metrics["k"] == 9 and metrics["top_k_hit"] >= 0.90, metrics  # the top 9 positions overlap the motif
    assert metrics["auroc"] >= 0.90, metrics


@pytest.mark.parametrize("signal", ["centre", "substitution"])
def test_ism_top_position_is_the_variants_base(ism, signal):
    metrics = attribution_metrics(ism[signal], planted_positions(signal, 32))
    assert metrics["k"] == 1 and metrics["top_k_hit"] >= 0.95, metrics  # the top position is the variant's base
    assert metrics["auroc"] >= 0.90, metrics


@pytest.mark.parametrize("signal", list(planted_script.STEPS))
def test_gradient_x_input_ranks_the_planted_bases(planted, signal):
    explanations = planted_script.explain_planted(planted[signal], "gradient", N_EXPLAINED)
    metrics = attribution_metrics(explanations, planted_positions(signal, 32))
    assert metrics["auroc"] >= 0.80, metrics
    # One-hot gradient x input: a score at the base present only.
    e = explanations[0]
    for w, window in enumerate((e.reference, e.variant)):
        present = np.array([[b == base for b in "ACGT"] for base in window])  # (32, 4)
        assert np.all(e.scores[w][~present] == 0)


def test_ism_scores_are_changes_of_the_label_log_probability(ism):
    e = ism["centre"][0]
    assert e.scores.shape == (2, 32, 4)
    for w, window in enumerate((e.reference, e.variant)):
        present = np.array([[b == base for b in "ACGT"] for base in window])  # (32, 4)
        assert np.all(e.scores[w][present] == 0)  # the base as given: no change
        assert np.all(e.scores[w][~present] != 0)
    assert e.label_logp < 0
    assert np.allclose(e.importance, np.abs(e.scores).sum(-1) / 3)


def test_text_only_model_gives_zero_importance(tiny_models, tmp_path):
    # The text-only baseline: the same LLM + LoRA trained on the question alone.
    records = planted_signal_records(40, length=201, seed=2, signal="motif")
    write_jsonl(tmp_path / "train.jsonl", records[8:])
    write_jsonl(tmp_path / "test.jsonl", records[:8])
    recipe = planted_script.tiny_recipe(
        tiny_models, tmp_path / "train.jsonl", tmp_path / "run", "data.use_dna=false", "train.max_steps=30"
    )
    entry = {"checkpoint": train(recipe), "test": tmp_path / "test.jsonl"}
    for method in ("ism", "gradient"):
        [e] = planted_script.explain_planted(entry, method, 1)
        assert e.scores.shape == (2, 32, 4)
        assert np.abs(e.importance).max() < 1e-5, (method, e.importance)


def test_ism_of_the_centre_64_bp_is_one_batched_pass_over_384_windows(tiny_models, tmp_path):
    data = tmp_path / "data"
    records = planted_signal_records(16, n_classes=4, length=201, seed=3, signal="centre")
    write_jsonl(data / "train.jsonl", records)
    recipe = planted_script.tiny_recipe(
        tiny_models, data / "train.jsonl", tmp_path / "run", "train.max_steps=1", "data.dna_window=96"
    )
    checkpoint = train(recipe)
    loaded = DNAFusionLM.from_pretrained(checkpoint, "cpu")
    recipe, encoder, model, processor = loaded.recipe, loaded.dna_source, loaded.model, loaded.processor
    [example] = list(examples_from_records(records[:1], 96))
    # A flank base is changed in both windows, the variant's base in each: 63 x 3 + 2 x 3 pairs, 384 windows.
    assert ism_work((example["ref_window"], example["var_window"]), parse_region(None, 96)) == (195, 384)
    encoded, scored = [], []
    real_encode, real_logps = encoder.encode, model.token_logps
    encoder.encode = lambda seqs: encoded.append(len(seqs)) or real_encode(seqs)
    model.token_logps = lambda ids, *a, **k: scored.append(ids.shape[0]) or real_logps(ids, *a, **k)
    explainer = Explainer(model, encoder, processor, device="cpu", encoder_batch_size=recipe.encoder.batch_size)
    [e] = explain_examples(explainer, [example], labels=[records[0]["answer"]], batch_size=384)
    assert e.method == "ism" and e.region == (16, 80)
    # The given pair (encoded for the unmutated score and reused by every mutant), then the mutants in one pass.
    assert encoded == [2, 384], encoded
    assert scored == [1, 195]


# ---- the command: outputs, coordinates, bad input ------------------------------------------------


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dnallm", *args], capture_output=True, text=True, cwd=REPO, timeout=600
    )


@pytest.fixture(scope="module")
def vcf_records(tmp_path_factory) -> dict[str, Path]:
    """A 300-bp contig, an SNV and a deletion, windows in the KEGG layout (``dnallm windows``)."""
    from dnallm.data.vcf_to_kegg import vcf_to_kegg
    from dnallm.data.windows import WindowOptions

    root = tmp_path_factory.mktemp("vcf")
    rng = random.Random(5)
    seq = "".join(rng.choice("ACGT") for _ in range(300))
    fasta = write_fasta(root / "ref.fa", {"chrZ": seq})
    snv_alt = "A" if seq[119] != "A" else "C"
    vcf = write_vcf(
        root / "calls.vcf",
        [("chrZ", 120, "snv", seq[119], [snv_alt]), ("chrZ", 200, "del", seq[199:202], [seq[199]])],
        contigs={"chrZ": 300},
    )
    vcf_to_kegg(vcf, fasta, root / "calls.jsonl", opts=WindowOptions(flank=40))
    return {"fasta": fasta, "jsonl": root / "calls.jsonl"}


def test_explain_command_writes_scores_tracks_and_plots_in_genome_coordinates(planted, vcf_records, tmp_path):
    import pyBigWig

    out = tmp_path / "explain"
    result = _run(
        "explain",
        str(planted["motif"]["checkpoint"]),
        "--data",
        str(vcf_records["jsonl"]),
        "--out",
        str(out),
        "--fasta",
        str(vcf_records["fasta"]),
        "--region",
        "16",
        "--label",
        "parkinson's disease",
    )
    assert result.returncode == 0, result.stderr
    # The count of mutated windows and forward passes, stated before the work.
    assert "ISM: 2 record(s), " in result.stderr and " mutated windows in " in result.stderr
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == sorted(
        [
            "scores.tsv",
            "importance.reference.bedGraph",
            "importance.variant.bedGraph",
            "importance.reference.bw",
            "importance.variant.bw",
            "record-0.png",
            "record-1.png",
        ]
    )
    rows = [line.split("\t") for line in (out / "scores.tsv").read_text().splitlines()]
    header, rows = rows[0], rows[1:]
    col = {name: header.index(name) for name in header}
    assert len(rows) == 2 * 2 * 16 * 4  # records x windows x positions x bases
    # The SNV's window: the centre base (window position 17 of 32) is VCF position 120, in both windows.
    snv = [r for r in rows if r[col["record"]] == "0" and r[col["position"]] == "17"]
    assert {r[col["genome_pos"]] for r in snv} == {"120"}
    snv_ref = read_jsonl(vcf_records["jsonl"])[0]["ref"]
    assert {r[col["present"]] for r in snv if r[col["window"]] == "reference"} == {snv_ref}
    # The bigWig holds each base's importance at its genome position (0-based there).
    importance = {
        int(r[col["genome_pos"]]): float(r[col["importance"]])
        for r in rows
        if r[col["record"]] == "0" and r[col["window"]] == "reference"
    }
    with pyBigWig.open(str(out / "importance.reference.bw")) as bw:
        assert bw.chroms() == {"chrZ": 300}
        for pos, value in importance.items():
            assert bw.values("chrZ", pos - 1, pos)[0] == pytest.approx(value, rel=1e-4, abs=1e-9)
    # The deletion's variant window: the bases right of the deleted ones map 2 bp further on the reference.
    deletion = {
        (r[col["window"]], int(r[col["position"]])): r[col["genome_pos"]] for r in rows if r[col["record"]] == "1"
    }
    assert deletion[("reference", 17)] == "202"  # the second deleted base (VCF 200 is the anchor, 201-202 deleted)
    assert deletion[("variant", 17)] == "203"  # the variant window's centre: the base after the deletion
    assert not list(out.rglob(".*.tmp"))  # written whole: no temporary file left


def test_explain_bad_input_is_one_line(planted, vcf_records, tmp_path):
    checkpoint = str(planted["motif"]["checkpoint"])
    data = str(vcf_records["jsonl"])
    result = _run("explain", checkpoint, "--data", data, "--out", str(tmp_path / "a"), "--region", "20-40")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "dnallm explain: error: region 20-40: outside the 32-bp window (positions 1-32); give START-END within it"
    ]
    assert not (tmp_path / "a" / "scores.tsv").exists()

    no_dna = tmp_path / "no_dna.jsonl"
    write_jsonl(no_dna, [{"question": "Which disease?", "answer": "x"}])
    result = _run("explain", checkpoint, "--data", str(no_dna), "--out", str(tmp_path / "b"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"dnallm explain: error: {no_dna}:1: missing field(s) reference_sequence, variant_sequence"
    )

    result = _run("explain", checkpoint, "--data", data, "--out", str(tmp_path / "c"), "--record", "5")
    assert result.returncode == 2 and "--record 5:" in result.stderr and "has 2 records (0-1)" in result.stderr


def test_python_api_explains_one_pair(planted, tmp_path):
    import dnallm

    model = dnallm.load(planted["centre"]["checkpoint"], device="cpu")
    record = read_jsonl(planted["centre"]["test"])[0]
    e = model.explain(
        reference=record["reference_sequence"],
        variant=record["variant_sequence"],
        question=record["question"],
        method="ism",
        region=8,
    )
    assert e.scores.shape == (2, 8, 4) and e.importance.shape == (2, 8) and e.region == (12, 20)
    assert int(np.argmax(e.position_importance)) == 4  # the variant's base, window position 17
    e.plot(tmp_path / "centre.png")
    assert (tmp_path / "centre.png").stat().st_size > 5_000
    with pytest.raises(ValueError, match="region 0-3"):
        model.explain(
            reference=record["reference_sequence"],
            variant=record["variant_sequence"],
            question=record["question"],
            region="0-3",
        )
