"""``dnallm cache-embeddings``: run the recipe's frozen encoder once over its datasets."""

from __future__ import annotations


from dnallm.config import Recipe
from dnallm.encoders.cache import build_cache, dataset_windows
from dnallm.hub import pick_device
from dnallm.io import check_outputs, exclusive_output
from dnallm.train.build import build_encoder, cache_identity


def cache_embeddings(recipe: Recipe, extra_data: list[str] = (), rebuild: bool = False) -> dict:
    """Embed the windows of ``data.train``, ``data.val`` and ``extra_data`` into ``encoder.cache_dir``."""
    if not recipe.encoder.cache_dir:
        raise ValueError("encoder.cache_dir is empty: set it in the recipe or as encoder.cache_dir=PATH")
    if not recipe.data.use_dna:
        raise ValueError("data.use_dna=false: a text-only recipe has no DNA to cache")
    files = [f for f in (recipe.data.train, recipe.data.val, *extra_data) if f]
    check_outputs(dirs=[recipe.encoder.cache_dir], inputs=files)
    windows = [seq for f in files for seq in dataset_windows(f, recipe.data.dna_window)]
    device = pick_device()
    # Two builders would write the same shard names.
    with exclusive_output(recipe.encoder.cache_dir, "encoder.cache_dir"):
        encoder = build_encoder(recipe, device, live=True)
        stats = build_cache(
            encoder,
            windows,
            recipe.encoder.cache_dir,
            cache_identity(recipe, device),
            batch_size=recipe.encoder.batch_size,
            rebuild=rebuild,
        )
    return {"cache_dir": recipe.encoder.cache_dir, "files": files, **stats}
