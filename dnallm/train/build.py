"""Builders: a recipe in, the encoder / fusion model / processor it names out."""

from __future__ import annotations

from pathlib import Path

import yaml
from dnallm.config import Recipe, apply_overrides, kegg_recipe_class, recipe_from_dict
from dnallm.encoders import DNAEncoder, DNATokenizer
from dnallm.encoders.cache import CacheIdentity, CachedEncoder, weights_fingerprint
from dnallm.fusion import build_fusion_lm
from dnallm.fusion.kernels import compile_layers
from dnallm.fusion.processor import DNAChatProcessor
from dnallm.hub import locate_model, locate_models, resolve_dtype
from dnallm.train.checkpoint import load_trainable, resolve_checkpoint


def projector_positions(recipe: Recipe, dna_tokenizer: DNATokenizer | None) -> tuple[int, int, int]:
    """``projector.pool``, ``projector.kernel`` and ``projector.summary_context`` (bases) as
    encoder positions: the one place where bases become tokens (``DNATokenizer.to_tokens``:
    k bases per k-mer token, the measured mean for BPE, at least 1; the summary context
    stays odd, centre plus equal flanks). A text-only recipe has no encoder: (1, 1, 1)."""
    if dna_tokenizer is None:
        return 1, 1, 1
    pool = dna_tokenizer.to_tokens(recipe.projector.pool)
    context = dna_tokenizer.to_tokens(recipe.projector.summary_context) | 1
    return pool, max(pool, dna_tokenizer.to_tokens(recipe.projector.kernel)), context


def cache_identity(recipe: Recipe, device: str) -> CacheIdentity:
    """What a cache of ``recipe``'s embeddings is keyed by. A local encoder is named by its
    absolute path, so a path spelt relative or absolute names the same cache."""
    enc = recipe.encoder
    compute = str(resolve_dtype(enc.dtype, device)).removeprefix("torch.")
    return CacheIdentity(
        encoder=locate_model(enc.name_or_path, "encoder.name_or_path"), weights=weights_fingerprint(enc.name_or_path), layer=enc.layer,
        dna_window=recipe.data.dna_window, dtype=enc.cache_dtype, compute_dtype=compute,
    )


def build_encoder(recipe: Recipe, device: str, live: bool = False) -> DNAEncoder | CachedEncoder | None:
    """The recipe's DNA source: cached embeddings when ``encoder.cache_dir`` is set (the
    encoder's weights are then never loaded), else the live frozen encoder."""
    if not recipe.data.use_dna:
        return None
    enc = recipe.encoder
    if enc.cache_dir and not live:
        tokenizer = DNATokenizer(enc.name_or_path, enc.trust_remote_code)
        return CachedEncoder(enc.cache_dir, cache_identity(recipe, device), tokenizer, device)
    return DNAEncoder(
        enc.name_or_path, layer=enc.layer, dtype=resolve_dtype(enc.dtype, device), device=device,
        trust_remote_code=enc.trust_remote_code,
    )


def build_model(recipe: Recipe, device: str, encoder: DNAEncoder | CachedEncoder | None, llm=None, place: bool = True):
    """-> (DNAFusionLM, text tokenizer). Trainable parts stay fp32; the frozen base takes ``llm.dtype``.

    ``place``: move the model to ``device``. Under ZeRO-3 the training engine partitions it
    from host memory instead (``DeepSpeedEngine``), so the whole model never sits on a GPU.

    ``encoder``: the recipe's DNA source (``build_encoder``); its output width and tokens
    shape the projector. ``None`` for a text-only recipe, whose projector is never used.
    ``llm``: a causal LM already built (benchmarks of published shapes from their configs,
    without weights on disk).
    """
    if encoder is None and recipe.data.use_dna:
        raise ValueError("build_model: a recipe that reads DNA needs its encoder (build_encoder) to size the projector")
    pool, kernel, context = projector_positions(recipe, encoder.tokenizer if encoder is not None else None)
    model, tokenizer = build_fusion_lm(
        recipe.llm.name_or_path,
        encoder.hidden_size if encoder is not None else 1,
        lora={"r": recipe.lora.r, "alpha": recipe.lora.alpha, "dropout": recipe.lora.dropout, "target_modules": recipe.lora.target_modules},
        projector_kind=recipe.projector.kind,
        pool=pool,
        kernel=kernel,
        summary=recipe.projector.summary,
        summary_tokens=recipe.projector.summary_tokens,
        summary_context=context,
        dtype=resolve_dtype(recipe.llm.dtype, device),
        trust_remote_code=recipe.llm.trust_remote_code,
        gradient_checkpointing=recipe.llm.gradient_checkpointing,
        packing=recipe.train.packing or recipe.train.max_tokens > 0,
        liger_device=device if recipe.llm.liger else "",
        logits=recipe.train.logits,
        logits_chunk=recipe.train.logits_chunk,
        llm=llm,
    )
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    if recipe.train.compile:
        compile_layers(model.llm)
    return (model.to(device) if place else model), tokenizer


def build_processor(recipe: Recipe, tokenizer, encoder: DNAEncoder | CachedEncoder | DNATokenizer | None) -> DNAChatProcessor:
    dna_tokenizer = encoder.tokenizer if isinstance(encoder, (DNAEncoder, CachedEncoder)) else encoder
    dna_tokenizer = dna_tokenizer if recipe.data.use_dna else None
    return DNAChatProcessor(
        tokenizer, dna_tokenizer, pool=projector_positions(recipe, dna_tokenizer)[0],
        summary_tokens=0 if recipe.projector.summary == "none" else recipe.projector.summary_tokens,
        system_prompt=recipe.data.system_prompt, with_reasoning=recipe.data.with_reasoning,
        packing=recipe.train.packing or recipe.train.max_tokens > 0,
    )


def checkpoint_recipe(checkpoint: str | Path, overrides: list[str] | tuple = ()) -> Recipe:
    """A checkpoint's recipe with ``overrides`` applied and its base models located (nothing loaded)."""
    checkpoint = resolve_checkpoint(checkpoint)
    tree = yaml.safe_load((checkpoint / "recipe.yaml").read_text())
    recipe = recipe_from_dict(tree, cls=kegg_recipe_class(tree))
    apply_overrides(recipe, overrides)
    locate_models(recipe, relative_to=checkpoint)
    return recipe


def load_checkpoint(checkpoint: str | Path, device: str, overrides: list[str] | tuple = ()):
    """Rebuild encoder + fusion model from a checkpoint's recipe on top of the base models.

    ``overrides`` (``key=value``) can point at moved base models, e.g.
    ``llm.name_or_path=/models/Qwen3-4B``. -> (recipe, encoder, model, processor)
    """
    recipe = checkpoint_recipe(checkpoint, overrides)
    encoder = build_encoder(recipe, device)
    model, tokenizer = build_model(recipe, device, encoder)
    load_trainable(model, resolve_checkpoint(checkpoint))
    model.eval()
    return recipe, encoder, model, build_processor(recipe, tokenizer, encoder)

