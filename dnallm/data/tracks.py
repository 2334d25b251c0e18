"""Coverage tracks: a track sheet naming one bigWig per (cell type, strand), read with pyBigWig.

Track sheet, YAML::

    tracks:
      - {name: B_plus,  file: b_plus.bw,  strand: "+", cell_type: B}
      - {name: B_minus, file: b_minus.bw, strand: "-", cell_type: B}

or TSV with a header line ``name  file  strand  cell_type  [scale]``. Relative paths are
relative to the sheet. ``strand`` is ``+``, ``-`` or ``.`` (unstranded); ``scale``
(default 1) multiplies the raw values before the target transform.
"""

from __future__ import annotations

import csv
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml

from dnallm.data.dna import rename_contig
from dnallm.data.genome import Genome, Region, TrackDataError, names_preview, suggest_rule

STRANDS = ("+", "-", ".")
_COLUMNS = ("name", "file", "strand", "cell_type")


@dataclass(frozen=True)
class Track:
    name: str
    file: str
    strand: str
    cell_type: str
    scale: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)


def _track(row: dict, where: str, base: Path) -> Track:
    missing = [c for c in _COLUMNS if not str(row.get(c) or "").strip()]
    if missing:
        raise TrackDataError(f"{where}: missing {', '.join(missing)} (each track needs {', '.join(_COLUMNS)})")
    strand = str(row["strand"]).strip()
    if strand not in STRANDS:
        raise TrackDataError(f"{where}: strand {strand!r} is not one of + - .")
    try:
        scale = float(row.get("scale") or 1.0)
    except ValueError:
        raise TrackDataError(f"{where}: scale {row['scale']!r} is not a number") from None
    if scale <= 0:
        raise TrackDataError(f"{where}: scale must be positive, got {scale}")
    file = Path(str(row["file"]).strip())
    return Track(
        str(row["name"]).strip(),
        str(file if file.is_absolute() else base / file),
        strand,
        str(row["cell_type"]).strip(),
        scale,
    )


def read_track_sheet(path: str | Path) -> list[Track]:
    path = Path(path)
    if not path.is_file():
        raise TrackDataError(f"track sheet not found: {path}")
    if path.suffix in (".yaml", ".yml"):
        tree = yaml.safe_load(path.read_text()) or {}
        rows = tree.get("tracks") if isinstance(tree, dict) else tree
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise TrackDataError(
                f"{path}: expected a list of tracks (or 'tracks:' holding one), each a mapping of {', '.join(_COLUMNS)}"
            )
        where = [f"{path}: track {i + 1}" for i in range(len(rows))]
    else:
        with path.open(newline="") as f:
            rows = list(
                csv.DictReader((line for line in f if line.strip() and not line.startswith("#")), delimiter="\t")
            )
        where = [f"{path}: row {i + 2}" for i in range(len(rows))]
    tracks = [_track(r, w, path.parent) for r, w in zip(rows, where)]
    if not tracks:
        raise TrackDataError(f"{path}: no tracks listed")
    names = [t.name for t in tracks]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise TrackDataError(f"{path}: track names must be unique, repeated: {', '.join(dupes)}")
    for t, w in zip(tracks, where):
        if not Path(t.file).is_file():
            raise TrackDataError(f"{w} ({t.name}): bigWig not found: {t.file}")
    return tracks


def strand_partners(tracks: list[Track]) -> list[int]:
    """For each track, the index of the track it becomes on the reverse complement.

    ``+`` and ``-`` tracks of one cell type swap; unstranded tracks stay.
    """
    index = {(t.cell_type, t.strand): i for i, t in enumerate(tracks)}
    partners = []
    for i, t in enumerate(tracks):
        if t.strand == ".":
            partners.append(i)
            continue
        other = index.get((t.cell_type, "-" if t.strand == "+" else "+"))
        if other is None:
            raise TrackDataError(
                f"track '{t.name}' (cell type {t.cell_type}, strand {t.strand}) has no opposite-strand "
                f"track of the same cell type; reverse-complement augmentation needs both (or data.rc_augment=false)"
            )
        partners.append(other)
    return partners


class CoverageReader:
    """Per-base values of every track over a region: ``read(region) -> (values, n_missing)``.

    ``values`` is ``(length, n_tracks)`` float32. Bases without a value (not covered, or
    NaN in the file) read as 0 and are counted in ``n_missing`` ``(n_tracks,)``.
    Negative values are an error. Files open lazily, again in each process.
    """

    def __init__(self, tracks: list[Track], contig_rule: str = "same"):
        self.tracks = tracks
        self.contig_rule = contig_rule
        rename_contig("chr1", contig_rule)  # fail now on an unknown rule
        self._handles, self._pid = None, None

    def __getstate__(self):
        return {"tracks": self.tracks, "contig_rule": self.contig_rule, "_handles": None, "_pid": None}

    def _open(self) -> list:
        if self._handles is None or self._pid != os.getpid():
            import pyBigWig

            handles = []
            for t in self.tracks:
                bw = pyBigWig.open(t.file)
                if bw is None or not bw.isBigWig():
                    raise TrackDataError(f"track '{t.name}': {t.file} is not a readable bigWig")
                handles.append(bw)
            self._handles, self._pid = handles, os.getpid()
        return self._handles

    def contigs(self, i: int) -> dict[str, int]:
        return self._open()[i].chroms()

    def read(self, region: Region) -> tuple[np.ndarray, np.ndarray]:
        chrom = rename_contig(region.chrom, self.contig_rule)
        values = np.empty((len(region), len(self.tracks)), dtype=np.float32)
        for i, (t, bw) in enumerate(zip(self.tracks, self._open())):
            try:
                column = bw.values(chrom, region.start, region.end, numpy=True)
                values[:, i] = column if len(column) else np.nan  # a file with no data at all reads as empty
            except RuntimeError:
                size = bw.chroms().get(chrom)
                where = f"length {size:,}" if size else f"contigs: {names_preview(bw.chroms())}"
                raise TrackDataError(
                    f"track '{t.name}': cannot read {region} from {t.file} ({chrom}: {where})"
                ) from None
        missing = np.isnan(values)
        values[missing] = 0.0
        negative = values < 0
        if negative.any():
            pos, i = np.argwhere(negative)[0]
            t = self.tracks[i]
            raise TrackDataError(
                f"track '{t.name}' ({t.file}) has negative coverage {values[pos, i]:g} at {chrom}:{region.start + pos + 1}; "
                f"coverage must be >= 0"
            )
        return values, missing.sum(axis=0)

    def check(self, genome: Genome, chroms: list[str], strict: bool = True) -> None:
        """Every chosen chromosome in every bigWig with the FASTA's length; no negative values.

        ``strict``: also every bigWig contig in the FASTA (a bigWig of another assembly).
        """
        unknown = [c for c in chroms if c not in genome.sizes]
        if unknown:
            raise TrackDataError(
                f"chromosomes {names_preview(unknown)} are not in {genome.path} (contigs: {names_preview(genome.sizes)})"
            )
        for i, t in enumerate(self.tracks):
            bw_sizes = self.contigs(i)
            fasta_to_bw = {c: rename_contig(c, self.contig_rule) for c in genome.sizes}
            absent = [c for c in chroms if fasta_to_bw[c] not in bw_sizes]
            bw_to_fasta = {b: c for c, b in fasta_to_bw.items()}
            extra = [b for b in bw_sizes if b not in bw_to_fasta] if strict else []
            if absent or extra:
                raise TrackDataError(self._mismatch(t, genome, bw_sizes, absent, extra))
            for c in chroms:
                if bw_sizes[fasta_to_bw[c]] != genome.sizes[c]:
                    raise TrackDataError(
                        f"track '{t.name}': {fasta_to_bw[c]} is {bw_sizes[fasta_to_bw[c]]:,} bp in {t.file} but "
                        f"{c} is {genome.sizes[c]:,} bp in {genome.path}; are they the same assembly?"
                    )
            self._check_nonnegative(i, [fasta_to_bw[c] for c in chroms])

    def _mismatch(self, t: Track, genome: Genome, bw_sizes: dict, absent: list, extra: list) -> str:
        parts = []
        if absent:
            parts.append(f"contigs absent from the bigWig: {names_preview(absent)}")
        if extra:
            parts.append(f"bigWig contigs absent from the FASTA: {names_preview(extra)}")
        msg = (
            f"track '{t.name}': contig names of {t.file} and {genome.path} do not match ({'; '.join(parts)}).\n"
            f"  FASTA:  {names_preview(genome.sizes)}\n  bigWig: {names_preview(bw_sizes)}"
        )
        rule = suggest_rule(genome.sizes, bw_sizes)
        if rule and rule != self.contig_rule:
            msg += f"\n  the names differ by a 'chr' prefix: set data.bigwig_contigs={rule}"
        elif extra and not absent:
            msg += "\n  if the extra contigs are expected, set data.strict_contigs=false"
        return msg

    def _check_nonnegative(self, i: int, bw_chroms: list[str]) -> None:
        bw, t = self._open()[i], self.tracks[i]
        for chrom in bw_chroms:
            low = bw.stats(chrom, type="min")[0]  # from the zoom levels: cheap
            if low is not None and low < 0:
                start, _, value = next(iv for iv in bw.intervals(chrom) if iv[2] < 0)
                raise TrackDataError(
                    f"track '{t.name}' ({t.file}) has negative coverage {value:g} at {chrom}:{start + 1}; coverage must be >= 0"
                )
