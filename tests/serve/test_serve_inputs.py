"""DNA as users give it: tags, FASTA, JSONL records, and the checks with their messages."""

import pytest

from dnallm.data.kegg import write_jsonl
from dnallm.data.synthetic import planted_records
from dnallm.serve.protocol import APIError, parse_request
from dnallm.serve.inputs import (
    DNAInputError,
    clean_dna,
    pair_from_fasta,
    parse_fasta,
    prepare_pair,
    read_sequence_arg,
    record_from_jsonl,
    split_tagged,
)


def test_clean_dna_names_the_bad_base_position_ignoring_whitespace():
    assert clean_dna("acg t\nNN", "reference", 100) == "ACGTNN"
    with pytest.raises(DNAInputError) as e:
        clean_dna("ACGT\nACGU", "variant", 100)
    assert e.value.field == "variant" and e.value.position == 7
    assert "variant" in str(e.value) and "'U'" in str(e.value) and "position 7" in str(e.value)


def test_clean_dna_limits_length_and_refuses_empty():
    with pytest.raises(DNAInputError, match="reference: 11 bp exceeds the maximum of 10 bp") as e:
        clean_dna("A" * 11, "reference", 10)
    assert e.value.code == "dna_too_long"
    with pytest.raises(DNAInputError, match="variant: empty"):
        clean_dna(" \n", "variant", 10)


def test_prepare_pair_cuts_the_training_window_around_the_variant():
    rec = planted_records(1, length=4001, seed=3)[0]
    pair = prepare_pair(rec["reference_sequence"], rec["variant_sequence"], window=33, max_length=5000)
    assert len(pair.reference) == len(pair.variant) == 33
    assert pair.reference_bp == pair.variant_bp == 4001
    # the single-nucleotide difference sits at the centre of both windows
    diffs = [i for i, (a, b) in enumerate(zip(pair.reference, pair.variant)) if a != b]
    assert diffs == [16]
    short = prepare_pair("ACGTACGTA", "ACGTTCGTA", window=33, max_length=5000)
    assert short.reference == "ACGTACGTA"  # shorter than the window: used whole


def test_prepare_pair_refuses_sequences_from_different_loci():
    with pytest.raises(DNAInputError, match="do not share flanks") as e:
        prepare_pair("A" * 40, "C" * 40, window=16, max_length=100)
    assert e.value.code == "dna_pair_mismatch"


def test_split_tagged_takes_the_blocks_out_of_the_message():
    text, ref, var = split_tagged("<Reference>ac\ngt</Reference>\n<variant>ACTT</variant>\nWhat disease?")
    assert (text, ref, var) == ("What disease?", "ac\ngt", "ACTT")
    assert split_tagged("no dna here") == ("no dna here", None, None)


@pytest.mark.parametrize(
    "content, message",
    [
        ("<reference>AC</reference><reference>AC</reference><variant>A</variant>", "<reference> appears twice"),
        ("<reference>ACGT</reference> what?", "<variant> block missing"),
        ("<reference>ACGT<variant>ACGT</variant>", "stray tag '<reference>'"),
    ],
)
def test_split_tagged_errors_name_the_tag(content, message):
    with pytest.raises(DNAInputError, match=message):
        split_tagged(content)


def test_fasta_pair_and_its_errors():
    fasta = ">ref chr1:100\nACGT\nACGT\n; comment\n>alt\nACGA\nACGT\n"
    assert pair_from_fasta(fasta, "x.fa") == ("ACGTACGT", "ACGAACGT")
    assert parse_fasta("ACGT\nAC\n", "raw.txt") == [("sequence", "ACGTAC")]
    with pytest.raises(DNAInputError, match=r"x.fa: expected 2 FASTA records \(reference, then variant\), found 3"):
        pair_from_fasta(">a\nA\n>b\nC\n>c\nG\n", "x.fa")
    with pytest.raises(DNAInputError, match="x.fa: FASTA record 'b' has no sequence"):
        pair_from_fasta(">a\nA\n>b\n", "x.fa")


def test_jsonl_record_by_index(tmp_path):
    path = tmp_path / "kegg.jsonl"
    records = planted_records(3, length=101, seed=0)
    write_jsonl(path, records)
    assert record_from_jsonl(path, 2)["variant_sequence"] == records[2]["variant_sequence"]
    with pytest.raises(DNAInputError, match=r"kegg.jsonl: record index 3 out of range \(file has 3 records"):
        record_from_jsonl(path, 3)


def test_sequence_argument_is_bases_or_a_fasta_file(tmp_path):
    path = tmp_path / "ref.fa"
    path.write_text(">ref\nACGT\nTT\n")
    assert read_sequence_arg(str(path)) == "ACGTTT"
    assert read_sequence_arg("acgtn") == "acgtn"
    with pytest.raises(DNAInputError, match="'missing.fa' is neither a file nor a DNA sequence"):
        read_sequence_arg("missing.fa")


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("max_tokens", "5", "max_tokens: Input should be a valid integer"),
        ("max_completion_tokens", "5", "max_completion_tokens: Input should be a valid integer"),
        ("temperature", float("nan"), "temperature: Input should be a finite number"),
        ("top_p", float("inf"), "top_p: Input should be a finite number"),
    ],
)
def test_request_numbers_must_be_numbers_and_finite(field, value, message):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert parse_request({**body, "max_tokens": 5, "temperature": 0.5, "top_p": 1}).max_tokens == 5
    with pytest.raises(APIError) as e:
        parse_request({**body, field: value})
    assert e.value.status == 400 and e.value.param == field and e.value.message == message
