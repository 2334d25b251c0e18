"""One DNA vocabulary: contig naming rules (one MT rule) shared by VCF, bigWig and GTF readers."""

import pytest

from dnallm.config import RecipeError, load_coverage_recipe
from dnallm.data.dna import CONTIG_RULES, contig_key, fasta_contig, rename_contig
from dnallm.data.vcf import InputError, contig_namer


@pytest.mark.parametrize(
    "name, rule, renamed",
    [
        ("1", "add_chr", "chr1"),
        ("chr1", "add_chr", "chr1"),
        ("MT", "add_chr", "chrM"),
        ("M", "add_chr", "chrM"),
        ("chr1", "strip_chr", "1"),
        ("chrM", "strip_chr", "MT"),
        ("X", "strip_chr", "X"),
        ("chrMT", "same", "chrMT"),
    ],
)
def test_naming_rules_and_the_one_mitochondrion_rule(name, rule, renamed):
    assert rename_contig(name, rule) == renamed
    assert contig_key(name) == contig_key(renamed)  # annotations match across styles


def test_every_reader_speaks_the_same_vocabulary():
    assert CONTIG_RULES == ("same", "add_chr", "strip_chr")
    # VCF names renamed to the FASTA's, bigWig names from the FASTA's: the same rule, the same MT answer
    assert contig_namer("add_chr")("MT") == "chrM" == rename_contig("MT", "add_chr")
    assert fasta_contig("chrM", "add_chr") == "MT" and fasta_contig("1", "strip_chr") == "chr1"
    with pytest.raises(
        InputError, match=r"contig naming must be one of same, add_chr, strip_chr or a two-column file; 'add-chr'"
    ):
        contig_namer("add-chr")
    with pytest.raises(
        RecipeError, match=r"'data\.bigwig_contigs' must be one of same, add_chr, strip_chr, got 'add-chr'"
    ):
        load_coverage_recipe(None, ["data.bigwig_contigs=add-chr"])
