"""Embedding cache: hit, miss, stale, interrupted-and-resumed; cached = live at k = 1."""

from pathlib import Path

import pytest
import torch

from tiny_recipes import tiny_kegg_recipe
from dnallm.data.kegg import write_jsonl
from dnallm.data.synthetic import planted_records
from dnallm.encoders import DNAEncoder
from dnallm.encoders.cache import CacheError, CachedEncoder, build_cache
from dnallm.eval.kegg import evaluate
from dnallm.fusion.processor import dna_inputs
from dnallm.train.build import build_encoder, build_model, build_processor, cache_identity
from dnallm.encoders.cache import dataset_windows
from dnallm.train.embed_cache import cache_embeddings
from dnallm.train.finetune import train

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("cache-data")
    records = planted_records(48, n_classes=4, seed=5)
    write_jsonl(out / "train.jsonl", records[:40])
    write_jsonl(out / "test.jsonl", records[40:])
    return out


def _recipe(tmp_path, tiny_models, data, *extra):
    return tiny_kegg_recipe(
        tiny_models, tmp_path / "run", data / "train.jsonl", f"encoder.cache_dir={tmp_path / 'cache'}", *extra
    )


def test_cached_embeddings_give_the_live_logits_at_k1(tmp_path, tiny_models, data):
    recipe = _recipe(
        tmp_path,
        tiny_models,
        data,
        "encoder.cache_dtype=float32",
        "projector.kind=mlp",
        "projector.pool=1",
        "encoder.batch_size=1",
    )  # one window per forward, as below: batching changes the last float bits
    stats = cache_embeddings(recipe)
    assert stats == {
        "cache_dir": str(tmp_path / "cache"),
        "files": [str(data / "train.jsonl")],
        "cached": 0,
        "computed": 80,
        "total": 80,
    }
    live, cached = build_encoder(recipe, "cpu", live=True), build_encoder(recipe, "cpu")
    assert isinstance(cached, CachedEncoder) and cached.hidden_size == live.hidden_size
    model, tokenizer = build_model(recipe, "cpu", cached)
    processor = build_processor(recipe, tokenizer, cached)
    from dnallm.data.kegg import load_examples

    batch = processor.collate(
        [processor(ex) for ex in load_examples(data / "train.jsonl", recipe.data.dna_window).select(range(4))]
    )
    with torch.no_grad():
        outs = [
            model.eval()(batch["input_ids"], batch["attention_mask"], **dna_inputs(src, batch["dna"], 1)).logits
            for src in (live, cached)
        ]
    assert torch.equal(outs[0], outs[1])
    assert cache_embeddings(recipe)["computed"] == 0  # second run: all hits


def test_training_from_cache_never_loads_the_encoder(tmp_path, tiny_models, data, monkeypatch, single_process_env):
    recipe = _recipe(tmp_path, tiny_models, data, "train.max_steps=3", "train.save_every=0")
    cache_embeddings(recipe, [str(data / "test.jsonl")])

    def refuse(*args, **kwargs):
        raise AssertionError("the encoder's weights were loaded although the cache is complete")

    monkeypatch.setattr(DNAEncoder, "__init__", refuse)
    checkpoint = train(recipe)
    metrics = evaluate(checkpoint, data / "test.jsonl", tmp_path / "eval")
    assert metrics["n"] == 8


def test_missing_windows_are_refused_naming_the_file(tmp_path, tiny_models, data, single_process_env):
    recipe = _recipe(tmp_path, tiny_models, data, "train.max_steps=2", "train.save_every=0")
    cache_embeddings(recipe)  # train only
    checkpoint = train(recipe)
    with pytest.raises(CacheError, match=rf"lacks 16 of 16 windows of {data / 'test.jsonl'}.*--data"):
        evaluate(checkpoint, data / "test.jsonl", tmp_path / "eval")
    assert not (tmp_path / "eval").exists()


def test_stale_cache_is_refused_then_rebuilt(tmp_path, tiny_models, data):
    cache_embeddings(_recipe(tmp_path, tiny_models, data))
    other_layer = _recipe(tmp_path, tiny_models, data, "encoder.layer=1")
    with pytest.raises(CacheError, match=r"stale \(layer: cached -1, wanted 1\).*--rebuild"):
        build_encoder(other_layer, "cpu")
    with pytest.raises(CacheError, match="stale"):
        cache_embeddings(other_layer)
    assert cache_embeddings(other_layer, rebuild=True)["computed"] == 80
    assert isinstance(build_encoder(other_layer, "cpu"), CachedEncoder)


def test_interrupted_caching_resumes_and_matches_an_uninterrupted_run(tmp_path, tiny_models, data, monkeypatch):
    recipe = _recipe(tmp_path, tiny_models, data)
    identity = cache_identity(recipe, "cpu")
    windows = dataset_windows(data / "train.jsonl", recipe.data.dna_window)
    encoder = build_encoder(recipe, "cpu", live=True)
    build_cache(encoder, windows, tmp_path / "whole", identity, batch_size=8, shard_bytes=1)

    real_encode, calls = DNAEncoder.encode, []

    def crash_on_fourth(self, seqs):
        calls.append(len(seqs))
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_encode(self, seqs)

    monkeypatch.setattr(DNAEncoder, "encode", crash_on_fourth)
    with pytest.raises(KeyboardInterrupt):
        build_cache(encoder, windows, tmp_path / "cache", identity, batch_size=8, shard_bytes=1)
    with pytest.raises(CacheError, match="incomplete .*resumes"):
        build_encoder(recipe, "cpu")
    monkeypatch.setattr(DNAEncoder, "encode", real_encode)
    stats = build_cache(encoder, windows, tmp_path / "cache", identity, batch_size=8, shard_bytes=1)
    assert stats == {"cached": 24, "computed": 56, "total": 80}  # three batches of 8 survived
    whole = CachedEncoder(tmp_path / "whole", identity, encoder.tokenizer)
    resumed = CachedEncoder(tmp_path / "cache", identity, encoder.tokenizer)
    for a, b in zip(whole.encode(windows), resumed.encode(windows)):
        assert torch.equal(a, b)
    assert not list((tmp_path / "cache").glob(".*tmp"))


def test_a_cache_built_on_cpu_serves_the_gpu_and_the_reverse_names_the_setting(tmp_path, tiny_models, data):
    """encoder.dtype: auto is float32 on a CPU and bfloat16 on a GPU: a float32-computed cache
    is read there as is; a bfloat16-computed one is refused on the CPU with both ways on."""
    recipe = _recipe(tmp_path, tiny_models, data)
    cache_embeddings(recipe)
    windows = dataset_windows(data / "train.jsonl", recipe.data.dna_window)
    on_gpu = cache_identity(recipe, "cuda")
    assert on_gpu.compute_dtype == "bfloat16" and cache_identity(recipe, "cpu").compute_dtype == "float32"
    cached = CachedEncoder(tmp_path / "cache", on_gpu, build_encoder(recipe, "cpu", live=True).tokenizer, "cpu")
    assert cached.missing(windows) == []

    bf16 = _recipe(
        tmp_path, tiny_models, data, f"encoder.cache_dir={tmp_path / 'cache-bf16'}", "encoder.dtype=bfloat16"
    )
    cache_embeddings(bf16)
    as_auto = _recipe(tmp_path, tiny_models, data, f"encoder.cache_dir={tmp_path / 'cache-bf16'}")
    with pytest.raises(
        CacheError,
        match=r"computed with the encoder in bfloat16, and here it runs in float32.*encoder\.dtype=bfloat16.*--rebuild",
    ):
        build_encoder(as_auto, "cpu")
    assert isinstance(build_encoder(bf16, "cpu"), CachedEncoder)
