"""Setup of the coverage data: genome + tracks checked against each other, windows split and filtered."""

from __future__ import annotations

import math

import numpy as np

from dnallm.config import CoverageRecipe
from dnallm.data.coverage import CoverageWindows
from dnallm.data.genome import Genome, Region, TrackDataError
from dnallm.data.tracks import CoverageReader, Track, read_track_sheet, strand_partners
from dnallm.data.transform import TargetTransform
from dnallm.data.regions import n_fractions, read_bed, split_windows


def open_sources(recipe: CoverageRecipe, check: bool = True) -> tuple[Genome, CoverageReader, list[Track]]:
    """The FASTA and the track sheet's bigWigs, with contigs, lengths and values checked."""
    d = recipe.data
    for key in ("fasta", "tracks"):
        if not getattr(d, key):
            raise TrackDataError(f"data.{key} is empty: set it in the recipe or as data.{key}=PATH")
    genome = Genome(d.fasta)
    tracks = read_track_sheet(d.tracks)
    reader = CoverageReader(tracks, d.bigwig_contigs)
    if check:
        reader.check(genome, used_chroms(recipe, genome), strict=d.strict_contigs)
    return genome, reader, tracks


def held_out_regions(recipe: CoverageRecipe, genome: Genome, split: str) -> list[Region]:
    path = getattr(recipe.data, f"{split}_regions")
    return read_bed(path, genome.sizes) if path else []


def used_chroms(recipe: CoverageRecipe, genome: Genome) -> list[str]:
    d = recipe.data
    regions = held_out_regions(recipe, genome, "val") + held_out_regions(recipe, genome, "test")
    return list(dict.fromkeys([*d.chroms, *d.val_chroms, *d.test_chroms, *(r.chrom for r in regions)]))


def stride(recipe: CoverageRecipe) -> int:
    d = recipe.data
    if not 0 <= d.overlap < d.window:
        raise TrackDataError(f"data.overlap={d.overlap} must be >= 0 and smaller than data.window={d.window}")
    return d.window - d.overlap


def split(recipe: CoverageRecipe, genome: Genome, show_progress: bool = True) -> tuple[dict[str, list[Region]], dict]:
    """Train / val / test windows without the mostly-N ones, and a report of what was kept."""
    d = recipe.data
    step = stride(recipe)
    splits = split_windows(
        genome.sizes,
        chroms=d.chroms,
        window=d.window,
        stride=step,
        val_chroms=d.val_chroms,
        test_chroms=d.test_chroms,
        val_regions=held_out_regions(recipe, genome, "val"),
        test_regions=held_out_regions(recipe, genome, "test"),
    )
    report = {"windows": {}, "skipped_mostly_n": {}}
    for name, windows in splits.items():
        frac = n_fractions(genome, windows, math.gcd(d.window, step), show_progress=show_progress)
        splits[name] = [w for w, f in zip(windows, frac) if f <= d.max_n_fraction]
        report["windows"][name] = len(splits[name])
        report["skipped_mostly_n"][name] = int((frac > d.max_n_fraction).sum())
    if not splits["train"]:
        raise TrackDataError(
            f"no training windows left (chroms {d.chroms}, minus held-out ones and windows over {d.max_n_fraction:.0%} N)"
        )
    return splits, report


def build_datasets(
    recipe: CoverageRecipe,
    genome: Genome,
    reader: CoverageReader,
    tracks: list[Track],
    lookup: np.ndarray,
    pad_id: int,
    transform: TargetTransform,
    *,
    rank: int = 0,
    world: int = 1,
) -> tuple[CoverageWindows, CoverageWindows | None, dict]:
    d = recipe.data
    splits, report = split(recipe, genome, show_progress=rank == 0)
    common = dict(lookup=lookup, transform=transform, pad_id=pad_id, rank=rank, world_size=world)
    train = CoverageWindows(
        genome,
        reader,
        splits["train"],
        batch_size=recipe.train.micro_batch_size,
        shuffle=True,
        seed=recipe.seed,
        rc_augment=d.rc_augment,
        partners=strand_partners(tracks) if d.rc_augment else None,
        drop_last=True,
        **common,
    )
    val_windows = splits["val"]
    if len(val_windows) > recipe.eval.max_val_windows:  # evenly spaced, so every held-out chromosome is seen
        keep = np.linspace(0, len(val_windows) - 1, recipe.eval.max_val_windows).round().astype(int)
        val_windows = [val_windows[i] for i in keep]
    # Every rank must run the same number of forwards (ZeRO-3 gathers weights in each).
    val = (
        CoverageWindows(genome, reader, val_windows, batch_size=recipe.eval.batch_size, drop_last=world > 1, **common)
        if val_windows
        else None
    )
    report["val_windows_scored"] = len(val_windows)
    return train, val, report
