"""``dnallm eval``: greedy answers for KEGG-format files, parsed, scored, plotted."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import datasets
import torch
from tqdm.auto import tqdm

from dnallm.data.dna import RecordError
from dnallm.data import chat
from dnallm.data.kegg import DNA_FIELDS, load_examples, read_jsonl
from dnallm.data.labels import LabelSet
from dnallm.eval.metrics import (
    classification_metrics,
    number_metrics,
    parse_number,
    text_match,
    text_metrics,
    whole_number,
)
from dnallm.eval.plots import plot_confusion, plot_numbers
from dnallm.encoders.cache import require_cached
from dnallm.fusion import DNAFusionLM
from dnallm.fusion.generate import Sampling, check_context, generate
from dnallm.fusion.pretrained import read_recipe
from dnallm.hub import resolve_checkpoint
from dnallm.io import atomic_write_text, check_outputs


@torch.no_grad()
def generate_replies(
    model, encoder, processor, examples, *, batch_size: int, max_new_tokens: int, encoder_batch_size: int, device: str
) -> tuple[list[str], list[bool]]:
    """Greedy replies in the order of ``examples``, and whether each was cut at ``max_new_tokens``.

    Generation stops at the end of the assistant turn, as training taught. Prompts are batched
    by length (KEGG questions range from a line to a page), so that little of each batch is
    padding; the replies are put back in input order.
    """
    rows = [processor(ex, with_answer=False) for ex in examples]
    check_context(model, rows, max_new_tokens, [ex.get("where", f"record {i}") for i, ex in enumerate(examples)])
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
    texts: list[str] = [""] * len(rows)
    truncated: list[bool] = [False] * len(rows)
    sampling = Sampling(max_new_tokens=max_new_tokens)
    for start in tqdm(range(0, len(rows), batch_size), desc="generating", unit="batch"):
        chunk = order[start : start + batch_size]
        replies = generate(
            model,
            processor,
            encoder,
            [rows[i] for i in chunk],
            sampling,
            device=device,
            encoder_batch_size=encoder_batch_size,
        )
        for i, text, cut in zip(chunk, replies.texts, replies.cut):
            texts[i], truncated[i] = text, cut
    return texts, truncated


def generate_answers(model, encoder, processor, examples, **kwargs) -> list[str]:
    """Greedy replies in the order of ``examples`` (see ``generate_replies``)."""
    return generate_replies(model, encoder, processor, examples, **kwargs)[0]


def reply_token_budget(tokenizer, examples, with_reasoning: bool, margin: int = 32) -> int:
    """New tokens enough for the longest reply in ``examples`` (reasoning when trained with it,
    ``Answer: <label>``, end of turn) plus ``margin``: the default of ``eval.max_new_tokens``."""
    longest = 0
    for ex in examples:
        reply = chat.answer_text(ex["answer"], (ex.get("reasoning") or "") if with_reasoning else "")
        longest = max(longest, len(tokenizer(reply, add_special_tokens=False)["input_ids"]) + 1)
    return longest + margin


FALLBACK_MAX_NEW_TOKENS = 256


def max_new_tokens_for(recipe, tokenizer, examples=()) -> tuple[int, str]:
    """``eval.max_new_tokens`` when the recipe sets it (> 0), else the budget of the longest
    training reply (of ``examples`` when the training file is gone). -> (tokens, where from)"""
    if recipe.eval.max_new_tokens > 0:
        return recipe.eval.max_new_tokens, "eval.max_new_tokens"
    train_file = Path(recipe.data.train) if recipe.data.train else None
    if train_file and train_file.is_file():
        examples, source = read_jsonl(train_file), f"the longest reply in {train_file}"
    elif len(examples):
        source = "the longest reply in the eval data (training file not found)"
    else:
        return FALLBACK_MAX_NEW_TOKENS, "default (no training file to size replies from)"
    return reply_token_budget(tokenizer, examples, recipe.data.with_reasoning), source


def as_paths(data) -> list[Path]:
    return [Path(p) for p in ([data] if isinstance(data, (str, Path)) else data)]


def load_eval_examples(data, dna_window: int, *, need_dna: bool) -> datasets.Dataset:
    """One or more KEGG JSONL files (e.g. val + test, BioReason's 290 records) as one dataset."""
    parts = []
    for path in as_paths(data):
        try:
            parts.append(load_examples(path, dna_window, need_dna=need_dna))
        except RecordError as e:
            if need_dna and any(f in str(e) for f in DNA_FIELDS):
                raise RecordError(
                    f"{e}; this checkpoint reads DNA, so every record needs both sequences "
                    "(only a text-only checkpoint, data.use_dna=false, evaluates without them)"
                ) from None
            raise
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def training_label_set(recipe, examples) -> tuple[LabelSet, str]:
    """Labels the model was trained on (from ``data.train`` when it is still there), else the eval labels."""
    train_file = Path(recipe.data.train) if recipe.data.train else None
    if train_file and train_file.is_file():
        return LabelSet.from_jsonl(train_file), str(train_file)
    return LabelSet(list(examples["answer"])), "eval data (training file not found)"


def score(
    answers: list[str], texts: list[str], labels: LabelSet, label_source: str = ""
) -> tuple[list[str], list[str], dict]:
    """Ground-truth answers + generated texts -> (truth labels, predicted labels, metrics).

    A ground-truth label the model never saw in training stays a class of its own (it can
    only be missed); a reply without 'Answer:' is an empty prediction, always wrong.
    """
    truth = [labels.canonical(a) for a in answers]
    pred = [labels.predicted_label(t) for t in texts]
    metrics = classification_metrics(truth, pred, training_labels=labels.labels)
    metrics["no_answer"] = sum(1 for p in pred if not p)
    metrics["labels_unseen_in_training"] = sorted({t for t in truth if t not in labels})
    metrics["n_training_labels"] = len(labels)
    metrics["label_source"] = label_source
    return truth, pred, metrics


def score_numbers(examples, texts: list[str]) -> tuple[list[float], list[float | None], dict]:
    """``eval.score=number``: the gold answers' numbers and the replies' (None: no number in it)."""
    truth = []
    for answer, where in zip(examples["answer"], examples["where"]):
        value = whole_number(answer)
        if value is None:
            raise RecordError(f"{where}: answer {answer!r} is not a number (eval.score=number); give a number alone")
        truth.append(value)
    pred = [parse_number(chat.parse_answer(t)) for t in texts]
    return truth, pred, number_metrics(truth, pred)


def score_texts(examples, texts: list[str]) -> tuple[list[str], list[str], dict]:
    """``eval.score=text``: the gold answers and the replies' answers, as text."""
    truth, pred = list(examples["answer"]), [chat.parse_answer(t) for t in texts]
    return truth, pred, text_metrics(truth, pred)


SCORE_PLOTS = {"label": "confusion.png", "number": "scatter.png", "text": None}


def output_files(kind: str = "label") -> tuple[str, ...]:
    """What ``write_outputs`` writes for an ``eval.score`` kind."""
    return ("metrics.json", "predictions.csv", *([SCORE_PLOTS[kind]] if SCORE_PLOTS[kind] else []))


OUTPUT_FILES = output_files("label")


def write_outputs(
    out_dir: str | Path,
    metrics: dict,
    truth: list,
    pred: list,
    texts: list[str],
    title: str = "",
    kind: str = "label",
) -> None:
    """``metrics.json``, ``predictions.csv`` and the score's plot (``output_files(kind)``) in
    ``out_dir``, each written whole."""
    out_dir = Path(out_dir)
    buf = io.StringIO()
    writer = csv.writer(buf)
    if kind == "number":
        writer.writerow(["ground_truth", "pred_value", "generated_text", "abs_error"])
        for t, p, text in zip(truth, pred, texts):
            writer.writerow([t, "" if p is None else p, text, "" if p is None else abs(t - p)])
    else:
        writer.writerow(
            ["ground_truth", "pred_label" if kind == "label" else "pred_text", "generated_text", "correct"]
        )
        same = text_match if kind == "text" else str.__eq__
        for t, p, text in zip(truth, pred, texts):
            writer.writerow([t, p, text, int(same(t, p))])
    atomic_write_text(out_dir / "predictions.csv", buf.getvalue())
    if kind == "label":
        plot_confusion(truth, pred, out_dir / "confusion.png", title=title)
    elif kind == "number":
        plot_numbers(truth, pred, metrics, out_dir / "scatter.png", title=title)
    atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")


def evaluate(
    checkpoint: str | Path,
    data,
    out_dir: str | Path,
    overrides: list[str] | tuple = (),
    *,
    trust_remote_code: bool = False,
) -> dict:
    """Generate, parse and score answers for ``data`` (one path or several, merged)."""
    kind = read_recipe(resolve_checkpoint(checkpoint), overrides).eval.score  # before the (slow) load
    check_outputs([Path(out_dir) / name for name in output_files(kind)], dirs=[out_dir], inputs=as_paths(data))
    loaded = DNAFusionLM.from_pretrained(checkpoint, overrides=overrides, trust_remote_code=trust_remote_code)
    recipe, encoder, model, processor, device = (
        loaded.recipe,
        loaded.dna_source,
        loaded.model,
        loaded.processor,
        loaded.device,
    )
    examples = load_eval_examples(data, recipe.data.dna_window, need_dna=recipe.data.use_dna)
    for path in as_paths(data):
        require_cached(encoder, path, recipe.data.dna_window)
    max_new_tokens, budget_source = max_new_tokens_for(recipe, processor.tokenizer, examples)
    texts, truncated = generate_replies(
        model,
        encoder,
        processor,
        examples,
        batch_size=recipe.eval.batch_size,
        max_new_tokens=max_new_tokens,
        encoder_batch_size=recipe.encoder.batch_size,
        device=device,
    )
    if kind == "number":
        truth, pred, scores = score_numbers(examples, texts)
    elif kind == "text":
        truth, pred, scores = score_texts(examples, texts)
    else:
        labels, source = training_label_set(recipe, examples)
        truth, pred, scores = score(list(examples["answer"]), texts, labels, source)
    metrics = {
        "score": kind,
        "checkpoint": str(checkpoint),
        "data": [str(p) for p in as_paths(data)],
        "uses_dna": recipe.data.use_dna,
        **scores,
        "truncated": sum(truncated),
        "max_new_tokens": max_new_tokens,
        "max_new_tokens_from": budget_source,
    }
    write_outputs(out_dir, metrics, truth, pred, texts, title=recipe.run_name, kind=kind)
    return metrics
