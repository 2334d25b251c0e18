"""KEGG-format records with a label planted in the DNA, for checking that DNA is used.

Every record has random background sequence of ``length`` bp with a single-nucleotide
variant at the centre. The variant sequence carries a class-specific motif centred on the
variant; in the reference the centre base differs, so only the variant completes the motif.
The question text is the same for every record: a model can only beat chance by reading
the variant sequence.
"""

from __future__ import annotations

import itertools
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


# ---- planted-signal generator with a choice of signal ---------------------------------------

MORE_DISEASES = (
    "long qt syndrome", "cystic fibrosis", "hereditary breast and ovarian cancer", "fanconi anemia",
    "maturity onset diabetes of the young", "dilated cardiomyopathy", "hypertrophic cardiomyopathy",
    "retinitis pigmentosa", "lynch syndrome", "marfan syndrome", "phenylketonuria", "gaucher disease",
    "tay-sachs disease", "familial hypercholesterolemia", "hemophilia a", "duchenne muscular dystrophy",
    "charcot-marie-tooth disease", "noonan syndrome", "tuberous sclerosis", "neurofibromatosis type 1",
    "wilson disease", "hereditary hemochromatosis", "epilepsy", "acute myeloid leukemia",
)
ALL_DISEASES = DISEASES + MORE_DISEASES

SIGNALS = {
    "motif": "the variant completes a class motif centred on it (the reference lacks it)",
    "flank": "a class motif sits immediately upstream of a random variant, in both sequences",
    "kmer": "the 5-mer centred on the variant is one of the class's k-mers; the reference centre base differs",
    "centre": "the variant's centre base (4 classes); the reference centre base is another, random one",
    "substitution": "the substitution ref>alt folded to a pyrimidine reference: C>A C>G C>T T>A T>C T>G "
                    "(6 classes; ref and alt both random, so one sequence alone caps accuracy at 1/3)",
}
# Signals whose class count is fixed by the rule itself.
FIXED_CLASSES = {"centre": 4, "substitution": 6}
BASES = "ACGT"
COMPLEMENT = str.maketrans("ACGT", "TGCA")
# The six single-base substitution classes, pyrimidine reference first (as in mutational signatures).
SUBSTITUTIONS = ("C>A", "C>G", "C>T", "T>A", "T>C", "T>G")

UNINFORMATIVE_PROMPT = "What disease does this variant contribute to?"
VARIANT_EFFECT_QUESTION = "Given the reference and variant sequences, is this variant pathogenic or benign?"


def disease_names(n_classes: int) -> list[str]:
    if n_classes > len(ALL_DISEASES):
        raise ValueError(f"n_classes={n_classes} exceeds the {len(ALL_DISEASES)} built-in disease names")
    return list(ALL_DISEASES[:n_classes])


def _class_kmers(n_classes: int, k: int, per_class: int, seed: int) -> list[list[str]]:
    """``per_class`` distinct k-mers for each class, no k-mer shared between classes."""
    all_kmers = ["".join(p) for p in itertools.product("ACGT", repeat=k)]
    if n_classes * per_class > len(all_kmers):
        raise ValueError(f"{n_classes} classes x {per_class} {k}-mers exceed the {len(all_kmers)} {k}-mers")
    random.Random(seed).shuffle(all_kmers)
    return [all_kmers[c * per_class : (c + 1) * per_class] for c in range(n_classes)]


def _plant(seq: list[str], start: int, element: str) -> None:
    seq[start : start + len(element)] = element


def planted_signal_records(
    n_records: int, n_classes: int = 4, length: int = 4001, seed: int = 0, signal: str = "motif",
    motif_len: int = 9, question: str = QUESTION, labels: list[str] | None = None,
) -> list[dict]:
    """KEGG-format records whose disease is a deterministic function of the DNA near the variant.

    Random background, variant at the centre, classes balanced, ``question`` the same for all.
    ``signal`` picks the rule (see ``SIGNALS``); ``motif`` with the default question gives
    exactly ``planted_records``. ``labels`` names the classes instead of built-in diseases
    (e.g. ``["benign", "pathogenic"]`` for a variant-effect task).
    """
    if signal not in SIGNALS:
        raise ValueError(f"unknown signal {signal!r}; choose one of {', '.join(SIGNALS)}")
    if signal in FIXED_CLASSES and n_classes != FIXED_CLASSES[signal]:
        raise ValueError(f"signal {signal!r} has exactly {FIXED_CLASSES[signal]} classes, got n_classes={n_classes}")
    if length % 2 == 0 or length < 2 * motif_len + 1:
        raise ValueError(f"length must be odd and at least 2*motif_len+1={2 * motif_len + 1}, got {length}")
    if labels is not None and len(labels) != n_classes:
        raise ValueError(f"{len(labels)} labels given for n_classes={n_classes}")
    names = list(labels) if labels is not None else disease_names(n_classes)
    if signal == "motif" and n_classes <= len(DISEASES):
        records = planted_records(n_records, n_classes, length, motif_len, seed)
        return [{**r, "question": question, "answer": names[DISEASES.index(r["answer"])]} for r in records]
    rng = random.Random(seed)
    motifs = motif_vocabulary(n_motifs=n_classes, motif_len=motif_len, seed=20251 + n_classes)
    kmers = _class_kmers(n_classes, 5, per_class=max(1, min(4, 1024 // n_classes)), seed=seed) if signal == "kmer" else None
    centre = length // 2
    records = []
    for i in range(n_records):
        label = i % n_classes
        seq = [rng.choice("ACGT") for _ in range(length)]
        if signal in FIXED_CLASSES:
            ref_base, alt_base = _centre_pair(signal, label, rng)
            seq[centre] = alt_base
        elif signal == "flank":
            _plant(seq, centre - motif_len, motifs[label])  # ends one base before the variant
        elif signal == "kmer":
            _plant(seq, centre - 2, rng.choice(kmers[label]))
        else:
            _plant(seq, centre - motif_len // 2, motifs[label])
        variant = "".join(seq)
        if signal not in FIXED_CLASSES:
            ref_base = rng.choice([b for b in "ACGT" if b != variant[centre]])
        reference = variant[:centre] + ref_base + variant[centre + 1 :]
        records.append({
            "question": question, "answer": names[label],
            "reasoning": f"Planted signal '{signal}' for class {label}.",
            "reference_sequence": reference, "variant_sequence": variant,
        })
    rng.shuffle(records)
    return records


def _centre_pair(signal: str, label: int, rng: random.Random) -> tuple[str, str]:
    """(reference base, variant base) at the centre for the fixed-class signals."""
    if signal == "centre":  # class = the variant's base
        alt = BASES[label]
        return rng.choice([b for b in BASES if b != alt]), alt
    ref, alt = SUBSTITUTIONS[label].split(">")
    if rng.random() < 0.5:  # the same substitution read from the other strand: purine reference
        ref, alt = ref.translate(COMPLEMENT), alt.translate(COMPLEMENT)
    return ref, alt


def hard_records(records: list[dict], prompt: str = UNINFORMATIVE_PROMPT) -> list[dict]:
    """The same records with every question replaced by one short fixed ``prompt``.

    KEGG questions name the pathway and its genes, which often give the disease away; with
    the question stripped, only the sequences can tell the records apart.
    """
    return [{**r, "question": prompt} for r in records]
