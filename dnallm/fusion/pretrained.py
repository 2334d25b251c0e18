"""A trained fusion model read back from its checkpoint: model, processor and DNA source.

A checkpoint holds only what trained; the rest is rebuilt from ``fusion_config.json`` on top
of the base models it names. Every inference path (eval, annotate, chat, serve, the API)
loads through ``load_pretrained`` (``DNAFusionLM.from_pretrained``), and training builds
through the same pieces (``dna_source``, ``build``), so a model is made one way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from dnallm.config import Recipe, apply_overrides, get_key, kegg_recipe_class, recipe_from_dict, set_key
from dnallm.encoders import DNAEncoder, DNATokenizer
from dnallm.encoders.cache import CachedEncoder, CacheIdentity, weights_fingerprint
from dnallm.fusion.config import CONFIG_FILE, DNAFusionConfig
from dnallm.fusion.model import DNAFusionLM
from dnallm.fusion.processor import DNAChatProcessor
from dnallm.hub import (
    TRUST_KEYS,
    load_trainable,
    locate_model,
    locate_models,
    pick_device,
    resolve_checkpoint,
    resolve_dtype,
    user_trust,
)


def cache_identity(config: DNAFusionConfig, cache_dtype: str, device: str) -> CacheIdentity:
    """What a cache of ``config``'s embeddings is keyed by. A local encoder is named by its
    absolute path, so a path spelt relative or absolute names the same cache."""
    enc = config.encoder
    compute = str(resolve_dtype(enc.dtype, device)).removeprefix("torch.")
    return CacheIdentity(
        encoder=locate_model(enc.name_or_path, "encoder.name_or_path"),
        weights=weights_fingerprint(enc.name_or_path),
        layer=enc.layer,
        dna_window=config.dna_window,
        dtype=cache_dtype,
        compute_dtype=compute,
    )


def dna_source(
    config: DNAFusionConfig, device: str, *, cache_dir: str = "", cache_dtype: str = "bfloat16", live: bool = False
) -> DNAEncoder | CachedEncoder | None:
    """The model's DNA source: cached embeddings when ``cache_dir`` is set (the encoder's
    weights are then never loaded), else the live frozen encoder; None for a text-only model."""
    if not config.use_dna:
        return None
    enc = config.encoder
    if cache_dir and not live:
        tokenizer = DNATokenizer(enc.name_or_path, enc.trust_remote_code)
        return CachedEncoder(cache_dir, cache_identity(config, cache_dtype, device), tokenizer, device)
    return DNAEncoder(
        enc.name_or_path,
        layer=enc.layer,
        dtype=resolve_dtype(enc.dtype, device),
        device=device,
        trust_remote_code=enc.trust_remote_code,
    )


def build(config: DNAFusionConfig, device: str, source, **kwargs):
    """``DNAFusionLM.from_config`` sized by ``source`` (its width and tokens shape the projector;
    None for a text-only model, whose projector is never used). -> (model, text tokenizer)"""
    if source is None and config.use_dna:
        raise ValueError("a model that reads DNA needs its encoder (dna_source) to size the projector")
    if source is None:
        return DNAFusionLM.from_config(config, device=device, **kwargs)
    return DNAFusionLM.from_config(config, source.hidden_size, source.tokenizer, device=device, **kwargs)


@dataclass
class Pretrained:
    """A loaded checkpoint. ``recipe``: the run's recipe (its data files, batch sizes, name),
    for what inference reads beside the model."""

    model: DNAFusionLM
    processor: DNAChatProcessor
    dna_source: DNAEncoder | CachedEncoder | None
    recipe: Recipe
    checkpoint: Path
    device: str


def read_recipe(checkpoint: Path, overrides=()) -> Recipe:
    tree = yaml.safe_load((checkpoint / "recipe.yaml").read_text())
    return apply_overrides(recipe_from_dict(tree, cls=kegg_recipe_class(tree)), overrides)


def read_config(checkpoint: Path, recipe: Recipe | None = None) -> DNAFusionConfig:
    """The checkpoint's ``fusion_config.json``; a checkpoint written before configs were saved
    is described by its recipe (the same keys)."""
    if (checkpoint / CONFIG_FILE).is_file():
        return DNAFusionConfig.load(checkpoint)
    return DNAFusionConfig.from_recipe(recipe if recipe is not None else read_recipe(checkpoint))


def load_pretrained(
    checkpoint: str | Path, device: str | None = None, overrides=(), *, trust_remote_code: bool = False
) -> Pretrained:
    """Rebuild a checkpoint (or a run directory's latest) on top of its base models.

    ``overrides`` (``key=value``, recipe keys) can point at moved base models, e.g.
    ``llm.name_or_path=/models/Qwen3-4B``, or change inference settings (``eval.batch_size``).
    ``trust_remote_code``: the base models may run the code the checkpoint was trained with;
    without it a checkpoint that needs such code stops, naming the files (``hub.user_trust``).
    """
    device = device or pick_device()
    checkpoint = resolve_checkpoint(checkpoint)
    recipe = read_recipe(checkpoint, overrides)
    config = read_config(checkpoint, recipe).updated_from(
        recipe, [item.split("=", 1)[0].strip() for item in overrides]
    )
    locate_models(config, relative_to=checkpoint)
    user_trust(config, checkpoint, trust_remote_code, overrides)
    for key in TRUST_KEYS:
        set_key(recipe, key, get_key(config, key))
    source = dna_source(config, device, cache_dir=recipe.encoder.cache_dir, cache_dtype=recipe.encoder.cache_dtype)
    model, tokenizer = build(config, device, source)
    load_trainable(model, checkpoint)
    model.eval()
    processor = DNAChatProcessor.from_config(config, tokenizer, source.tokenizer if source is not None else None)
    return Pretrained(model, processor, source, recipe, checkpoint, device)
