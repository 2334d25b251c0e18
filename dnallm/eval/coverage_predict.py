"""``dnallm predict-tracks``: coverage for regions or whole chromosomes, one bigWig per track."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from dnallm.data.bigwig_writer import BigWigWriter
from dnallm.data.genome import Genome, Region, TrackDataError
from dnallm.data.regions import parse_region
from dnallm.encoders.coverage import base_token_ids, pad_token_id
from dnallm.encoders.coverage_pretrained import load_coverage_checkpoint, read_recipe, read_tracks, resolve_checkpoint
from dnallm.eval.coverage_stitch import plan_windows, stitch
from dnallm.hub import autocast, pick_device
from dnallm.io import atomic_write_text, check_outputs


class Predictor:
    """A loaded checkpoint that turns genome windows into raw-unit coverage."""

    def __init__(
        self, checkpoint: str | Path, device: str | None = None, overrides=(), *, trust_remote_code: bool = False
    ):
        device = device or pick_device()
        checkpoint = resolve_checkpoint(checkpoint)
        recipe, model, tokenizer, tracks, transform = load_coverage_checkpoint(
            checkpoint, device, overrides, trust_remote_code=trust_remote_code
        )
        self._set(recipe, model, tokenizer, tracks, transform, device, checkpoint)

    @classmethod
    def from_model(cls, recipe, model, tokenizer, tracks, transform, device: str = "cpu") -> "Predictor":
        """A model in memory (benchmarks, notebooks) rather than a saved checkpoint. On a GPU
        its trunk is cast to bf16 in place (``model.trunk.float()`` undoes it)."""
        self = cls.__new__(cls)
        self._set(recipe, model.to(device).eval(), tokenizer, tracks, transform, device, None)
        return self

    def _set(self, recipe, model, tokenizer, tracks, transform, device, checkpoint) -> None:
        if device.startswith("cuda"):
            # Inference: the trunk's weights in bf16. Under autocast alone the MoE experts' fused
            # matmul runs in its weights' dtype, fp32, for most of the FLOPs. The small head
            # stays fp32 under autocast (its BatchNorm statistics keep their precision).
            model.trunk.to(torch.bfloat16)
        self.recipe, self.model, self.tracks, self.transform = recipe, model, tracks, transform
        self.device, self.checkpoint = device, checkpoint
        self.lookup, self.pad_id = base_token_ids(tokenizer), pad_token_id(tokenizer)

    @torch.no_grad()
    def windows(self, genome: Genome, windows: list[Region], batch_size: int) -> Iterator[np.ndarray]:
        """One ``(len(w), n_tracks)`` float32 array per window, in order, raw units."""
        for i in range(0, len(windows), batch_size):
            batch = windows[i : i + batch_size]
            codes = [genome.codes(w) for w in batch]
            longest = max(len(c) for c in codes)
            ids = torch.full((len(batch), longest), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), longest), dtype=torch.bool)
            for row, c in enumerate(codes):
                ids[row, : len(c)] = torch.from_numpy(self.lookup[c])
                mask[row, : len(c)] = True
            with autocast(self.device):
                pred = self.model(ids.to(self.device), mask.to(self.device)).pred  # (B, L, T)
            raw = self.transform.inverse(pred.float()).cpu().numpy()
            for row, c in enumerate(codes):
                yield raw[row, : len(c)]

    def region(
        self,
        genome: Genome,
        region: Region,
        *,
        stitch_mode: str = "centre",
        batch_size: int = 4,
        window: int | None = None,
        overlap: int | None = None,
    ):
        """Yield ``(start, values (n, T))`` chunks covering ``region`` in order."""
        d = self.recipe.data
        window = window or d.window
        overlap = d.overlap if overlap is None else overlap
        windows = plan_windows(region, window, overlap, genome.sizes[region.chrom])
        yield from stitch(windows, self.windows(genome, windows, batch_size), region, stitch_mode)


def merge_regions(regions: list[Region], order: dict[str, int]) -> list[Region]:
    """Sorted in FASTA order (as bigWigs require), overlapping or touching regions merged."""
    merged: list[Region] = []
    for r in sorted(regions, key=lambda r: (order[r.chrom], r.start)):
        if merged and merged[-1].chrom == r.chrom and r.start <= merged[-1].end:
            merged[-1] = Region(r.chrom, merged[-1].start, max(merged[-1].end, r.end))
        else:
            merged.append(r)
    return merged


def resolve_regions(genome: Genome, regions: list[str] = (), chroms: list[str] = ()) -> list[Region]:
    parsed = [parse_region(r, genome.sizes) for r in regions] + [parse_region(c, genome.sizes) for c in chroms]
    if not parsed:
        raise TrackDataError("nothing to predict: give --region chrom:start-end and/or --chroms chr1,chr2")
    return merge_regions(parsed, {c: i for i, c in enumerate(genome.sizes)})


def open_writers(out_dir: Path, tracks, sizes: dict[str, int]) -> list[BigWigWriter]:
    writers = []
    try:
        for t in tracks:
            writers.append(BigWigWriter(out_dir / f"{t.name}.bw", sizes))
    except BaseException:  # a full disk at the third file: the first two leave no temporary file
        for w in writers:
            w.abort()
        raise
    return writers


def prediction_files(out_dir: str | Path, tracks) -> list[Path]:
    """What ``write_predictions`` writes: one bigWig per track and ``prediction.json``."""
    return [Path(out_dir) / f"{t.name}.bw" for t in tracks] + [Path(out_dir) / "prediction.json"]


def predict_tracks(
    checkpoint,
    out_dir,
    *,
    regions=(),
    chroms=(),
    fasta: str | None = None,
    stitch_mode: str | None = None,
    batch_size: int | None = None,
    overrides=(),
    trust_remote_code: bool = False,
) -> dict:
    """Predict, stitch and write ``<out_dir>/<track>.bw`` plus ``prediction.json``."""
    checkpoint = resolve_checkpoint(checkpoint)
    tracks, fasta = read_tracks(checkpoint), fasta or read_recipe(checkpoint, overrides).data.fasta
    # The training bigWigs too: a prediction must never replace the coverage it was trained on.
    check_outputs(prediction_files(out_dir, tracks), dirs=[out_dir], inputs=[fasta, *(t.file for t in tracks)])
    predictor = Predictor(checkpoint, overrides=overrides, trust_remote_code=trust_remote_code)
    recipe = predictor.recipe
    genome = Genome(fasta)
    todo = resolve_regions(genome, regions, chroms)
    mode, batch = stitch_mode or recipe.eval.stitch, batch_size or recipe.eval.batch_size
    return write_predictions(predictor, genome, todo, mode, batch, Path(out_dir))


def write_predictions(
    predictor, genome, todo, mode: str, batch: int, out_dir: Path, visit=None, desc: str = "predicting"
) -> dict:
    """Stitched predictions over ``todo`` into ``<out_dir>/<track>.bw`` plus ``prediction.json``.

    ``visit(region, start, values)`` sees each stitched block (values: (bases, tracks)), e.g.
    to score it against observed coverage while it is in memory. No bigWig is left half-written.
    """
    writers = open_writers(out_dir, predictor.tracks, genome.sizes)
    try:
        bar = tqdm(total=sum(len(r) for r in todo), desc=desc, unit="bp", unit_scale=True)
        for region in todo:
            for start, values in predictor.region(genome, region, stitch_mode=mode, batch_size=batch):
                if visit is not None:
                    visit(region, start, values)
                for i, w in enumerate(writers):
                    w.add(region.chrom, start, values[:, i])
                bar.update(len(values))
        bar.close()
    except BaseException:
        for w in writers:
            w.abort()
        raise
    for i, w in enumerate(writers):
        try:
            w.close()
        except BaseException:
            for rest in writers[i + 1 :]:  # no temporary file left behind by the others either
                rest.abort()
            raise
    manifest = prediction_manifest(predictor, genome, todo, mode)
    atomic_write_text(out_dir / "prediction.json", json.dumps(manifest, indent=2) + "\n")
    return manifest


def prediction_manifest(predictor: Predictor, genome: Genome, regions: list[Region], mode: str) -> dict:
    d = predictor.recipe.data
    return {
        "checkpoint": str(predictor.checkpoint),
        "fasta": str(genome.path),
        "stitch": mode,
        "window": d.window,
        "overlap": d.overlap,
        "regions": [str(r) for r in regions],
        "observed_tracks": d.tracks,
        "bigwig_contigs": d.bigwig_contigs,
        "tracks": [{**t.to_dict(), "prediction": f"{t.name}.bw"} for t in predictor.tracks],
    }
