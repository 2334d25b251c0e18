"""Builders: a recipe in, the encoder / fusion model / processor it names out.

The model a recipe describes is its ``DNAFusionConfig``; these only add what training sets
beside it (embedding cache, packing, activation checkpointing) and build through
``dnallm.fusion.pretrained``, as inference does.
"""

from __future__ import annotations

from dnallm.config import Recipe
from dnallm.encoders import DNAEncoder, DNATokenizer
from dnallm.encoders.cache import CachedEncoder, CacheIdentity
from dnallm.fusion import pretrained
from dnallm.fusion.kernels import compile_layers
from dnallm.fusion.config import DNAFusionConfig
from dnallm.fusion.processor import DNAChatProcessor


def cache_identity(recipe: Recipe, device: str) -> CacheIdentity:
    """What a cache of ``recipe``'s embeddings is keyed by (``pretrained.cache_identity``)."""
    return pretrained.cache_identity(DNAFusionConfig.from_recipe(recipe), recipe.encoder.cache_dtype, device)


def build_encoder(recipe: Recipe, device: str, live: bool = False) -> DNAEncoder | CachedEncoder | None:
    """The recipe's DNA source: cached embeddings when ``encoder.cache_dir`` is set (the
    encoder's weights are then never loaded), else the live frozen encoder."""
    enc = recipe.encoder
    return pretrained.dna_source(
        DNAFusionConfig.from_recipe(recipe), device, cache_dir=enc.cache_dir, cache_dtype=enc.cache_dtype, live=live
    )


def build_model(recipe: Recipe, device: str, encoder: DNAEncoder | CachedEncoder | None, llm=None, place: bool = True):
    """-> (DNAFusionLM, text tokenizer), as ``DNAFusionLM.from_config`` builds it.

    ``place``: move the model to ``device``. Under ZeRO-3 the training engine partitions it
    from host memory instead (``DeepSpeedEngine``), so the whole model never sits on a GPU.
    ``llm``: a causal LM already built (benchmarks of published shapes from their configs,
    without weights on disk).
    """
    model, tokenizer = pretrained.build(
        DNAFusionConfig.from_recipe(recipe),
        device,
        encoder,
        packing=recipe.train.packing or recipe.train.max_tokens > 0,
        gradient_checkpointing=recipe.llm.gradient_checkpointing,
        liger=recipe.llm.liger,
        llm=llm,
        place=False,
    )
    if recipe.train.compile:
        compile_layers(model.llm)
    return (model.to(device) if place else model), tokenizer


def build_processor(
    recipe: Recipe, tokenizer, encoder: DNAEncoder | CachedEncoder | DNATokenizer | None
) -> DNAChatProcessor:
    dna_tokenizer = encoder.tokenizer if isinstance(encoder, (DNAEncoder, CachedEncoder)) else encoder
    return DNAChatProcessor.from_config(
        DNAFusionConfig.from_recipe(recipe),
        tokenizer,
        dna_tokenizer,
        packing=recipe.train.packing or recipe.train.max_tokens > 0,
    )
