"""KEGG-format records with a label planted in the DNA, for checking that DNA is used.

Every record has random background sequence of ``length`` bp with a single-nucleotide
variant at the centre. The variant sequence carries a class-specific motif centred on the
variant; in the reference the centre base differs, so only the variant completes the motif.
The question text is the same for every record: a model can only beat chance by reading
the variant sequence.
"""

from __future__ import annotations

import random

DISEASES = (
    "parkinson's disease",
    "alzheimer's disease",
    "spinocerebellar ataxia",
    "amyotrophic lateral sclerosis",
    "prion disease",
    "huntington disease",
    "melanoma",
    "colorectal cancer",
)

QUESTION = (
    "Given the reference and variant sequences, what is the biological effect of this "
    "variant, specifically what disease does this contribute to?"
)


def motif_vocabulary(n_motifs: int = 16, motif_len: int = 9, seed: int = 20251) -> list[str]:
    """A fixed set of distinct random motifs: the recurring elements of the synthetic genome.

    Planted tasks draw their class motifs from it.
    """
    rng = random.Random(seed)
    motifs: list[str] = []
    while len(motifs) < n_motifs:
        motif = "".join(rng.choice("ACGT") for _ in range(motif_len))
        if motif not in motifs:
            motifs.append(motif)
    return motifs


def class_motifs(n_classes: int, motif_len: int = 9) -> list[str]:
    """One motif per class; odd length so the variant sits in its middle."""
    vocab = motif_vocabulary(motif_len=motif_len)
    if n_classes > len(vocab):
        raise ValueError(f"n_classes={n_classes} exceeds the {len(vocab)} motifs of the vocabulary")
    return vocab[:n_classes]


def planted_records(n_records: int, n_classes: int = 4, length: int = 4001, motif_len: int = 9, seed: int = 0) -> list[dict]:
    if n_classes > len(DISEASES):
        raise ValueError(f"n_classes={n_classes} exceeds the {len(DISEASES)} built-in disease names")
    if length % 2 == 0 or length < motif_len:
        raise ValueError(f"length must be odd and at least motif_len={motif_len}, got {length}")
    motifs = class_motifs(n_classes, motif_len)
    rng = random.Random(seed)
    centre, half = length // 2, motif_len // 2
    records = []
    for i in range(n_records):
        label = i % n_classes
        seq = [rng.choice("ACGT") for _ in range(length)]
        seq[centre - half : centre + half + 1] = motifs[label]
        variant = "".join(seq)
        ref_base = rng.choice([b for b in "ACGT" if b != variant[centre]])
        reference = variant[:centre] + ref_base + variant[centre + 1 :]
        records.append(
            {
                "question": QUESTION,
                "answer": DISEASES[label],
                "reasoning": f"The variant completes the motif {motifs[label]} at the centre of the window.",
                "reference_sequence": reference,
                "variant_sequence": variant,
            }
        )
    rng.shuffle(records)
    return records
