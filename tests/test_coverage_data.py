"""Coverage data: genome + bigWig checks, windows and splits, target transform, streaming dataset."""

from pathlib import Path

import numpy as np
import pyBigWig
import pytest
import torch
import yaml

from dnallm.data.bigwig_writer import BigWigWriter
from dnallm.data.coverage import CoverageWindows, base_lookup, hf_dataset
from dnallm.data.gene_models import read_genes
from dnallm.data.genome import Genome, Region, TrackDataError, reverse_complement
from dnallm.data.synthetic_tracks import write_synthetic_tracks
from dnallm.data.tracks import CoverageReader, read_track_sheet, strand_partners
from dnallm.data.transform import TargetTransform
from dnallm.data.regions import n_fractions, parse_region, read_bed, split_windows, tile

LOOKUP = base_lookup({"A": 5, "C": 6, "G": 7, "T": 8, "N": 9})


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> dict[str, Path]:
    return write_synthetic_tracks(tmp_path_factory.mktemp("syn"), n_chroms=3, chrom_length=12_000, seed=1)


def write_fasta(path: Path, contigs: dict[str, str]) -> Path:
    path.write_text("".join(f">{name}\n{seq}\n" for name, seq in contigs.items()))
    return path


def write_bigwig(path: Path, sizes: dict[str, int], entries: dict[str, tuple[int, list[float]]]) -> Path:
    bw = pyBigWig.open(str(path), "w")
    bw.addHeader(list(sizes.items()))
    for chrom, (start, values) in entries.items():
        bw.addEntries(chrom, start, values=np.array(values, dtype=np.float64), span=1, step=1)
    bw.close()
    return path


def sheet(path: Path, files: dict[str, Path]) -> Path:
    rows = [{"name": n, "file": str(f), "strand": "+", "cell_type": n} for n, f in files.items()]
    path.write_text(yaml.safe_dump({"tracks": rows}))
    return path


# ---- track sheet -------------------------------------------------------------------------


def test_track_sheet_yaml_and_tsv_agree(synthetic, tmp_path):
    tracks = read_track_sheet(synthetic["tracks"])
    assert [t.name for t in tracks] == ["B_plus", "B_minus", "NK_plus", "NK_minus"]
    assert all(Path(t.file).is_file() for t in tracks)
    tsv = synthetic["dir"] / "tracks.tsv"
    tsv.write_text(
        "name\tfile\tstrand\tcell_type\tscale\n"
        + "".join(f"{t.name}\t{Path(t.file).name}\t{t.strand}\t{t.cell_type}\t2\n" for t in tracks)
    )
    from_tsv = read_track_sheet(tsv)
    assert [(t.name, t.file, t.strand) for t in from_tsv] == [(t.name, t.file, t.strand) for t in tracks]
    assert all(t.scale == 2.0 for t in from_tsv)
    assert strand_partners(tracks) == [1, 0, 3, 2]


@pytest.mark.parametrize(
    "row, message",
    [
        ({"name": "x", "file": "B_plus.bw", "strand": "*", "cell_type": "B"}, "strand '*'"),
        ({"name": "x", "file": "B_plus.bw", "strand": "+"}, "missing cell_type"),
        ({"name": "x", "file": "nope.bw", "strand": "+", "cell_type": "B"}, "bigWig not found"),
    ],
)
def test_track_sheet_errors_name_the_track(synthetic, row, message):
    path = synthetic["dir"] / "bad.yaml"
    path.write_text(yaml.safe_dump({"tracks": [row]}))
    with pytest.raises(TrackDataError, match="track 1") as err:
        read_track_sheet(path)
    assert message in str(err.value)


def test_rc_augmentation_needs_both_strands(synthetic):
    tracks = read_track_sheet(synthetic["tracks"])[:1]
    with pytest.raises(TrackDataError, match="'B_plus'.*no opposite-strand"):
        strand_partners(tracks)


# ---- genome against bigWigs ------------------------------------------------------------------


def test_chr_naming_mismatch_needs_the_explicit_option(tmp_path):
    paths = write_synthetic_tracks(tmp_path, n_chroms=2, chrom_length=3000, bigwig_contigs="strip_chr")
    genome, tracks = Genome(paths["fasta"]), read_track_sheet(paths["tracks"])
    with pytest.raises(TrackDataError) as err:
        CoverageReader(tracks, "same").check(genome, ["chr1", "chr2"])
    message = str(err.value)
    assert "FASTA:  chr1, chr2" in message and "bigWig: 1, 2" in message
    assert "data.bigwig_contigs=strip_chr" in message
    reader = CoverageReader(tracks, "strip_chr")
    reader.check(genome, ["chr1", "chr2"])
    values, _ = reader.read(Region("chr1", 0, 3000))
    assert values.shape == (3000, 4) and values.sum() > 0


def test_contig_absent_either_way_lists_both_names(tmp_path):
    fasta = write_fasta(tmp_path / "g.fa", {"chr1": "ACGT" * 50, "chr2": "ACGT" * 50})
    extra = write_bigwig(tmp_path / "extra.bw", {"chr1": 200, "chr2": 200, "chrEBV": 100}, {"chr1": (0, [1.0])})
    genome = Genome(fasta)
    reader = CoverageReader(read_track_sheet(sheet(tmp_path / "s.yaml", {"t": extra})))
    with pytest.raises(
        TrackDataError,
        match=r"bigWig contigs absent from the FASTA: chrEBV(.|\n)*FASTA:  chr1, chr2(.|\n)*bigWig: chr1, chr2, chrEBV",
    ):
        reader.check(genome, ["chr1"])
    reader.check(genome, ["chr1"], strict=False)  # extra contigs allowed on request
    short = write_bigwig(tmp_path / "short.bw", {"chr1": 200}, {"chr1": (0, [1.0])})
    reader = CoverageReader(read_track_sheet(sheet(tmp_path / "s2.yaml", {"t": short})))
    with pytest.raises(TrackDataError, match="contigs absent from the bigWig: chr2"):
        reader.check(genome, ["chr1", "chr2"])


def test_length_mismatch_is_another_assembly(tmp_path):
    fasta = write_fasta(tmp_path / "g.fa", {"chr1": "ACGT" * 50})
    bw = write_bigwig(tmp_path / "t.bw", {"chr1": 250}, {"chr1": (0, [1.0])})
    reader = CoverageReader(read_track_sheet(sheet(tmp_path / "s.yaml", {"t": bw})))
    with pytest.raises(TrackDataError, match="chr1 is 250 bp in .*t.bw but chr1 is 200 bp"):
        reader.check(Genome(fasta), ["chr1"])


def test_nan_and_missing_read_as_zero_and_are_counted(tmp_path):
    bw = write_bigwig(tmp_path / "t.bw", {"chr1": 100}, {"chr1": (10, [1.0, 2.0, np.nan, 4.0])})
    reader = CoverageReader(read_track_sheet(sheet(tmp_path / "s.yaml", {"t": bw})))
    values, missing = reader.read(Region("chr1", 8, 16))
    assert values[:, 0].tolist() == [0, 0, 1, 2, 0, 4, 0, 0]
    assert missing.tolist() == [5]  # 4 uncovered bases + 1 NaN


def test_negative_coverage_is_rejected_with_its_position(tmp_path):
    fasta = write_fasta(tmp_path / "g.fa", {"chr1": "A" * 100})
    bw = write_bigwig(tmp_path / "neg.bw", {"chr1": 100}, {"chr1": (40, [1.0, -0.5])})
    reader = CoverageReader(read_track_sheet(sheet(tmp_path / "s.yaml", {"t": bw})))
    with pytest.raises(TrackDataError, match=r"'t' \(.*neg.bw\) has negative coverage -0.5 at chr1:42"):
        reader.check(Genome(fasta), ["chr1"])
    with pytest.raises(TrackDataError, match="negative coverage -0.5 at chr1:42"):
        reader.read(Region("chr1", 0, 100))


# ---- regions and windows ---------------------------------------------------------------------


def test_regions_past_the_chromosome_end_are_errors(tmp_path):
    sizes = {"chr1": 1000}
    assert parse_region("chr1:1-1,000", sizes) == Region("chr1", 0, 1000)
    with pytest.raises(TrackDataError, match="runs past the end of chr1 \\(length 1,000\\)"):
        parse_region("chr1:900-1001", sizes)
    with pytest.raises(TrackDataError, match="contig 'chr9' is not in the genome"):
        parse_region("chr9:1-10", sizes)
    bed = tmp_path / "r.bed"
    bed.write_text("chr1\t0\t100\nchr1\t950\t1200\n")
    with pytest.raises(TrackDataError, match=r"r.bed:2: chr1:951-1200 runs past the end of chr1"):
        read_bed(bed, sizes)
    genome = Genome(write_fasta(tmp_path / "g.fa", {"chr1": "ACGT" * 250}))
    with pytest.raises(TrackDataError, match="runs past the end of chr1"):
        genome.codes(Region("chr1", 990, 1010))


def test_tiles_cover_the_region_and_stay_inside():
    windows = tile(Region("c", 100, 1100), 300, 150)
    assert windows[0].start == 100 and windows[-1].end == 1100
    assert all(len(w) == 300 and 100 <= w.start and w.end <= 1100 for w in windows)
    assert all(b.start - a.start <= 150 for a, b in zip(windows, windows[1:]))
    assert tile(Region("c", 0, 200), 300, 150) == [Region("c", 0, 200)]


def test_split_holds_out_chromosomes_and_regions():
    sizes = {"chr1": 10_000, "chr2": 10_000, "chr3": 10_000}
    held = Region("chr1", 4000, 4500)
    splits = split_windows(
        sizes, chroms=["chr1", "chr2"], window=1000, stride=500, val_chroms=["chr3"], test_regions=[held]
    )
    assert not any(w.overlaps(held) for w in splits["train"])
    assert {w.chrom for w in splits["train"]} == {"chr1", "chr2"}
    assert {w.chrom for w in splits["val"]} == {"chr3"}
    assert len(splits["test"]) == 1 and len(splits["test"][0]) == 1000 and splits["test"][0].start <= held.start
    with pytest.raises(TrackDataError, match="both validation and test"):
        split_windows(sizes, chroms=["chr1"], window=1000, stride=500, val_chroms=["chr2"], test_chroms=["chr2"])


def test_no_training_window_shares_a_base_with_a_widened_held_out_window():
    sizes = {"chr1": 10_000}
    short_val, short_test = Region("chr1", 4000, 4500), Region("chr1", 7100, 7200)  # shorter than the window
    splits = split_windows(
        sizes, chroms=["chr1"], window=1000, stride=500, val_regions=[short_val], test_regions=[short_test]
    )
    held = splits["val"] + splits["test"]
    assert [len(w) for w in held] == [1000, 1000] and held[0].start < short_val.start
    leaks = [(t, h) for t in splits["train"] for h in held if t.overlaps(h)]
    assert not leaks
    assert splits["train"]  # the rest of the chromosome still trains


def test_n_fraction_matches_a_direct_count(synthetic):
    genome = Genome(synthetic["fasta"])
    windows = [w for c in genome.sizes for w in tile(Region(c, 0, genome.sizes[c]), 1024, 512)] + [
        Region("chr2", 5999, 7001)
    ]
    fast = n_fractions(genome, windows, block=512, show_progress=False)
    direct = [(genome.codes(w) == ord("N")).mean() for w in windows]
    np.testing.assert_allclose(fast, direct)
    assert fast[0] > 0.9  # chr1 starts with a run of N


# ---- target transform --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "power, clip, scales", [(0.75, 384.0, ()), (0.5, 6.0, (1.0, 0.3)), (1.0, 0.0, ()), (2.0, 10.0, (2.0, 1.0))]
)
def test_transform_and_inverse_are_identities(power, clip, scales):
    transform = TargetTransform(power, clip, scales)
    x = torch.cat([torch.zeros(1, 2), torch.logspace(-4, 6, 2000, dtype=torch.float64).reshape(-1, 2)])
    np.testing.assert_allclose(transform.inverse(transform.forward(x)), x, rtol=1e-9, atol=1e-12)
    y = transform.forward(x)
    np.testing.assert_allclose(transform.forward(transform.inverse(y)), y, rtol=1e-9, atol=1e-12)
    assert (y.diff(dim=0) >= 0).all()  # monotone: ranks, and so correlations' meaning, survive
    if clip:
        assert y.max() < clip + (x.max() * max(scales or (1,))) ** (power / 2) + 1


def test_soft_clip_compresses_above_the_threshold():
    transform = TargetTransform(power=1.0, clip=10.0)
    assert transform.forward(torch.tensor([4.0, 10.0, 14.0, 110.0])).tolist() == [4.0, 10.0, 12.0, 20.0]


# ---- streaming dataset -------------------------------------------------------------------------


def make_dataset(synthetic, windows, **kw) -> CoverageWindows:
    tracks = read_track_sheet(synthetic["tracks"])
    return CoverageWindows(
        Genome(synthetic["fasta"]),
        CoverageReader(tracks),
        windows,
        LOOKUP,
        TargetTransform(0.5, 6.0),
        partners=strand_partners(tracks),
        **kw,
    )


def test_reverse_complement_swaps_strand_tracks(synthetic):
    windows = tile(Region("chr3", 0, 12_000), 512, 256)
    plain = make_dataset(synthetic, windows, batch_size=1)
    augmented = make_dataset(synthetic, windows, batch_size=1, rc_augment=True, seed=3)
    flipped = 0
    for i in range(len(windows)):
        a, b = plain.example(i), augmented.example(i)
        if np.array_equal(a["codes"], b["codes"]):
            continue
        flipped += 1
        assert np.array_equal(b["codes"], reverse_complement(a["codes"]))
        assert np.array_equal(b["values"], a["values"][::-1][:, [1, 0, 3, 2]])
    assert 0.25 * len(windows) < flipped < 0.75 * len(windows)


def test_batches_split_across_ranks_and_resume_by_skipping(synthetic):
    windows = tile(Region("chr3", 0, 12_000), 512, 256)
    ranks = [
        make_dataset(synthetic, windows, batch_size=4, shuffle=True, seed=1, rank=r, world_size=2, drop_last=True)
        for r in (0, 1)
    ]
    seen = [[tuple(b["input_ids"][:, 0].tolist()) for b in ds] for ds in ranks]
    assert len(seen[0]) == len(seen[1]) == len(ranks[0]) == len(windows) // 8
    batches = list(ranks[0])
    assert batches[0]["input_ids"].shape == (4, 512) and batches[0]["targets"].shape == (4, 512, 4)
    ranks[0].set_epoch(0, skip=2)
    resumed = list(ranks[0])
    assert all(torch.equal(a["targets"], b["targets"]) for a, b in zip(batches[2:], resumed))
    ranks[0].set_epoch(1)
    assert not torch.equal(next(iter(ranks[0]))["input_ids"], batches[0]["input_ids"])  # a new order each epoch
    loader = torch.utils.data.DataLoader(ranks[0], batch_size=None, num_workers=2)
    ranks[0].set_epoch(0)
    assert all(torch.equal(a["targets"], b["targets"]) for a, b in zip(batches, loader))  # workers keep the order


def test_targets_are_the_transformed_bigwig_values(synthetic):
    windows = [Region("chr3", 2000, 2512)]
    batch = next(iter(make_dataset(synthetic, windows, batch_size=1)))
    values, _ = CoverageReader(read_track_sheet(synthetic["tracks"])).read(windows[0])
    np.testing.assert_allclose(TargetTransform(0.5, 6.0).inverse(batch["targets"][0]), values, rtol=1e-5, atol=1e-5)
    assert batch["input_ids"].min() >= 5


def test_hf_iterable_dataset_streams_raw_windows(synthetic):
    genome, tracks = Genome(synthetic["fasta"]), read_track_sheet(synthetic["tracks"])
    windows = tile(Region("chr3", 0, 4096), 1024, 1024)
    ds = hf_dataset(genome, CoverageReader(tracks), windows)
    assert ds.num_shards == 4
    rows = list(ds)
    assert len(rows) == 4 and {len(r["sequence"]) for r in rows} == {1024}
    assert np.asarray(rows[0]["coverage"]).shape == (1024, 4)


# ---- gene models -------------------------------------------------------------------------------


def test_gtf_and_gff3_give_the_same_genes(tmp_path):
    gtf = tmp_path / "g.gtf"
    gtf.write_text(
        'chr1\tx\texon\t101\t200\t.\t+\t.\tgene_id "G1"; transcript_id "T1"; gene_name "ONE";\n'
        'chr1\tx\texon\t151\t300\t.\t+\t.\tgene_id "G1"; transcript_id "T2"; gene_name "ONE";\n'
        'chr1\tx\texon\t501\t600\t.\t-\t.\tgene_id "G2"; transcript_id "T3"; gene_name "TWO";\n'
    )
    gff = tmp_path / "g.gff3"
    gff.write_text(
        "##gff-version 3\n"
        "1\tx\tgene\t101\t300\t.\t+\t.\tID=G1;Name=ONE\n"
        "1\tx\tmRNA\t101\t300\t.\t+\t.\tID=T1;Parent=G1\n"
        "1\tx\texon\t101\t200\t.\t+\t.\tParent=T1\n"
        "1\tx\texon\t151\t300\t.\t+\t.\tParent=T1\n"
        "1\tx\tgene\t501\t600\t.\t-\t.\tID=G2;Name=TWO\n"
        "1\tx\ttranscript\t501\t600\t.\t-\t.\tID=T3;Parent=G2\n"
        "1\tx\texon\t501\t600\t.\t-\t.\tParent=T3\n"
    )
    from_gtf = read_genes(gtf)
    from_gff = read_genes(gff, contig_rule="strip_chr")
    summary = [(g.name, g.chrom, g.strand, g.exons) for g in from_gtf]
    assert summary == [("ONE", "chr1", "+", [(100, 300)]), ("TWO", "chr1", "-", [(500, 600)])]
    assert [(g.name, g.chrom, g.strand, g.exons) for g in from_gff] == summary
    bad = tmp_path / "bad.gtf"
    bad.write_text("chr1\tx\texon\t1\n")
    with pytest.raises(TrackDataError, match="bad.gtf:1: expected 9 tab-separated columns"):
        read_genes(bad)


def test_bigwig_writer_publishes_only_complete_files(tmp_path):
    path = tmp_path / "p.bw"
    with pytest.raises(TrackDataError, match="not finite"):
        with BigWigWriter(path, {"chr1": 100}) as writer:
            writer.add("chr1", 0, np.array([1.0, np.nan]))
    assert not path.exists() and not list(tmp_path.iterdir())
    with BigWigWriter(path, {"chr1": 100}) as writer:
        writer.add("chr1", 0, np.arange(100, dtype=np.float32))
    assert pyBigWig.open(str(path)).values("chr1", 0, 100) == list(range(100))
