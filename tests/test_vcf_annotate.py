"""``dnallm annotate`` on a tiny trained checkpoint: valid VCF, same answers as eval, resumable."""

from __future__ import annotations

import csv
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote

import pysam
import pytest
import torch
from vcf_data import cases, other_base, reference_sequences, write_fasta, write_vcf

from dnallm.cli import main
from dnallm.config import load_recipe
from dnallm.data.kegg import load_examples, write_jsonl
from dnallm.data.synthetic import planted_records
from dnallm.data.vcf_to_kegg import vcf_to_kegg
from dnallm.data.windows import WindowOptions
from dnallm.eval.annotate import annotate
from dnallm.eval.answers import label_start
from dnallm.eval.kegg import generate_answers
from dnallm.eval.progress import ProgressMismatch
from dnallm.fusion import DNAFusionLM
from dnallm.fusion.processor import dna_inputs
from dnallm.train.finetune import train

REPO = Path(__file__).resolve().parent.parent
DNA_WINDOW = 32


@pytest.fixture(scope="module")
def checkpoint(tiny_models, tmp_path_factory) -> Path:
    """A tiny model trained long enough to answer in the 'Answer: <label>' format."""
    out = tmp_path_factory.mktemp("annotate-ckpt")
    write_jsonl(out / "train.jsonl", planted_records(64, n_classes=4, length=4001, seed=0))
    recipe = load_recipe(
        REPO / "recipes/kegg/tiny.yaml",
        [
            f"output_dir={out}/run",
            f"encoder.name_or_path={tiny_models['genos']}",
            f"llm.name_or_path={tiny_models['qwen3']}",
            f"data.train={out}/train.jsonl",
            "data.val=",
            f"data.dna_window={DNA_WINDOW}",
            "train.max_steps=150",
            "train.micro_batch_size=8",
            "train.save_every=0",
            "eval.max_new_tokens=12",
        ],
    )
    return train(recipe)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    """Reference, a sorted bgzipped VCF of every case, and a longer SNV-only VCF."""
    d = tmp_path_factory.mktemp("annotate-inputs")
    seqs = reference_sequences()
    rng = random.Random(3)
    snv_positions = sorted(rng.sample(range(30, 380), 16))
    snvs = [("chr1", p, f"s{p}", seqs["chr1"][p - 1], [other_base(seqs["chr1"][p - 1])]) for p in snv_positions]
    return {
        "seqs": seqs,
        "fasta": write_fasta(d / "ref.fa", seqs),
        "vcf": write_vcf(
            d / "cases.vcf.gz", list(cases(seqs).values()), contigs={"chr1": 400, "chr2": 300}, bgzip=True
        ),
        "snvs": write_vcf(d / "snvs.vcf.gz", snvs, bgzip=True),
    }


@pytest.fixture(scope="module")
def reference_run(checkpoint, inputs, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("uninterrupted") / "annotated.vcf.gz"
    summary = annotate(checkpoint, inputs["vcf"], inputs["fasta"], out, batch_size=2)
    return {"summary": summary, "out": out, "tsv": out.with_name("annotated.tsv")}


def tsv_rows(path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def test_annotated_vcf_reads_back_with_the_new_info_fields(reference_run, inputs):
    summary, out = reference_run["summary"], reference_run["out"]
    rows = {(int(r["record"]), int(r["alt_index"])): r for r in tsv_rows(reference_run["tsv"])}
    assert summary["alleles"] == len(rows) == 15
    assert summary["annotated"] + summary["no_answer"] + sum(summary["skipped"].values()) == 15
    assert summary["annotated"] >= 4, "the tiny checkpoint should answer in the trained format"
    assert summary["progress"] is None and not Path(f"{out}.progress.jsonl").exists()
    assert Path(summary["plot"]).stat().st_size > 0

    vcf = pysam.VariantFile(str(out))
    for key, kind in (("DNALLM_LABEL", "String"), ("DNALLM_PROB", "Float"), ("DNALLM_SKIP", "String")):
        assert (vcf.header.info[key].number, vcf.header.info[key].type) == ("A", kind)
    records = list(vcf)
    assert len(records) == 13 and all(rec.info["DP"] == 10 for rec in records)  # input INFO kept
    for number, rec in enumerate(records, start=1):
        for index, alt in enumerate(rec.alts or (), start=1):
            row = rows[(number, index)]
            assert (row["chrom"], int(row["pos"]), row["alt"]) == (rec.chrom, rec.pos, alt)
            if row["status"] == "annotated":
                assert unquote(rec.info["DNALLM_LABEL"][index - 1]) == row["label"] != ""
                assert rec.info["DNALLM_PROB"][index - 1] == pytest.approx(float(row["probability"]), rel=1e-5)
                assert 0.0 < float(row["probability"]) <= 1.0
            else:
                assert rec.info["DNALLM_SKIP"][index - 1] == row["status"]
    by_id = {(rec.id, alt): rec for rec in records for alt in rec.alts or ()}
    assert by_id[("v_bad_ref", cases(inputs["seqs"])["ref_mismatch"][4][0])].info["DNALLM_SKIP"] == ("ref_mismatch",)
    assert by_id[("v_chr9", "G")].info["DNALLM_SKIP"] == ("missing_contig",)
    assert by_id[("v_multi", "<DEL>")].info["DNALLM_SKIP"][2] == "symbolic"
    assert by_id[("v_multi", "<DEL>")].info["DNALLM_LABEL"][:2] != (".", ".")
    # Sorted and bgzipped: tabix-indexed, so region queries work.
    assert summary["index"] == f"{out}.tbi"
    assert [rec.id for rec in pysam.VariantFile(str(out)).fetch("chr1", 100, 170)] == ["v_del", "v_multi"]


def test_answers_match_eval_and_probability_matches_forced_decoding(checkpoint, inputs, tmp_path):
    out = tmp_path / "annotated.vcf"
    annotate(checkpoint, inputs["vcf"], inputs["fasta"], out, batch_size=3, max_n_fraction=1.0)
    annotated = {(r["id"], r["alt"]): r for r in tsv_rows(tmp_path / "annotated.tsv") if r["status"] == "annotated"}
    assert len(annotated) >= 4

    # The same alleles through `dnallm windows` and the eval path.
    vcf_to_kegg(
        inputs["vcf"], inputs["fasta"], tmp_path / "windows.jsonl", opts=WindowOptions(flank=20, max_n_fraction=1.0)
    )
    examples = load_examples(tmp_path / "windows.jsonl", DNA_WINDOW)
    records = [json.loads(line) for line in (tmp_path / "windows.jsonl").read_text().splitlines()]
    loaded = DNAFusionLM.from_pretrained(checkpoint, "cpu")
    recipe, encoder, model, processor = loaded.recipe, loaded.dna_source, loaded.model, loaded.processor
    texts = generate_answers(
        model,
        encoder,
        processor,
        examples,
        batch_size=4,
        max_new_tokens=recipe.eval.max_new_tokens,
        encoder_batch_size=8,
        device="cpu",
    )
    compared = 0
    for rec, text in zip(records, texts):
        row = annotated.get((rec["id"], rec["alt"]))
        if row is not None:
            assert row["reply"] == text
            compared += 1
    assert compared == len(annotated)

    # Probability of the label tokens, teacher-forced, with the DNA tokens suppressed as in generation.
    example = next(ex for ex, rec in zip(examples, records) if (rec["id"], rec["alt"]) in annotated)
    row = annotated[next((r["id"], r["alt"]) for r in records if (r["id"], r["alt"]) in annotated)]
    tokenizer = processor.tokenizer
    reply_ids = tokenizer(row["reply"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    features = processor(example, with_answer=False)
    ids = torch.tensor([features["input_ids"] + reply_ids])
    dna = dna_inputs(encoder, features["dna"], 8)
    with torch.no_grad():
        logits = model(ids, torch.ones_like(ids), **dna).logits[0].float()  # (tokens, vocab)
    logits[:, [model.dna_start_id, model.dna_pad_id, model.dna_end_id]] = -math.inf
    n_prompt = len(features["input_ids"])
    logp = logits[n_prompt - 1 : -1].log_softmax(-1).gather(-1, torch.tensor(reply_ids)[:, None]).squeeze(-1)
    start = label_start(tokenizer, reply_ids)
    assert start is not None and start > 0
    assert float(row["probability"]) == pytest.approx(math.exp(float(logp[start:].sum())), rel=1e-3)


def read_bytes(run: dict) -> tuple[bytes, bytes, bytes]:
    return run["out"].read_bytes(), run["tsv"].read_bytes(), Path(f"{run['out']}.tbi").read_bytes()


def test_stopped_run_resumes_to_identical_outputs(checkpoint, inputs, reference_run, tmp_path):
    out = tmp_path / "annotated.vcf.gz"
    progress = Path(f"{out}.progress.jsonl")
    first = annotate(checkpoint, inputs["vcf"], inputs["fasta"], out, batch_size=2, stop_after=1)
    assert first["stopped"] and first["batches_computed"] == 1
    assert not out.exists() and len(progress.read_text().splitlines()) == 2  # fingerprint + one batch
    with progress.open("a") as f:
        f.write('{"batch": 1, "rows": [[2, 1, "amyo')  # a write the crash cut short

    with pytest.raises(ProgressMismatch, match=r"batch_size: 2 then, 3 now"):
        annotate(checkpoint, inputs["vcf"], inputs["fasta"], out, batch_size=3)
    resumed = annotate(checkpoint, inputs["vcf"], inputs["fasta"], out, batch_size=2)
    assert resumed["batches_resumed"] == 1
    assert resumed["batches_computed"] == reference_run["summary"]["batches_computed"] - 1
    assert read_bytes({"out": out, "tsv": tmp_path / "annotated.tsv"}) == read_bytes(reference_run)
    assert not progress.exists()


def test_killed_process_resumes_to_identical_outputs(checkpoint, inputs, tmp_path):
    args = [
        str(checkpoint),
        "--vcf",
        str(inputs["snvs"]),
        "--fasta",
        str(inputs["fasta"]),
        "--batch-size",
        "1",
        "--max-new-tokens",
        "8",
    ]
    killed = {"out": tmp_path / "killed" / "annotated.vcf.gz", "tsv": tmp_path / "killed" / "annotated.tsv"}
    progress = Path(f"{killed['out']}.progress.jsonl")
    env = {**os.environ, "PYTHONPATH": str(REPO), "DS_ACCELERATOR": "cpu"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dnallm", "annotate", *args, "--out", str(killed["out"])],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if progress.is_file() and len(progress.read_bytes().splitlines()) >= 4:  # fingerprint + 3 batches
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert not killed["out"].exists()

    resumed = annotate(checkpoint, inputs["snvs"], inputs["fasta"], killed["out"], batch_size=1, max_new_tokens=8)
    assert resumed["batches_resumed"] >= 3 and resumed["batches_computed"] >= 1
    whole = {"out": tmp_path / "whole" / "annotated.vcf.gz", "tsv": tmp_path / "whole" / "annotated.tsv"}
    main(["annotate", *args, "--out", str(whole["out"])])
    assert read_bytes(killed) == read_bytes(whole)


def test_unsorted_input_gives_an_unindexed_vcf_and_says_how_to_sort(checkpoint, inputs, tmp_path, capsys):
    rows = list(cases(inputs["seqs"]).values())
    rows = rows[5:] + rows[:5]
    vcf = write_vcf(tmp_path / "unsorted.vcf.gz", rows, bgzip=True)
    out = tmp_path / "annotated.vcf.gz"
    main(
        [
            "annotate",
            str(checkpoint),
            "--vcf",
            str(vcf),
            "--fasta",
            str(inputs["fasta"]),
            "--out",
            str(out),
            "--batch-size",
            "8",
        ]
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["index"] is None and not Path(f"{out}.tbi").exists()
    assert "returns to chr1" in summary["unsorted"] and "bcftools sort" in summary["unsorted"]
    assert [rec.id for rec in pysam.VariantFile(str(out))] == [r[2] for r in rows]
    assert (
        main(
            [
                "annotate",
                str(checkpoint),
                "--vcf",
                str(vcf),
                "--fasta",
                str(inputs["fasta"]),
                "--out",
                str(tmp_path / "x.txt"),
            ]
        )
        == 2
    )
    assert re.search(r"dnallm annotate: error: --out must end in \.vcf or \.vcf\.gz", capsys.readouterr().err)
