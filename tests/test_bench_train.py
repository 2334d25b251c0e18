"""scripts/bench_train.py: every mode's model is built from the mode's own recipe, never patched."""

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_each_mode_builds_its_model_from_its_own_recipe(tiny_models):
    spec = importlib.util.spec_from_file_location("bench_train", REPO / "scripts" / "bench_train.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    models = [f"encoder.name_or_path={tiny_models['genos']}", f"llm.name_or_path={tiny_models['qwen3']}"]
    args = ["--steps", "1", "--warmup", "0", "--batch", "4", "--modes", "b,c", "--logits", "reply,full"]
    report = bench.main([str(REPO / "recipes/kegg/tiny.yaml"), *models, "data.dna_window=128", *args])
    modes = report["modes"]
    assert [m["logits"] for m in modes.values()] == ["reply", "full", "reply", "full"]
    assert [m["placeholders_per_window"] for m in modes.values()] == [128, 128, 16, 16]  # k = 1, then k = 8
    # Every mode starts from the same weights, so the LM head on the answer alone (in chunks)
    # and at every position give one loss.
    for mode in ("b_cache_k1", "c_cache_k8"):
        reply, full = modes[f"{mode}_logits_reply"]["final_loss"], modes[f"{mode}_logits_full"]["final_loss"]
        assert reply == pytest.approx(full, rel=1e-5)
    assert modes["b_cache_k1_logits_reply"]["final_loss"] != modes["c_cache_k8_logits_reply"]["final_loss"]
