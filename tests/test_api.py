"""The Python API on tiny models: load, ask, predict, embed, predict_tracks; ``dnallm embed``."""

import json
from pathlib import Path

import numpy as np
import pyBigWig
import pytest
import torch
from safetensors import safe_open

import dnallm
from dnallm.cli import main
from dnallm.config import load_recipe
from dnallm.data.dna import RecordError
from dnallm.data.kegg import write_jsonl
from dnallm.data.synthetic import planted_records
from dnallm.encoders import DNAEncoder
from dnallm.fusion.summary import masked_mean
from dnallm.train.finetune import train

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_models) -> Path:
    out = tmp_path_factory.mktemp("api")
    write_jsonl(out / "train.jsonl", planted_records(64, n_classes=4, length=201, seed=3))
    recipe = load_recipe(
        REPO / "recipes/kegg/tiny.yaml",
        [
            f"output_dir={out / 'run'}",
            f"encoder.name_or_path={tiny_models['genos']}",
            f"llm.name_or_path={tiny_models['qwen3']}",
            f"data.train={out / 'train.jsonl'}",
            "data.val=",
            "train.max_steps=8",
            "train.save_every=0",
        ],
    )
    train(recipe)
    return out / "run"


@pytest.fixture(scope="module")
def model(run_dir):
    return dnallm.load(run_dir, device="cpu")


def test_ask_streams_the_same_reply_and_predict_batches_match_single_questions(model):
    records = planted_records(5, n_classes=4, length=201, seed=11)
    rec = records[0]
    reply = model.ask(reference=rec["reference_sequence"], variant=rec["variant_sequence"], question=rec["question"])
    pieces = list(
        model.ask(
            reference=rec["reference_sequence"], variant=rec["variant_sequence"], question=rec["question"], stream=True
        )
    )
    assert isinstance(reply, str) and reply and "".join(pieces) == reply
    predictions = model.predict([{k: v for k, v in r.items() if k != "answer"} for r in records], batch_size=2)
    assert len(predictions) == 5 and predictions[0].reply == reply  # batched greedy == one question at a time
    for p in predictions:
        assert (p.probability is None) == (p.label == "")
        assert p.probability is None or 0.0 < p.probability <= 1.0


def test_predict_names_a_bad_record_and_ask_needs_both_sequences(model):
    rec = planted_records(2, length=201, seed=5)
    del rec[1]["variant_sequence"]
    with pytest.raises(RecordError, match=r"record 1: missing field\(s\) variant_sequence"):
        model.predict(rec)
    with pytest.raises(ValueError, match="give both reference= and variant="):
        model.ask(reference="ACGT", question="Which disease?")


def test_chat_with_dna_parts_replies_as_ask(model):
    rec = planted_records(2, n_classes=4, length=201, seed=11)[1]
    parts = [
        {"type": "dna", "sequence": rec["reference_sequence"], "pair": "reference"},
        {"type": "dna", "sequence": rec["variant_sequence"], "pair": "variant"},
        {"type": "text", "text": rec["question"]},
    ]
    reply = model.chat([{"role": "user", "content": parts}])
    assert reply == model.ask(
        reference=rec["reference_sequence"], variant=rec["variant_sequence"], question=rec["question"]
    )
    assert "".join(model.chat([{"role": "user", "content": parts}], stream=True)) == reply
    with pytest.raises(ValueError, match=r"messages.0.content: DNA parts are read as one reference/variant pair"):
        model.chat([{"role": "user", "content": parts[1::-1] + parts[2:]}])
    with pytest.raises(ValueError, match="the last message must be from the user"):
        model.chat([{"role": "user", "content": parts}, {"role": "assistant", "content": "Answer: x"}])


@pytest.fixture(scope="module")
def encoder(tiny_models):
    return DNAEncoder(str(tiny_models["genos"]), device="cpu")


def test_embed_pools_ignore_padding_and_match_the_encoder(encoder, tiny_models):
    seqs = ["ACGTACGTAC", "acgt", "GGGGCCCCAAAATTTTN"]
    one_by_one = dnallm.embed(encoder, seqs, batch_size=1)
    batched = dnallm.embed(str(tiny_models["genos"]), seqs, batch_size=3, device="cpu")
    assert batched.shape == (3, encoder.hidden_size)
    torch.testing.assert_close(batched, one_by_one, atol=1e-5, rtol=1e-4)  # padding does not leak into the pool
    embeds, mask = encoder.encode(["ACGT"])
    torch.testing.assert_close(one_by_one[1], masked_mean(embeds, mask)[0])
    last = dnallm.embed(encoder, seqs, pool="last", batch_size=3)
    torch.testing.assert_close(last[1], embeds[0, 3])
    per_position = dnallm.embed(encoder, seqs, pool="none", batch_size=3)
    assert [t.shape[0] for t in per_position] == [10, 4, 17]
    with pytest.raises(RecordError, match="sequence 1: field 'sequence' has invalid character 'X'"):
        dnallm.embed(encoder, ["ACGT", "ACXT"])


def test_embed_command_writes_safetensors_and_npy_equal_to_the_api(tmp_path, tiny_models, capsys):
    fasta = tmp_path / "seqs.fa"
    fasta.write_text(">one\nACGTACGT\nACGT\n>two\nGGGGCCCC\n")
    out = tmp_path / "emb.safetensors"
    assert main(["embed", str(fasta), "--out", str(out), "--model", str(tiny_models["genos"]), "--device", "cpu"]) == 0
    with safe_open(str(out), "pt") as f:
        saved, names = f.get_tensor("embeddings"), json.loads(f.metadata()["names"])
    assert names == ["one", "two"]
    torch.testing.assert_close(
        saved, dnallm.embed(str(tiny_models["genos"]), ["ACGTACGTACGT", "GGGGCCCC"], device="cpu")
    )
    jsonl = tmp_path / "seqs.jsonl"
    jsonl.write_text(
        json.dumps({"variant_sequence": "ACGTACGTACGT"}) + "\n" + json.dumps({"variant_sequence": "GGGGCCCC"}) + "\n"
    )
    assert (
        main(
            [
                "embed",
                str(jsonl),
                "--out",
                str(tmp_path / "emb.npy"),
                "--model",
                str(tiny_models["genos"]),
                "--field",
                "variant_sequence",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    np.testing.assert_allclose(np.load(tmp_path / "emb.npy"), saved.numpy(), rtol=1e-5, atol=1e-6)
    assert main(["embed", str(jsonl), "--out", str(tmp_path / "x.npy"), "--model", str(tiny_models["genos"])]) == 2
    assert "seqs.jsonl:1: no string field 'sequence'" in capsys.readouterr().err
    assert not (tmp_path / "x.npy").exists()


def test_predict_tracks_equals_the_bigwig_of_predict_tracks_command(tmp_path, tiny_models):
    from dnallm.data.synthetic_tracks import write_synthetic_tracks
    from dnallm.eval.coverage_predict import predict_tracks
    from dnallm.train.coverage import train as train_tracks
    from dnallm.config import load_coverage_recipe

    data = write_synthetic_tracks(tmp_path / "tracks", n_chroms=5, chrom_length=6_000, seed=0)
    recipe = load_coverage_recipe(
        REPO / "recipes/coverage/tiny.yaml",
        [
            f"output_dir={tmp_path / 'run'}",
            f"encoder.name_or_path={tiny_models['genos']}",
            f"data.fasta={data['fasta']}",
            f"data.tracks={data['tracks']}",
            "train.max_steps=2",
            "eval.max_val_windows=4",
        ],
    )
    train_tracks(recipe)
    tracks_model = dnallm.load(tmp_path / "run", device="cpu")
    got = tracks_model.predict_tracks("chr5:1,001-2,500")
    assert got.values.shape == (1500, len(got.names)) and got.region.start == 1000
    predict_tracks(tmp_path / "run", tmp_path / "pred", regions=["chr5:1001-2500"])
    for i, name in enumerate(got.names):
        with pyBigWig.open(str(tmp_path / "pred" / f"{name}.bw")) as bw:
            written = np.array(bw.values("chr5", 1000, 2500), dtype=np.float32)
        np.testing.assert_allclose(got.values[:, i], written, rtol=1e-4, atol=1e-4)
