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


def planted_records(
    n_records: int, n_classes: int = 4, length: int = 4001, motif_len: int = 9, seed: int = 0
) -> list[dict]:
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
    "long qt syndrome",
    "cystic fibrosis",
    "hereditary breast and ovarian cancer",
    "fanconi anemia",
    "maturity onset diabetes of the young",
    "dilated cardiomyopathy",
    "hypertrophic cardiomyopathy",
    "retinitis pigmentosa",
    "lynch syndrome",
    "marfan syndrome",
    "phenylketonuria",
    "gaucher disease",
    "tay-sachs disease",
    "familial hypercholesterolemia",
    "hemophilia a",
    "duchenne muscular dystrophy",
    "charcot-marie-tooth disease",
    "noonan syndrome",
    "tuberous sclerosis",
    "neurofibromatosis type 1",
    "wilson disease",
    "hereditary hemochromatosis",
    "epilepsy",
    "acute myeloid leukemia",
)
ALL_DISEASES = DISEASES + MORE_DISEASES

SIGNALS = {
    "motif": "the variant completes a class motif centred on it (the reference lacks it)",
    "flank": "a class motif sits immediately upstream of a random variant, in both sequences",
    "kmer": "the 5-mer centred on the variant is one of the class's k-mers; the reference centre base differs",
    "centre": "the variant's centre base (4 classes); the reference centre base is another, random one",
    "substitution": "the substitution ref>alt folded to a pyrimidine reference: C>A C>G C>T T>A T>C T>G "
    "(6 classes; ref and alt both random, so one sequence alone caps accuracy at 1/3)",
    "site": "a binding-site 8-mer overlapping the variant at any offset is gained (only in the variant), lost (only in "
    "the reference) or unchanged (a copy nearby in both, untouched by the variant); copies nearby in both "
    "windows in half the gained and lost records too, so neither window, nor the presence of a site, decides "
    "(3 classes)",
    "indel": "an insertion or a deletion, short (1-3 bp) or long (6-12 bp), sequences of different lengths, each "
    "centred on its own allele (4 classes)",
    "repeat": "a short tandem repeat beside the variant gains or loses one unit, of 2 or of 3 bases (4 classes: "
    "expansion or contraction x unit size); what decides is the pair's lengths and the repeat around the "
    "change, never one window or the centre base",
}
# Signals whose class count is fixed by the rule itself.
FIXED_CLASSES = {"centre": 4, "substitution": 6, "site": 3, "indel": 4, "repeat": 4}
# Signals whose two sequences differ in length.
INDEL_SIGNALS = ("indel", "repeat")
SITE = "TGACGTCA"  # a CRE-like palindromic 8-mer: the planted binding site
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
    n_records: int,
    n_classes: int = 4,
    length: int = 4001,
    seed: int = 0,
    signal: str = "motif",
    motif_len: int = 9,
    question: str = QUESTION,
    labels: list[str] | None = None,
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
    if signal in CHANGE_SIGNALS:
        rng = random.Random(seed)
        records = []
        for i in range(n_records):
            reference, variant = CHANGE_SIGNALS[signal](i % n_classes, length, rng)
            records.append(
                {
                    "question": question,
                    "answer": names[i % n_classes],
                    "reasoning": f"Planted signal '{signal}' for class {i % n_classes}.",
                    "reference_sequence": reference,
                    "variant_sequence": variant,
                }
            )
        rng.shuffle(records)
        return records
    rng = random.Random(seed)
    motifs = motif_vocabulary(n_motifs=n_classes, motif_len=motif_len, seed=20251 + n_classes)
    kmers = (
        _class_kmers(n_classes, 5, per_class=max(1, min(4, 1024 // n_classes)), seed=seed)
        if signal == "kmer"
        else None
    )
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
        records.append(
            {
                "question": question,
                "answer": names[label],
                "reasoning": f"Planted signal '{signal}' for class {label}.",
                "reference_sequence": reference,
                "variant_sequence": variant,
            }
        )
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


def _random(n: int, rng: random.Random) -> list[str]:
    return [rng.choice(BASES) for _ in range(n)]


def _sites_over(seq: list[str] | str, centre: int) -> int:
    """How many copies of ``SITE`` overlap position ``centre``."""
    k = len(SITE)
    text = "".join(seq[max(0, centre - k + 1) : centre + k])
    return sum(text[i : i + k] == SITE for i in range(len(text) - k + 1))


def _site_pair(label: int, length: int, rng: random.Random) -> tuple[str, str]:
    """``site``: 0 gained, 1 lost, 2 unchanged. -> (reference, variant), an SNV at the centre."""
    centre, k = length // 2, len(SITE)
    while True:
        seq = _random(length, rng)
        if label == 2 or rng.random() < 0.5:  # a copy beside the variant, in both windows, that it leaves alone
            gap = rng.randint(1, 4)
            _plant(seq, centre + gap if rng.random() < 0.5 else centre - gap - k + 1 - 1, SITE)
        if label < 2:  # the site over the variant, at any offset: in the variant (gained) or the reference (lost)
            _plant(seq, centre - rng.randrange(k), SITE)
        other = seq.copy()
        other[centre] = rng.choice([b for b in BASES if b != seq[centre]])
        with_site, without = "".join(seq), "".join(other)
        if label < 2 and (_sites_over(with_site, centre) != 1 or _sites_over(without, centre) != 0):
            continue  # the substitution must make or break exactly one site
        if label == 2 and (_sites_over(with_site, centre) or _sites_over(without, centre)):
            continue  # unchanged: no site over the variant on either side
        if label == 0:
            return without, with_site
        return with_site, without


def _indel_pair(label: int, length: int, rng: random.Random) -> tuple[str, str]:
    """``indel``: 0 short insertion, 1 long insertion, 2 short deletion, 3 long deletion.
    BioReason's non-SNV layout: flank + allele + flank, the allele carrying a VCF anchor base."""
    flank = length // 2
    size = rng.randint(1, 3) if label in (0, 2) else rng.randint(6, 12)
    left, right, anchor = _random(flank, rng), _random(flank, rng), rng.choice(BASES)
    changed = _random(size, rng)
    while changed[0] == right[0]:  # the change must not be shiftable into the right flank (a repeat)
        changed = _random(size, rng)
    short, long_ = "".join(left + [anchor] + right), "".join(left + [anchor] + changed + right)
    return (short, long_) if label < 2 else (long_, short)


def _repeat_pair(label: int, length: int, rng: random.Random) -> tuple[str, str]:
    """``repeat``: 0 expansion of a 2-base unit, 1 contraction of it, 2 expansion of a 3-base unit,
    3 contraction of it. The repeat (4 to 6 units) sits left of the change, one unit is added or
    taken away; the unit's bases are random, not all alike (no homopolymer)."""
    unit_len = 2 if label < 2 else 3
    unit = _random(unit_len, rng)
    while len(set(unit)) == 1:
        unit = _random(unit_len, rng)
    flank = length // 2
    units = rng.randint(4, 6)
    left = _random(flank - units * unit_len, rng) + unit * units
    right = _random(flank, rng)
    while right[:unit_len] == unit:  # the repeat ends where the flank begins
        right = _random(flank, rng)
    shorter, longer = "".join(left + right), "".join(left + unit + right)
    return (shorter, longer) if label % 2 == 0 else (longer, shorter)


CHANGE_SIGNALS = {"site": _site_pair, "indel": _indel_pair, "repeat": _repeat_pair}


def hard_records(records: list[dict], prompt: str = UNINFORMATIVE_PROMPT) -> list[dict]:
    """The same records with every question replaced by one short fixed ``prompt``.

    KEGG questions name the pathway and its genes, which often give the disease away; with
    the question stripped, only the sequences can tell the records apart.
    """
    return [{**r, "question": prompt} for r in records]
