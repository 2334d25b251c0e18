"""The benchmark script runs end to end and reports what it promises; the published recipe says what was published."""

import importlib.util
from pathlib import Path

from dnallm.config import AUTOSOMES, load_coverage_recipe
from dnallm.train.engine import grad_accum_steps

REPO = Path(__file__).resolve().parent.parent


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_reports_throughput_and_memory(capsys):
    report = load_script("bench_coverage").main(["--steps", "2", "--warmup", "1", "--predict-windows", "6"])
    assert '"windows_per_s"' in capsys.readouterr().out
    assert report["shape"] == "tiny" and report["window"] == 512 and report["n_tracks"] == 4
    for phase in ("train", "predict"):
        assert report[phase]["windows_per_s"] > 0 and report[phase]["peak_memory_mib"] > 0
    assert report["predict"]["windows"] >= 6 and report["train"]["last_loss"] > 0


def test_the_published_recipe():
    recipe = load_coverage_recipe(REPO / "recipes/coverage/genos1b_bcell_nk.yaml")
    assert recipe.encoder.name_or_path == "BGI-HangzhouAI/Genos-1.2B" and not recipe.encoder.trust_remote_code
    assert (recipe.data.window, recipe.data.overlap, recipe.data.chroms) == (32768, 16384, AUTOSOMES)
    assert recipe.train.global_batch_size == 256 and recipe.train.warmup_ratio == 0.05
    assert grad_accum_steps(recipe, world=8) == 32  # 1 window x 8 GPUs x 32 micro-batches
    assert (REPO / recipe.deepspeed).is_file()
