"""DNA as people hand it over: pasted text, FASTA, a KEGG JSONL record, tagged chat blocks.

Every route ends in ``prepare_pair``, which applies the checks of the training data
(``dnallm.data.dna``) and cuts the same centred windows the model was trained on.
Errors are ``DNAInputError``s that name the field and, for a bad base, its position.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from dnallm.data.dna import ALPHABET, RecordError, check_pair
from dnallm.data.kegg import read_jsonl

_WHITESPACE = re.compile(r"\s+")
_INVALID = re.compile(f"[^{ALPHABET}]")
# <reference>ACGT...</reference> and <variant>...</variant> anywhere in a user message.
_TAG = re.compile(r"<(reference|variant)>(.*?)</\1>", re.IGNORECASE | re.DOTALL)
_OPEN_TAG = re.compile(r"</?(reference|variant)>", re.IGNORECASE)


class DNAInputError(ValueError):
    """Unusable DNA; ``field`` and ``position`` (0-based base index) say where."""

    def __init__(
        self, message: str, *, field: str | None = None, position: int | None = None, code: str = "invalid_dna"
    ):
        super().__init__(message)
        self.field = field
        self.position = position
        self.code = code


@dataclass(frozen=True)
class DNAPair:
    """Reference and variant windows, checked and centred, ready for the encoder."""

    reference: str
    variant: str
    reference_bp: int  # length as given, before windowing
    variant_bp: int


def clean_dna(text: str, field: str, max_length: int) -> str:
    """Drop whitespace (pasted line breaks), upper-case, and check the alphabet and length."""
    seq = _WHITESPACE.sub("", text).upper()
    if not seq:
        raise DNAInputError(f"{field}: empty sequence", field=field, code="empty_dna")
    if len(seq) > max_length:
        raise DNAInputError(
            f"{field}: {len(seq)} bp exceeds the maximum of {max_length} bp", field=field, code="dna_too_long"
        )
    bad = _INVALID.search(seq)
    if bad:
        raise DNAInputError(
            f"{field}: invalid character {bad.group()!r} at position {bad.start()} (0-based, whitespace "
            f"ignored); allowed: {', '.join(ALPHABET)} (any case)",
            field=field,
            position=bad.start(),
        )
    return seq


def centre(seq: str, window: int) -> str:
    """The model's centred window (as in training); a shorter sequence is used whole."""
    if len(seq) <= window:
        return seq
    start = len(seq) // 2 - window // 2
    return seq[start : start + window]


def prepare_pair(reference: str, variant: str, *, window: int, max_length: int) -> DNAPair:
    ref = clean_dna(reference, "reference", max_length)
    var = clean_dna(variant, "variant", max_length)
    try:
        check_pair(ref, var, where="dna")
    except RecordError as e:
        raise DNAInputError(str(e), code="dna_pair_mismatch") from None
    return DNAPair(centre(ref, window), centre(var, window), len(ref), len(var))


def split_tagged(content: str) -> tuple[str, str | None, str | None]:
    """Take ``<reference>``/``<variant>`` blocks out of a message. -> (text, reference, variant)"""
    found: dict[str, str] = {}
    for m in _TAG.finditer(content):
        name = m.group(1).lower()
        if name in found:
            raise DNAInputError(
                f"<{name}> appears twice in one message; give one reference and one variant", field=name
            )
        found[name] = m.group(2)
    text = _TAG.sub("", content)
    stray = _OPEN_TAG.search(text)
    if stray:
        raise DNAInputError(
            f"unclosed or stray tag {stray.group()!r}; wrap each sequence as <reference>...</reference>",
            field=stray.group(1).lower(),
        )
    if len(found) == 1:
        missing = ({"reference", "variant"} - set(found)).pop()
        raise DNAInputError(f"<{missing}> block missing: give both <reference> and <variant>", field=missing)
    return text.strip(), found.get("reference"), found.get("variant")


def parse_fasta(text: str, source: str) -> list[tuple[str, str]]:
    """FASTA text -> [(header, sequence)]. Text without a header line is one unnamed record."""
    records: list[tuple[str, list[str]]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith(";"):
            continue
        if line.startswith(">"):
            records.append((line[1:].strip() or f"record at line {lineno}", []))
        elif not records:
            records.append(("sequence", [line]))
        else:
            records[-1][1].append(line)
    out = [(name, "".join(lines)) for name, lines in records]
    empty = [name for name, seq in out if not seq]
    if empty:
        raise DNAInputError(f"{source}: FASTA record {empty[0]!r} has no sequence", code="invalid_fasta")
    if not out:
        raise DNAInputError(f"{source}: no FASTA records found", code="invalid_fasta")
    return out


def pair_from_fasta(text: str, source: str) -> tuple[str, str]:
    """Two FASTA records: the first is the reference, the second the variant."""
    records = parse_fasta(text, source)
    if len(records) != 2:
        names = ", ".join(repr(n) for n, _ in records[:5])
        raise DNAInputError(
            f"{source}: expected 2 FASTA records (reference, then variant), found {len(records)} ({names})",
            code="invalid_fasta",
        )
    return records[0][1], records[1][1]


def record_from_jsonl(path: str | Path, index: int) -> dict:
    """Record ``index`` (0-based, blank lines skipped) of a KEGG-format JSONL file."""
    records = read_jsonl(path)
    if not 0 <= index < len(records):
        raise DNAInputError(
            f"{path}: record index {index} out of range (file has {len(records)} records, 0-based)",
            code="bad_record_index",
        )
    rec = records[index]
    missing = [f for f in ("reference_sequence", "variant_sequence") if not isinstance(rec.get(f), str)]
    if missing:
        raise DNAInputError(f"{rec['_where']}: record has no {', '.join(missing)}", code="invalid_record")
    return rec


def read_sequence_arg(value: str) -> str:
    """A sequence given on the command line: a path to a (one-record) FASTA file, or the bases."""
    path = Path(value)
    if path.is_file():
        records = parse_fasta(path.read_text(encoding="utf-8"), str(path))
        if len(records) != 1:
            raise DNAInputError(f"{path}: expected 1 FASTA record, found {len(records)}", code="invalid_fasta")
        return records[0][1]
    if _INVALID.search(_WHITESPACE.sub("", value).upper()):
        raise DNAInputError(f"{value[:60]!r} is neither a file nor a DNA sequence (A, C, G, T, N)", code="invalid_dna")
    return value
