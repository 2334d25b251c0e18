"""``dnallm data NAME``: a published dataset from the Hugging Face hub (or a local copy) as
checked ``train/val/test.jsonl`` in the KEGG record format.

The three BioReason tasks are known by name; their answers are cleaned as BioReason cleans
them before training and scoring, so labels and scores line up with its tables:

- ``kegg`` (``wanglab/kegg``): variant -> one of 37 diseases; answers kept as written.
- ``vep-coding`` (``wanglab/variant_effect_coding``): pathogenic vs benign; the answer is the
  first item of a ``;``-separated list, lower-cased.
- ``vep-non-snv`` (``wanglab/variant_effect_non_snv``): the same for insertions, deletions
  and other non-SNV alleles; the answer is a list written as text (``['Pathogenic']``), so
  brackets, quotes and underscores are dropped first. Its variant column is
  ``mutated_sequence``.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from dnallm.data.dna import RecordError, centre_window
from dnallm.data.kegg import check_record, split_records, write_jsonl
from dnallm.io import atomic_write_text

SPLITS = ("train", "val", "test")
_LIST_PUNCTUATION = re.compile(r"[\[\]']")


class SourceError(ValueError):
    """The dataset cannot be fetched or read; the message says what to do instead."""


def first_listed_label(answer: str) -> str:
    """``"Pathogenic; Likely pathogenic"`` -> ``"pathogenic"``."""
    return answer.split(";")[0].strip().lower()


def unlisted_label(answer: str) -> str:
    """``"['Likely_pathogenic']"`` -> ``"likely pathogenic"``: list punctuation and underscores
    dropped, then as ``first_listed_label``."""
    return first_listed_label(_LIST_PUNCTUATION.sub("", answer).replace("_", " "))


@dataclass(frozen=True)
class Source:
    name: str
    hub_id: str
    clean_answer: Callable[[str], str]
    variant_columns: tuple[str, ...] = ("variant_sequence",)


SOURCES = {
    "kegg": Source("kegg", "wanglab/kegg", str.strip),
    "vep-coding": Source("vep-coding", "wanglab/variant_effect_coding", first_listed_label),
    "vep-non-snv": Source(
        "vep-non-snv", "wanglab/variant_effect_non_snv", unlisted_label, ("variant_sequence", "mutated_sequence")
    ),
}


def offline_message(source: Source, reason: str) -> str:
    return (
        f"cannot reach the Hugging Face hub for {source.hub_id} ({reason}). Fetch a copy where the hub is "
        f"reachable (huggingface-cli download {source.hub_id} --repo-type dataset --local-dir {source.name}-hub, "
        f"or datasets' save_to_disk) and pass it: "
        f"dnallm data {source.name} --from {source.name}-hub --out DIR"
    )


def load_source(source: Source, local: str | Path | None = None):
    """``datasets.load_dataset`` of the hub ID, or of a local copy: a ``save_to_disk`` folder
    or a folder in the hub's layout (data files of each split). -> DatasetDict or Dataset"""
    import datasets

    if local is not None:
        local = Path(local)
        if not local.exists():
            raise FileNotFoundError(f"--from {local}: no such file or folder")
        if local.is_dir() and any((local / f).is_file() for f in ("dataset_dict.json", "state.json")):
            return datasets.load_from_disk(str(local))
        try:
            return datasets.load_dataset(str(local))
        except (ValueError, FileNotFoundError) as e:
            raise SourceError(f"--from {local}: not a dataset folder datasets can read ({e})") from None
    if datasets.config.HF_HUB_OFFLINE:
        raise SourceError(offline_message(source, "HF_HUB_OFFLINE is set"))
    try:
        return datasets.load_dataset(source.hub_id)
    except (ConnectionError, TimeoutError) as e:  # what datasets raises when the hub cannot be reached
        raise SourceError(
            offline_message(source, f"{type(e).__name__}: {e}; HF_HUB_OFFLINE=1 skips the attempt")
        ) from None


def source_splits(loaded) -> dict[str, list[dict]]:
    """Rows by split name; ``validation`` counts as ``val``."""
    if not hasattr(loaded, "keys"):  # one Dataset, no splits
        return {"all": list(loaded)}
    return {("val" if name == "validation" else name): list(ds) for name, ds in loaded.items()}


def clean_record(row: dict, source: Source, where: str, dna_window: int) -> dict:
    """One source row -> a checked KEGG-format record (the checks ``dnallm train`` applies)."""
    rec = {k: v for k, v in row.items() if v is not None}
    for column in source.variant_columns[1:]:
        if column in rec and "variant_sequence" not in rec:
            rec["variant_sequence"] = rec.pop(column)
    if isinstance(rec.get("answer"), str):
        rec["answer"] = source.clean_answer(rec["answer"])
    rec["_where"] = where
    rec = check_record(rec)
    if dna_window:
        for field in ("reference_sequence", "variant_sequence"):
            centre_window(rec[field], dna_window, where=where, field=field)
    return rec


def arrange_splits(splits: dict[str, list[dict]], seed: int) -> tuple[dict[str, list[dict]], str]:
    """train/val/test as the source has them; else a stratified 8:1:1 split (``dnallm split``).

    A source with train and test but no val gives val a stratified ninth of train
    (8:1 of the training part, as 8:1:1 would).
    """
    if all(s in splits for s in SPLITS):
        return {s: splits[s] for s in SPLITS}, "source splits"
    if set(splits) == {"train", "test"}:
        carved = split_records(splits["train"], fractions=(8 / 9, 1 / 9, 0.0), seed=seed)
        return {
            "train": carved["train"],
            "val": carved["val"],
            "test": splits["test"],
        }, "source train/test; val: stratified 1/9 of train"
    merged = [rec for name in sorted(splits) for rec in splits[name]]
    return split_records(merged, seed=seed), f"stratified 8:1:1 of {', '.join(sorted(splits))}"


def _lengths(values: list[int]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)} if values else {}


def summarise(splits: dict[str, list[dict]], how: str, source: str, dropped: list[str]) -> dict:
    everything = [r for part in splits.values() for r in part]
    labels = Counter(r["answer"] for r in everything)
    return {
        "source": source,
        "splits": how,
        "records": {name: len(part) for name, part in splits.items()},
        "labels": dict(labels.most_common()),
        "reference_bp": _lengths([len(r["reference_sequence"]) for r in everything]),
        "variant_bp": _lengths([len(r["variant_sequence"]) for r in everything]),
        "unequal_lengths": sum(len(r["reference_sequence"]) != len(r["variant_sequence"]) for r in everything),
        "with_reasoning": sum(bool(r.get("reasoning")) for r in everything),
        "dropped": len(dropped),
        "dropped_examples": dropped[:5],
    }


def prepare_dataset(
    name: str,
    out_dir: str | Path,
    *,
    local: str | Path | None = None,
    dna_window: int = 1024,
    seed: int = 42,
    drop_invalid: bool = False,
    overwrite: bool = False,
) -> dict:
    """Fetch, clean, check and split dataset ``name``; write ``train/val/test.jsonl`` and
    ``summary.json`` to ``out_dir``. -> the summary

    Every record passes the checks of training (fields, alphabet, shared flanks, at least
    ``dna_window`` bp); a failing one is an error naming it, or with ``drop_invalid`` is
    left out and counted.
    """
    if name not in SOURCES:
        raise SourceError(f"unknown dataset {name!r}; choose one of {', '.join(SOURCES)}")
    source = SOURCES[name]
    out_dir = Path(out_dir)
    outputs = [out_dir / f"{s}.jsonl" for s in SPLITS] + [out_dir / "summary.json"]
    existing = [str(p) for p in outputs if p.exists()]
    if existing and not overwrite:
        raise SourceError(f"{existing[0]} exists; choose another --out or pass --overwrite to replace it")
    origin = str(local) if local is not None else source.hub_id
    checked: dict[str, list[dict]] = {}
    dropped: list[str] = []
    for split, rows in source_splits(load_source(source, local)).items():
        checked[split] = []
        for i, row in enumerate(rows):
            try:
                checked[split].append(clean_record(row, source, f"{origin}[{split}][{i}]", dna_window))
            except RecordError as e:
                if not drop_invalid:
                    raise RecordError(f"{e} (pass --drop-invalid to leave such records out)") from None
                dropped.append(str(e))
    splits, how = arrange_splits(checked, seed)
    summary = summarise(splits, how, origin, dropped)
    for split, records in splits.items():
        write_jsonl(out_dir / f"{split}.jsonl", records)
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
