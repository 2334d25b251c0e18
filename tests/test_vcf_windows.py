"""``dnallm windows``: VCF + FASTA -> KEGG-format JSONL, with every bad input named."""

from __future__ import annotations

import csv
import gzip
import json
import random
import re

import pysam
import pytest
from vcf_data import cases, other_base, reference_sequences, renamed, write_fasta, write_vcf

from dnallm.cli import main
from dnallm.data.dna import centre_window, check_pair
from dnallm.data.kegg import load_examples, read_jsonl
from dnallm.data.vcf import InputError, VariantReader, open_fasta
from dnallm.data.vcf_to_kegg import vcf_to_kegg
from dnallm.data.windows import WindowOptions, allele_pair

FLANK = 20


@pytest.fixture
def genome(tmp_path):
    seqs = reference_sequences()
    return seqs, write_fasta(tmp_path / "ref.fa", seqs)


def by_id(path) -> dict[str, dict]:
    return {r["id"] + f"/{r['alt']}": r for r in read_jsonl(path)}


def skipped_rows(path) -> dict[str, dict]:
    with open(path) as f:
        return {f"{r['id']}/{r['alt']}": r for r in csv.DictReader(f, delimiter="\t")}


def run_windows(genome, tmp_path, rows=None, **kwargs):
    seqs, fasta = genome
    vcf = write_vcf(tmp_path / "in.vcf", rows if rows is not None else list(cases(seqs).values()))
    kwargs.setdefault("opts", WindowOptions(flank=FLANK, max_n_fraction=0.5))
    summary = vcf_to_kegg(vcf, fasta, tmp_path / "out.jsonl", **kwargs)
    return summary, tmp_path / "out.jsonl"


def test_snv_insertion_deletion_and_multiallelic_windows(genome, tmp_path):
    seqs, _ = genome
    c1, f = seqs["chr1"], FLANK
    summary, out = run_windows(genome, tmp_path)
    got = by_id(out)

    # SNV at 50: 20 bp + allele + 20 bp, both 41 bp.
    snv = got[f"v_snv/{cases(seqs)['snv'][4][0]}"]
    assert snv["reference_sequence"] == c1[29:70]
    assert snv["variant_sequence"] == c1[29:49] + snv["alt"] + c1[50:70]
    # Insertion after the anchor base at 80: the reference allele is empty.
    ins = got["v_ins/" + c1[79] + "TTG"]
    assert ins["reference_sequence"] == c1[80 - f : 80 + f]
    assert ins["variant_sequence"] == c1[80 - f : 80] + "TTG" + c1[80 : 80 + f]
    # Deletion of the 3 bases after the anchor at 120: the variant allele is empty.
    dele = got["v_del/" + c1[119]]
    assert dele["reference_sequence"] == c1[120 - f : 123 + f]
    assert dele["variant_sequence"] == c1[120 - f : 120] + c1[123 : 123 + f]
    # Multi-allelic: one record per sequence ALT; the SNV spelled with context is trimmed to the SNV.
    multi_del = got["v_multi/" + c1[159]]
    assert multi_del["variant_sequence"] == c1[160 - f : 160] + c1[161 : 161 + f]
    multi_snv = next(r for k, r in got.items() if k.startswith("v_multi/") and len(r["alt"]) == 2)
    assert multi_snv["reference_sequence"] == c1[160 - f : 161 + f]
    assert multi_snv["variant_sequence"] == c1[160 - f : 160] + multi_snv["alt"][1] + c1[161 : 161 + f]
    assert (multi_snv["record"], multi_del["record"]) == (5, 5)
    assert {multi_del["alt_index"], multi_snv["alt_index"]} == {1, 2}

    # The file loads with the KEGG loader, which checks every pair shares its flanks;
    # an SNV's windows differ in their middle base only.
    examples = load_examples(out, dna_window=17)
    assert len(examples) == summary["written"] == len(got)
    for rec in got.values():
        check_pair(rec["reference_sequence"], rec["variant_sequence"], where=rec["variant_id"])
    snv_row = next(r for r in examples if r["ref_window"] == c1[41:58])
    assert [i for i in range(17) if snv_row["ref_window"][i] != snv_row["var_window"][i]] == [8]
    assert all(r["answer"] == "unknown" and r["question"].startswith("Chromosome Number: ") for r in got.values())
    assert all(set(r["reference_sequence"]) <= set("ACGTN") for r in got.values())  # soft-masking upper-cased


def test_every_skipped_allele_is_counted_and_reported(genome, tmp_path):
    seqs, _ = genome
    summary, out = run_windows(genome, tmp_path)
    skipped = skipped_rows(tmp_path / "out.skipped.tsv")
    assert summary["skipped"] == {
        "breakend": 1,
        "missing_contig": 1,
        "n_rich": 1,
        "no_alt": 1,
        "ref_mismatch": 1,
        "symbolic": 2,
    }
    assert summary["alleles"] == summary["written"] + sum(summary["skipped"].values())
    bad = skipped[f"v_bad_ref/{cases(seqs)['ref_mismatch'][4][0]}"]
    assert bad["reason"] == "ref_mismatch"
    assert bad["detail"] == f"VCF REF {cases(seqs)['ref_mismatch'][3]!r}, FASTA {seqs['chr1'][199]!r} at chr1:200"
    assert skipped["v_multi/<DEL>"]["reason"] == "symbolic"
    assert skipped["v_star/*"]["reason"] == "symbolic"
    assert skipped["v_bnd/" + cases(seqs)["breakend"][4][0]]["reason"] == "breakend"
    assert skipped["v_noalt/."]["reason"] == "no_alt"
    assert skipped["v_chr9/G"]["reason"] == "missing_contig"
    assert skipped["v_nrich/" + cases(seqs)["n_rich"][4][0]]["detail"].startswith("93% N")


def test_chromosome_ends_are_padded_with_n_and_flagged_or_skipped(genome, tmp_path):
    seqs, _ = genome
    _, out = run_windows(genome, tmp_path, opts=WindowOptions(flank=FLANK, max_n_fraction=1.0))
    got = by_id(out)
    start = got["v_start/" + cases(seqs)["near_start"][4][0]]  # pos 3: 18 bases missing on the left
    assert start["padded_bases"] == 18
    assert start["reference_sequence"] == "N" * 18 + seqs["chr1"][:23]
    end = got["v_end/" + cases(seqs)["near_end"][4][0]]  # pos 298 of 300: 18 missing on the right
    assert end["padded_bases"] == 18
    assert end["reference_sequence"] == seqs["chr2"][277:] + "N" * 18
    assert got[f"v_snv/{cases(seqs)['snv'][4][0]}"]["padded_bases"] == 0

    summary, _ = run_windows(genome, tmp_path, opts=WindowOptions(flank=FLANK, max_n_fraction=1.0, edge="skip"))
    assert summary["skipped"]["chromosome_end"] == 2


def test_cropped_pairs_are_what_the_loader_cuts(genome, tmp_path):
    """``crop`` (annotate's windows) equals the KEGG loader's centre_window of the flank layout."""
    seqs, fasta_path = genome
    _, out = run_windows(genome, tmp_path, opts=WindowOptions(flank=FLANK, max_n_fraction=1.0))
    fasta = open_fasta(fasta_path)
    reader = VariantReader(tmp_path / "in.vcf", fasta, fasta_path)
    uncropped = by_id(out)
    cropped = {f"{a.id}/{a.alt}": allele_pair(fasta, a, WindowOptions(crop=21)) for a in reader if not a.skip}
    assert len(cropped) == len(uncropped) == 9
    for key, pair in cropped.items():
        rec = uncropped[key]
        assert pair.reference == centre_window(rec["reference_sequence"], 21, where=key, field="ref")
        assert pair.variant == centre_window(rec["variant_sequence"], 21, where=key, field="var")
    assert cropped["v_start/" + cases(seqs)["near_start"][4][0]].padded == 8  # pos 3: 10 left of it, 2 real
    with pytest.raises(ValueError, match="uncropped"):
        run_windows(genome, tmp_path, opts=WindowOptions(crop=21))


def test_alleles_longer_than_both_flanks_are_skipped(genome, tmp_path):
    seqs, _ = genome
    ref = seqs["chr1"][299:307]
    mnv = ("chr1", 300, "v_mnv", ref, ["".join(other_base(b) for b in ref)])  # 8 bp replaced
    summary, _ = run_windows(genome, tmp_path, rows=[mnv, cases(seqs)["snv"]], opts=WindowOptions(flank=2))
    assert summary["skipped"] == {"allele_too_long": 1}
    assert summary["written"] == 1


def test_strict_fails_on_ref_mismatch_naming_the_record(genome, tmp_path):
    seqs, _ = genome
    with pytest.raises(InputError, match=r"record 6 \(chr1:200\): REF does not match .*ref\.fa: VCF REF") as e:
        run_windows(genome, tmp_path, strict=True)
    assert repr(seqs["chr1"][199]) in str(e.value)
    assert not (tmp_path / "out.jsonl").exists()  # nothing half-written


def test_strict_fails_on_missing_contig(genome, tmp_path):
    seqs, _ = genome
    rows = [r for name, r in cases(seqs).items() if name != "ref_mismatch"]
    with pytest.raises(
        InputError, match=r"record 11 \(chr9:10\): contig 'chr9' not in .*ref\.fa \(its contigs: chr1, chr2, chrM\)"
    ):
        run_windows(genome, tmp_path, rows=rows, strict=True)


def test_chromosome_naming_is_an_explicit_choice(genome, tmp_path):
    seqs, _ = genome
    ensembl = renamed(list(cases(seqs).values()), {"chr1": "1", "chr2": "2", "chrM": "MT", "chr9": "9"})
    with pytest.raises(
        InputError,
        match=r"record 1 \(1:3\): contig '1' is not in .*ref\.fa, which names it 'chr1'; .*--contig-names add_chr",
    ):
        run_windows(genome, tmp_path, rows=ensembl)
    summary, out = run_windows(genome, tmp_path, rows=ensembl, contig_names="add_chr")
    got = by_id(out)
    assert got["v_mt/" + cases(seqs)["mito"][4][0]]["chrom"] == "MT"  # MT -> chrM
    assert summary["skipped"]["missing_contig"] == 1  # 9 -> chr9, absent from the FASTA

    mapping = tmp_path / "names.tsv"
    mapping.write_text("# VCF\tFASTA\n1\tchr1\n2\tchr2\nMT\tchrM\n")
    mapped, _ = run_windows(genome, tmp_path, rows=ensembl, contig_names=str(mapping))
    assert mapped["written"] == summary["written"]


def test_no_contig_in_common_is_an_error(genome, tmp_path):
    rows = [("scaffold_1", 5, "s1", "A", ["G"]), ("scaffold_2", 5, "s2", "C", ["T"])]
    with pytest.raises(
        InputError,
        match=r"none of the contigs of .*in\.vcf \(scaffold_1, scaffold_2\) is in .*ref\.fa \(chr1, chr2, chrM\)",
    ):
        run_windows(genome, tmp_path, rows=rows)


def test_unsorted_bgzipped_vcf_is_read_and_reported(genome, tmp_path):
    seqs, fasta = genome
    rows = list(cases(seqs).values())
    random.Random(1).shuffle(rows)
    vcf = write_vcf(tmp_path / "shuffled.vcf.gz", rows, bgzip=True)
    summary = vcf_to_kegg(vcf, fasta, tmp_path / "out.jsonl", opts=WindowOptions(flank=FLANK, max_n_fraction=0.5))
    assert summary["written"] == 8
    assert summary["unsorted"].startswith("record ")


def test_plain_gzip_vcf_and_fasta_are_refused_with_the_fix(genome, tmp_path):
    seqs, fasta = genome
    text_vcf = write_vcf(tmp_path / "in.vcf", list(cases(seqs).values()))
    gz_vcf = tmp_path / "plain.vcf.gz"
    gz_vcf.write_bytes(gzip.compress(text_vcf.read_bytes()))
    with pytest.raises(InputError, match=r"plain\.vcf\.gz is compressed with plain gzip.*bgzip"):
        vcf_to_kegg(gz_vcf, fasta, tmp_path / "out.jsonl")
    gz_fasta = tmp_path / "plain.fa.gz"
    gz_fasta.write_bytes(gzip.compress(fasta.read_bytes()))
    with pytest.raises(InputError, match=r"plain\.fa\.gz is compressed with plain gzip.*bgzip"):
        vcf_to_kegg(text_vcf, gz_fasta, tmp_path / "out.jsonl")


def test_bgzipped_fasta_without_index_is_indexed(genome, tmp_path):
    seqs, fasta = genome
    bgz = tmp_path / "ref.fa.gz"
    pysam.tabix_compress(str(fasta), str(bgz), force=True)
    vcf = write_vcf(tmp_path / "in.vcf", list(cases(seqs).values()))
    summary = vcf_to_kegg(vcf, bgz, tmp_path / "out.jsonl", opts=WindowOptions(flank=FLANK, max_n_fraction=0.5))
    assert summary["written"] == 8
    assert (tmp_path / "ref.fa.gz.fai").is_file() and (tmp_path / "ref.fa.gz.gzi").is_file()


GTF = (
    'chr1\ttest\tgene\t40\t90\t.\t+\t.\tgene_id "G1"; gene_name "GENEA";\n'
    'chr1\ttest\ttranscript\t40\t90\t.\t+\t.\tgene_id "G1"; transcript_id "T1"; gene_name "GENEA";\n'
    'chr1\ttest\tgene\t85\t130\t.\t-\t.\tgene_id "G2"; gene_name "GENEB";\n'
)
GFF3 = (
    "##gff-version 3\n"
    "1\ttest\tgene\t40\t90\t.\t+\t.\tID=gene:G1;Name=GENEA\n"
    "1\ttest\tmRNA\t40\t90\t.\t+\t.\tID=transcript:T1;Parent=gene:G1\n"
    "1\ttest\tncRNA_gene\t85\t130\t.\t-\t.\tID=gene:G2;Name=GENEB\n"
)


@pytest.mark.parametrize("kind", ["gtf", "gff3.gz"])
def test_gene_names_come_from_the_annotation(genome, tmp_path, kind):
    seqs, _ = genome
    path = tmp_path / f"genes.{kind}"
    text = GTF if kind == "gtf" else GFF3  # the GFF3 names chromosomes '1', the FASTA 'chr1'
    path.write_bytes(gzip.compress(text.encode()) if kind.endswith(".gz") else text.encode())
    _, out = run_windows(genome, tmp_path, gtf=path)
    got = by_id(out)
    ins = got["v_ins/" + seqs["chr1"][79] + "TTG"]  # first changed base 81: GENEA only
    assert ins["gene"] == "GENEA"
    assert "what is the biological effect of this GENEA allele" in ins["question"]
    assert got["v_del/" + seqs["chr1"][119]]["gene"] == "GENEB"  # first deleted base 121
    snv = got[f"v_snv/{cases(seqs)['snv'][4][0]}"]
    assert snv["gene"] == "GENEA"
    no_gene = got["v_multi/" + seqs["chr1"][159]]
    assert no_gene["gene"] == "" and "effect of this allele" in no_gene["question"]


def test_malformed_annotation_names_the_line(genome, tmp_path):
    path = tmp_path / "genes.gtf"
    path.write_text(GTF + 'chr1\ttest\tgene\tforty\t90\t.\t+\t.\tgene_name "X";\n')
    with pytest.raises(ValueError, match=r"genes\.gtf:4: start/end must be integers, got 'forty'"):
        run_windows(genome, tmp_path, gtf=path)


def test_question_template(genome, tmp_path):
    seqs, _ = genome
    template = "{chrom} {chrom_number} {pos} {id} {ref}>{alt} in {gene}?"
    _, out = run_windows(genome, tmp_path, question_template=template, answer="benign")
    snv = by_id(out)[f"v_snv/{cases(seqs)['snv'][4][0]}"]
    assert snv["question"] == f"chr1 1 50 v_snv {snv['ref']}>{snv['alt']} in ?"
    assert snv["answer"] == "benign"
    with pytest.raises(InputError, match=r"unknown field\(s\) \{position\}; available: \{chrom\}"):
        run_windows(genome, tmp_path, question_template="at {position}")


def test_cli_prints_a_summary_and_reports_bad_input(genome, tmp_path, capsys):
    seqs, fasta = genome
    vcf = write_vcf(tmp_path / "in.vcf", list(cases(seqs).values()))
    out = tmp_path / "variants.jsonl"
    main(
        [
            "windows",
            "--vcf",
            str(vcf),
            "--fasta",
            str(fasta),
            "--out",
            str(out),
            "--flank",
            "20",
            "--max-n-fraction",
            "0.5",
        ]
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["written"] == 8 and (tmp_path / "variants.skipped.tsv").is_file()
    assert main(["windows", "--vcf", str(vcf), "--fasta", str(fasta), "--out", str(out), "--strict"]) == 2
    assert re.search(r"dnallm windows: error: .*record 6 \(chr1:200\): REF does not match", capsys.readouterr().err)


def test_position_past_the_contig_end_is_a_ref_mismatch(genome, tmp_path):
    seqs, _ = genome
    rows = [cases(seqs)["snv"], ("chrM", 70, "v_past", "A", ["G"])]  # chrM is 60 bp
    summary, _ = run_windows(genome, tmp_path, rows=rows)
    assert summary["skipped"] == {"ref_mismatch": 1}
    detail = skipped_rows(tmp_path / "out.skipped.tsv")["v_past/G"]["detail"]
    assert detail == "VCF REF 'A', FASTA '' at chrM:70 (runs past the end of chrM, 60 bp)"


def test_annotation_of_another_assembly_is_refused(genome, tmp_path):
    path = tmp_path / "genes.gtf"
    path.write_text('scaffold_7\ttest\tgene\t1\t90\t.\t+\t.\tgene_name "X";\n')
    with pytest.raises(ValueError, match=r"genes\.gtf: none of its chromosomes \(scaffold_7\) is in .*ref\.fa"):
        run_windows(genome, tmp_path, gtf=path)


def test_unparsable_record_is_named(genome, tmp_path):
    seqs, fasta = genome
    vcf = write_vcf(tmp_path / "in.vcf", [cases(seqs)["snv"], cases(seqs)["insertion"]])
    vcf.write_text(vcf.read_text().replace("\t80\t", "\teighty\t"))
    with pytest.raises(InputError, match=r"in\.vcf: record 2 cannot be read"):
        vcf_to_kegg(vcf, fasta, tmp_path / "out.jsonl")


def test_iupac_codes_in_the_reference_become_n(tmp_path):
    fasta = write_fasta(tmp_path / "ref.fa", {"chr1": "ACGTA" * 4 + "R" + "CGTAC" * 4})  # R at position 21
    vcf = write_vcf(tmp_path / "in.vcf", [("chr1", 21, "v_iupac", "R", ["G"]), ("chr1", 25, "v_near", "A", ["T"])])
    summary = vcf_to_kegg(vcf, fasta, tmp_path / "out.jsonl", opts=WindowOptions(flank=5))
    got = by_id(tmp_path / "out.jsonl")
    assert summary["written"] == 2
    assert got["v_iupac/G"]["reference_sequence"] == "ACGTA" + "N" + "CGTAC"
    assert got["v_iupac/G"]["variant_sequence"] == "ACGTA" + "G" + "CGTAC"
    assert got["v_near/T"]["reference_sequence"] == "ANCGT" + "A" + "CCGTA"
    load_examples(tmp_path / "out.jsonl", dna_window=5)
