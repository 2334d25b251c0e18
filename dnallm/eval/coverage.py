"""``dnallm eval-tracks``: predict held-out regions, score them against the observed bigWigs, plot.

Writes ``<out>/predictions/<track>.bw``, ``<out>/metrics.json`` and ``<out>/plot.png``.
Every metric is on raw units (predictions inverse-transformed), Pearson of log1p.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path


from dnallm.data.gene_models import Gene, read_genes
from dnallm.data.genome import Genome, Region, TrackDataError
from dnallm.data.tracks import CoverageReader, Track, read_track_sheet
from dnallm.data.regions import parse_region, read_bed
from dnallm.encoders.coverage_pretrained import read_recipe, read_tracks, resolve_checkpoint
from dnallm.eval.coverage_metrics import CoverageMetrics
from dnallm.eval.coverage_plot import plot_tracks
from dnallm.eval.coverage_predict import Predictor, merge_regions, prediction_files, resolve_regions, write_predictions
from dnallm.io import atomic_write_text, check_outputs


def observed_tracks(sheet: str | Path, expected: list[Track]) -> list[Track]:
    """The observed tracks in the model's output order, matched by name."""
    by_name = {t.name: t for t in read_track_sheet(sheet)}
    missing = [t.name for t in expected if t.name not in by_name]
    if missing:
        raise TrackDataError(
            f"{sheet}: no observed track for model output(s) {', '.join(missing)} (sheet has {', '.join(by_name)})"
        )
    return [by_name[t.name] for t in expected]


def test_regions(recipe, genome: Genome) -> list[Region]:
    d = recipe.data
    regions = [Region(c, 0, genome.sizes[c]) for c in d.test_chroms if c in genome.sizes]
    regions += read_bed(d.test_regions, genome.sizes) if d.test_regions else []
    if not regions:
        raise TrackDataError(
            "no regions to evaluate: give --region / --chroms, or set data.test_chroms / data.test_regions in the recipe"
        )
    return merge_regions(regions, {c: i for i, c in enumerate(genome.sizes)})


def auto_plot_region(metrics: CoverageMetrics, regions: list[Region], sizes: dict[str, int]) -> Region:
    """Around the most covered gene (observed), or the start of the first region."""
    genes = metrics.genes
    if genes.genes:
        g = genes.genes[int(genes.obs.sum(axis=1).argmax())]
        span = max(2000, 3 * (g.end - g.start))
        centre = (g.start + g.end) // 2
        start = max(0, min(sizes[g.chrom] - span, centre - span // 2))
        return Region(g.chrom, start, min(sizes[g.chrom], start + span))
    r = regions[0]
    return Region(r.chrom, r.start, min(r.end, r.start + 10_000))


def plot_from_bigwigs(
    region: Region, predicted: list[Track], observed: CoverageReader, genes: list[Gene], out: Path, title: str = ""
) -> Path:
    pred, _ = CoverageReader(predicted).read(region)
    obs, _ = observed.read(region)
    return plot_tracks(region, obs, pred, predicted, genes, out, title)


def evaluate_tracks(
    checkpoint,
    out_dir,
    *,
    regions=(),
    chroms=(),
    gtf: str | None = None,
    gtf_contigs: str = "same",
    observed: str | None = None,
    fasta: str | None = None,
    plot_region: str | None = None,
    stitch_mode: str | None = None,
    batch_size: int | None = None,
    overrides=(),
    trust_remote_code: bool = False,
) -> dict:
    checkpoint, out_dir = resolve_checkpoint(checkpoint), Path(out_dir)
    recipe, tracks = read_recipe(checkpoint, overrides), read_tracks(checkpoint)
    fasta = fasta or recipe.data.fasta
    sheet = observed or recipe.data.tracks
    observed_list = observed_tracks(sheet, tracks)
    check_outputs(
        [out_dir / "metrics.json", out_dir / "plot.png", *prediction_files(out_dir / "predictions", tracks)],
        dirs=[out_dir, out_dir / "predictions"],
        inputs=[fasta, gtf, sheet, *(t.file for t in [*observed_list, *tracks])],
    )
    genes = read_genes(gtf, gtf_contigs) if gtf else []
    predictor = Predictor(checkpoint, overrides=overrides, trust_remote_code=trust_remote_code)
    genome = Genome(fasta)
    todo = resolve_regions(genome, regions, chroms) if (regions or chroms) else test_regions(recipe, genome)
    reader = CoverageReader(observed_list, recipe.data.bigwig_contigs)
    reader.check(genome, sorted({r.chrom for r in todo}), strict=recipe.data.strict_contigs)
    shown = parse_region(plot_region, genome.sizes) if plot_region else None
    if shown and not any(r.chrom == shown.chrom and r.start <= shown.start and shown.end <= r.end for r in todo):
        raise TrackDataError(f"plot region {shown} is not inside the evaluated regions ({', '.join(map(str, todo))})")
    metrics = CoverageMetrics(predictor.tracks, genes, todo, recipe.eval.bin_size)
    mode, batch = stitch_mode or recipe.eval.stitch, batch_size or recipe.eval.batch_size

    def score(region: Region, start: int, pred) -> None:
        obs, n_missing = reader.read(Region(region.chrom, start, start + len(pred)))
        metrics.add(region, start, pred, obs, n_missing)

    write_predictions(predictor, genome, todo, mode, batch, out_dir / "predictions", visit=score, desc="evaluating")

    result = {
        "checkpoint": str(predictor.checkpoint),
        "regions": [str(r) for r in todo],
        "stitch": mode,
        **metrics.result(),
    }
    atomic_write_text(out_dir / "metrics.json", json.dumps(result, indent=2) + "\n")
    shown = shown or auto_plot_region(metrics, todo, genome.sizes)
    predicted = [replace(t, file=str(out_dir / "predictions" / f"{t.name}.bw")) for t in predictor.tracks]
    result["plot"] = str(plot_from_bigwigs(shown, predicted, reader, genes, out_dir / "plot.png"))
    return result


def plot_prediction(
    pred_dir, region: str, out, *, gtf: str | None = None, gtf_contigs: str = "same", observed: str | None = None
) -> Path:
    """``dnallm plot-tracks``: a region of a ``predict-tracks`` output against the observed bigWigs."""
    pred_dir = Path(pred_dir)
    manifest_path = pred_dir / "prediction.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"{pred_dir} holds no prediction.json: pass the --out directory of predict-tracks or <eval out>/predictions"
        )
    manifest = json.loads(manifest_path.read_text())
    predicted = [Track(**{k: v for k, v in t.items() if k != "prediction"}) for t in manifest["tracks"]]
    predicted = [replace(t, file=str(pred_dir / f"{t.name}.bw")) for t in predicted]
    sheet = observed or manifest["observed_tracks"]
    observed_list = observed_tracks(sheet, predicted)
    check_outputs(
        [out], inputs=[manifest_path, manifest["fasta"], gtf, sheet, *(t.file for t in [*predicted, *observed_list])]
    )
    genome = Genome(manifest["fasta"])
    shown = parse_region(region, genome.sizes)
    reader = CoverageReader(observed_list, manifest["bigwig_contigs"])
    genes = read_genes(gtf, gtf_contigs) if gtf else []
    return plot_from_bigwigs(shown, predicted, reader, genes, Path(out))
