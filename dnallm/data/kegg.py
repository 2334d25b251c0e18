"""KEGG variant -> disease records: JSONL in, checked and windowed examples out."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path

import datasets

from dnallm.data.dna import RecordError, centre_window, check_pair, clean_sequence, text_lines
from dnallm.data.messages import is_chat_record, variant_fields
from dnallm.io import atomic_write_text

TEXT_FIELDS = ("question", "answer")
DNA_FIELDS = ("reference_sequence", "variant_sequence")


def read_jsonl(path: str | Path) -> list[dict]:
    """Parse a JSONL file (UTF-8, a byte-order mark allowed); a bad line raises an error naming file,
    line and column. A chat record (``{"messages": [...]}``, ``dnallm.data.messages``) about a
    variant pair is read as the KEGG record it holds."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset file not found: {path}")
    records = []
    for lineno, line in text_lines(path):
        if not line.strip():
            continue
        try:
            # Without its line end, a line cut short is reported at its end, not at column 1 of a next line.
            rec = json.loads(line.rstrip("\r\n"))
        except json.JSONDecodeError as e:
            raise RecordError(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(rec, dict):
            raise RecordError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
        rec["_where"] = f"{path}:{lineno}"
        records.append(kegg_fields(rec))
    if not records:
        raise RecordError(f"{path}: empty dataset (no records)")
    return records


def kegg_fields(rec: dict) -> dict:
    """A record in the KEGG layout: itself, or the pair, question and answer a chat record holds."""
    if not is_chat_record(rec):
        return rec
    where = rec.get("_where", "record")
    return {**variant_fields(rec, where), "_where": where, "_chat": True}


def check_record(rec: dict, *, need_dna: bool = True, need_reasoning: bool = False, need_answer: bool = True) -> dict:
    """Validate one raw record (KEGG layout, or a chat record about a pair); returns it in the KEGG
    layout with upper-cased sequences.

    ``need_answer=False``: a record to predict, whose answer may be absent ('' then)."""
    rec = kegg_fields(rec)
    where = rec.get("_where", "record")
    text_fields = TEXT_FIELDS if need_answer else ("question",)
    fields = text_fields + (DNA_FIELDS if need_dna else ()) + (("reasoning",) if need_reasoning else ())
    missing = [f for f in fields if f not in rec or rec[f] is None]
    if rec.get("_chat") and "answer" in missing:
        raise RecordError(
            f"{where}: no assistant turn to learn from; end the conversation with one: 'Answer: <label>'"
        )
    if missing:
        raise RecordError(f"{where}: missing field(s) {', '.join(missing)}")
    out = dict(rec)
    for f in text_fields:
        if not isinstance(rec[f], str) or not rec[f].strip():
            raise RecordError(f"{where}: field '{f}' must be a non-empty string")
    out["answer"] = str(rec.get("answer") or "").strip()
    if "answer:" in out["answer"].lower():
        raise RecordError(
            f"{where}: field 'answer' holds 'Answer:' ({out['answer'][:60]!r}); give the label alone: "
            "replies are written and scored as 'Answer: <label>'"
        )
    out["reasoning"] = str(rec.get("reasoning") or "")
    if need_dna:
        for f in DNA_FIELDS:
            out[f] = clean_sequence(rec[f], where=where, field=f)
        check_pair(out["reference_sequence"], out["variant_sequence"], where=where)
    return out


def load_examples(
    path: str | Path, dna_window: int, *, need_reasoning: bool = False, need_dna: bool = True
) -> datasets.Dataset:
    """KEGG JSONL -> ``datasets.Dataset`` of checked examples with centred DNA windows.

    Columns: ``question``, ``answer``, ``reasoning``, ``ref_window``, ``var_window``, ``where``,
    ``system`` (a chat record's own system prompt; '' for the recipe's).
    """
    return examples_from_records(read_jsonl(path), dna_window, need_reasoning=need_reasoning, need_dna=need_dna)


def examples_from_records(
    records: list[dict],
    dna_window: int,
    *,
    need_reasoning: bool = False,
    need_dna: bool = True,
    need_answer: bool = True,
) -> datasets.Dataset:
    """KEGG-format records (dicts) -> checked examples, as ``load_examples``; a record
    without ``_where`` is named by its index. ``need_answer=False``: records to predict."""
    rows = []
    for i, rec in enumerate(records):
        rec = check_record(
            {"_where": f"record {i}", **rec}, need_dna=need_dna, need_reasoning=need_reasoning, need_answer=need_answer
        )
        where = rec["_where"]
        row = {"question": rec["question"], "answer": rec["answer"], "reasoning": rec["reasoning"], "where": where}
        row["system"] = rec["system"] if rec.get("_chat") else ""  # a chat record's own system turn ('': the recipe's)
        if need_dna:
            row["ref_window"] = centre_window(
                rec["reference_sequence"], dna_window, where=where, field="reference_sequence"
            )
            row["var_window"] = centre_window(
                rec["variant_sequence"], dna_window, where=where, field="variant_sequence"
            )
        else:
            row["ref_window"] = row["var_window"] = ""
        rows.append(row)
    return datasets.Dataset.from_list(rows)


def split_records(records: list[dict], fractions=(0.8, 0.1, 0.1), seed: int = 42) -> dict[str, list[dict]]:
    """Split records into train/val/test, stratified by ``answer``.

    Each disease contributes ``round(n * fraction)`` records to val and test; a disease with
    fewer than 3 records cannot be stratified and goes to train whole.
    """
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {fractions}")
    by_label: dict[str, list[dict]] = defaultdict(list)
    for rec in records:
        by_label[rec["answer"].strip()].append(rec)
    rng = random.Random(seed)
    splits: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for label in sorted(by_label):
        group = by_label[label]
        rng.shuffle(group)
        n_val = n_test = 0
        if len(group) >= 3:  # a non-zero fraction gives each such disease at least one record
            n_val = max(1, round(len(group) * fractions[1])) if fractions[1] else 0
            n_test = max(1, round(len(group) * fractions[2])) if fractions[2] else 0
        splits["val"] += group[:n_val]
        splits["test"] += group[n_val : n_val + n_test]
        splits["train"] += group[n_val + n_test :]
    for part in splits.values():
        rng.shuffle(part)
    return splits


def write_jsonl(path: str | Path, records: list[dict]) -> None:
    """Write records (without internal ``_where`` keys) atomically."""
    lines = [json.dumps({k: v for k, v in r.items() if not k.startswith("_")}) for r in records]
    atomic_write_text(path, "\n".join(lines) + "\n")
