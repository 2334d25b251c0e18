"""The coverage recipe end to end on the tiny trunk: training learns the planted signal,
evaluation scores held-out chromosomes, predictions stitch without seams and round-trip."""

import json
from pathlib import Path

import numpy as np
import pyBigWig
import pytest
import torch
from safetensors.torch import load_file

from tiny_recipes import two_threads

from dnallm.cli import main
from dnallm.io import new_file_mode
from dnallm.data.genome import Genome, Region, TrackDataError
from dnallm.data.synthetic_tracks import write_synthetic_tracks
from dnallm.eval.coverage import evaluate_tracks
from dnallm.eval.coverage_predict import Predictor
from dnallm.eval.coverage_stitch import keep_ranges, plan_windows
from dnallm.config import load_coverage_recipe
from dnallm.encoders.hf import load_backbone
from dnallm.train.checkpoint import read_state
from dnallm.encoders.coverage_pretrained import load_coverage_checkpoint
from dnallm.train.coverage import build_engine, build_model, train

from encoder_families import hyenadna

REPO = Path(__file__).resolve().parent.parent
TINY_RECIPE = REPO / "recipes" / "coverage" / "tiny.yaml"


@pytest.fixture(scope="session")
def coverage_data(tmp_path_factory) -> dict[str, Path]:
    # chr1-3 train, chr4 validation, chr5 test (as in the tiny recipe).
    return write_synthetic_tracks(tmp_path_factory.mktemp("tracks"), n_chroms=5, chrom_length=40_000, seed=0)


def tiny_recipe(tiny_models, data, out, *overrides):
    return load_coverage_recipe(
        TINY_RECIPE,
        [
            f"output_dir={out}",
            f"encoder.name_or_path={tiny_models['genos']}",
            f"data.fasta={data['fasta']}",
            f"data.tracks={data['tracks']}",
            *overrides,
        ],
    )


@pytest.fixture(scope="session")
def trained(tiny_models, coverage_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("coverage-run")
    with two_threads():
        return train(tiny_recipe(tiny_models, coverage_data, out, "train.max_steps=60", "train.log_every=5"))


def test_training_learns_the_planted_signal(trained):
    history = read_state(trained)["history"]
    losses = [e["loss"] for e in history if "loss" in e]
    third = len(losses) // 3
    assert np.mean(losses[-third:]) < np.mean(losses[:third]), losses
    before, val = history[0], history[-1]
    assert before["step"] == 0 and val["step"] == 60
    assert val["val_loss"] < 0.5 * before["val_loss"], (before, val)
    assert max(before["val_pearson_log1p"].values()) < 0.5, before  # the untrained model does not know the rule
    # Held-out chromosome, base level, every (cell type, strand) track.
    assert set(val["val_pearson_log1p"]) == {"B_plus", "B_minus", "NK_plus", "NK_minus"}
    assert min(val["val_pearson_log1p"].values()) >= 0.8, val


def test_evaluation_on_the_held_out_chromosome(trained, coverage_data, tmp_path):
    result = evaluate_tracks(trained, tmp_path, gtf=str(coverage_data["gtf"]))
    assert result["regions"] == ["chr5:1-40000"] and result["n_bases"] == 40_000
    saved = json.loads((tmp_path / "metrics.json").read_text())
    for name, m in saved["tracks"].items():
        assert m["pearson_log1p_base"] >= 0.8, (name, m)
        assert m["pearson_log1p_bin32"] >= 0.7, (name, m)
        assert m["n_genes"] >= 3 and m["pearson_log1p_gene"] >= 0.5, (name, m)
        assert 0 < m["bases_without_value"] < 40_000  # uncovered bases read as 0 and are counted
        assert 0.1 < m["predicted_over_observed"] < 3, (name, m)  # the scale is still settling at step 60
    plot = Path(result["plot"])
    assert plot.stat().st_size > 20_000 and plot.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in (tmp_path / "predictions").iterdir()) == [
        "B_minus.bw",
        "B_plus.bw",
        "NK_minus.bw",
        "NK_plus.bw",
        "prediction.json",
    ]


def test_predicted_bigwigs_round_trip(trained, coverage_data, tmp_path):
    region = "chr5:2,001-9,000"
    main(["predict-tracks", str(trained), "--region", region, "--out", str(tmp_path)])
    predictor = Predictor(trained)
    genome = Genome(coverage_data["fasta"])
    expected = np.concatenate([v for _, v in predictor.region(genome, Region("chr5", 2000, 9000))])
    for i, track in enumerate(predictor.tracks):
        path = tmp_path / f"{track.name}.bw"
        assert path.stat().st_mode & 0o777 == new_file_mode()  # readable like any new file, not mkstemp's 0600
        bw = pyBigWig.open(str(path))
        assert bw.chroms() == genome.sizes
        np.testing.assert_array_equal(bw.values("chr5", 2000, 9000, numpy=True), expected[:, i])
        assert np.isnan(bw.values("chr5", 1990, 2000, numpy=True)).all()  # nothing outside the region
    png = tmp_path / "plot.png"
    main(
        [
            "plot-tracks",
            str(tmp_path),
            "--region",
            "chr5:3001-6000",
            "--gtf",
            str(coverage_data["gtf"]),
            "--out",
            str(png),
        ]
    )
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_stitched_predictions_have_no_seams(trained, coverage_data):
    predictor = Predictor(trained)
    genome = Genome(coverage_data["fasta"])
    region = Region("chr5", 0, 20_000)

    def log_track(overlap: int) -> np.ndarray:
        return np.log1p(
            np.concatenate([v for _, v in predictor.region(genome, region, overlap=overlap, batch_size=16)])
        )

    def jumps(track: np.ndarray, at: list[int]) -> np.ndarray:
        return np.array([np.abs(track[p] - track[p - 1]).max() for p in at])

    centre = log_track(256)
    cuts = [lo for lo, _ in keep_ranges(plan_windows(region, 512, 256, genome.sizes["chr5"]), "centre")[1:]]
    everywhere = np.abs(np.diff(centre, axis=0)).max(axis=1)
    # Butting windows (no overlap) start each one without context: real seams.
    butted = log_track(0)
    naive = jumps(butted, list(range(512, 20_000, 512)))
    at_cuts = jumps(centre, cuts)
    assert at_cuts.mean() < 0.5 * naive.mean(), (at_cuts.mean(), naive.mean())
    assert at_cuts.mean() < 3 * everywhere.mean(), (at_cuts.mean(), everywhere.mean())


def test_a_checkpoint_needs_nothing_but_its_directory(trained, coverage_data):
    recipe, model, _, tracks, transform = load_coverage_checkpoint(
        trained, overrides=["encoder.name_or_path=/nowhere/genos"]
    )
    assert [t.name for t in tracks] == ["B_plus", "B_minus", "NK_plus", "NK_minus"]
    assert transform.power == 0.5 and transform.clip == 6.0
    assert not model.training and model.n_tracks == 4


def test_resumed_run_matches_the_uninterrupted_one(tiny_models, coverage_data, tmp_path):
    common = (
        "train.max_steps=4",
        "head.dropout=0.0",
        "train.micro_batch_size=4",
        "train.global_batch_size=8",
        "data.window=256",
        "data.overlap=128",
        "data.val_chroms=",
        "train.log_every=1",
    )
    straight = train(tiny_recipe(tiny_models, coverage_data, tmp_path / "a", *common))
    interrupted = tiny_recipe(tiny_models, coverage_data, tmp_path / "b", *common, "train.save_every=2")
    train(interrupted, stop_after=2)
    resumed = train(
        tiny_recipe(
            tiny_models,
            coverage_data,
            tmp_path / "b",
            *common,
            "train.save_every=2",
            "train.resume_from_checkpoint=auto",
        )
    )
    from safetensors.torch import load_file

    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
    assert read_state(resumed)["step"] == 4


def test_bad_inputs_fail_before_training(tiny_models, tmp_path):
    data = write_synthetic_tracks(tmp_path / "data", n_chroms=2, chrom_length=3000, bigwig_contigs="strip_chr")
    recipe = tiny_recipe(
        tiny_models, data, tmp_path / "run", "data.chroms=[chr1]", "data.val_chroms=[chr2]", "data.test_chroms="
    )
    with pytest.raises(TrackDataError, match="data.bigwig_contigs=strip_chr"):
        train(recipe)
    with pytest.raises(ValueError, match="global_batch_size=12 is not a multiple of micro_batch_size x ranks = 8 x 1"):
        train(
            tiny_recipe(
                tiny_models, data, tmp_path / "run", "data.bigwig_contigs=strip_chr", "train.global_batch_size=12"
            )
        )


def test_deepspeed_configs_with_their_own_optimizer_are_refused(tiny_models, coverage_data, tmp_path):
    recipe = tiny_recipe(
        tiny_models, coverage_data, tmp_path, f"deepspeed={REPO / 'recipes/deepspeed/zero3_offload.json'}"
    )
    with pytest.raises(
        ValueError, match="builds its own optimizer \\(AdamW\\); the coverage recipe trains with Adafactor"
    ):
        build_engine(recipe, build_model(recipe, 4), total_steps=10, grad_accum=1, device="cpu")


@pytest.mark.parametrize("config", ["zero2.json", "zero3.json"])
def test_deepspeed_zero_trains_with_adafactor_and_saves_whole_weights(
    tiny_models, coverage_data, tmp_path, single_process_env, config
):
    common = (
        "train.max_steps=3",
        "train.micro_batch_size=4",
        "train.global_batch_size=8",
        "data.window=256",
        "data.overlap=128",
        "eval.max_val_windows=8",
        "train.log_every=1",
        f"deepspeed={REPO / 'recipes/deepspeed' / config}",
    )
    checkpoint = train(tiny_recipe(tiny_models, coverage_data, tmp_path, *common))
    state = read_state(checkpoint)
    assert state["step"] == 3 and all(np.isfinite(e["loss"]) for e in state["history"] if "loss" in e)
    assert not (checkpoint / "optimizer.safetensors").exists()  # ZeRO keeps Adafactor state partitioned: weights only
    _, model, _, _, _ = load_coverage_checkpoint(checkpoint)
    from safetensors.torch import load_file

    saved = load_file(checkpoint / "model.safetensors")
    from transformers import AutoConfig

    genos = AutoConfig.from_pretrained(tiny_models["genos"])  # 128 rows: Genos's padded vocabulary
    assert saved["trunk.embed_tokens.weight"].shape == (
        genos.vocab_size,
        genos.hidden_size,
    )  # gathered, not a ZeRO-3 partition
    assert not torch.equal(saved["head.track_scale"], torch.ones(4))  # the head was trained


def test_trunk_of_its_own_code_trains_and_its_checkpoint_rebuilds_it(coverage_data, tmp_path):
    # HyenaDNA's interface: own code, d_model, no attention mask, one token per base.
    family = hyenadna(tmp_path / "hyenadna")
    recipe = load_coverage_recipe(
        TINY_RECIPE,
        [
            f"output_dir={tmp_path / 'run'}",
            f"encoder.name_or_path={family.path}",
            "encoder.trust_remote_code=true",
            f"data.fasta={coverage_data['fasta']}",
            f"data.tracks={coverage_data['tracks']}",
            "train.max_steps=2",
            "eval.max_val_windows=8",
        ],
    )
    checkpoint = train(recipe)
    assert (checkpoint / "trunk" / "modeling_dnaconv.py").exists()  # the code travels with the checkpoint
    _, model, _, tracks, _ = load_coverage_checkpoint(checkpoint, trust_remote_code=True)
    assert type(model.trunk).__name__ == "DNAConvModel" and len(tracks) == 4
    saved = load_file(checkpoint / "model.safetensors")
    trained = {k: v for k, v in model.state_dict().items() if k.startswith("trunk.")}
    assert trained and all(torch.equal(v, saved[k]) for k, v in trained.items())
    pretrained = load_backbone(str(family.path), torch.float32, trust_remote_code=True).state_dict()
    assert any(not torch.equal(v, trained[f"trunk.{k}"]) for k, v in pretrained.items())  # fine-tuned, not frozen
