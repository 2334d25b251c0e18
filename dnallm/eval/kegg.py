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
from dnallm.data.kegg import DNA_FIELDS, load_examples
from dnallm.data.labels import LabelSet
from dnallm.eval.metrics import classification_metrics
from dnallm.eval.plots import plot_confusion
from dnallm.fusion.processor import dna_inputs
from dnallm.io import atomic_write_text
from dnallm.train.build import load_checkpoint
from dnallm.train.embed_cache import require_cached
from dnallm.train.engine import pick_device


@torch.no_grad()
def generate_answers(model, encoder, processor, examples, *, batch_size: int, max_new_tokens: int, encoder_batch_size: int, device: str) -> list[str]:
    """Greedy replies, in the order of ``examples``.

    Prompts are batched by length (KEGG questions range from a line to a page), so that
    little of each batch is padding; the replies are put back in input order.
    """
    tokenizer = processor.tokenizer
    rows = [processor(ex, with_answer=False) for ex in examples]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
    texts: list[str] = [""] * len(rows)
    for start in tqdm(range(0, len(rows), batch_size), desc="generating", unit="batch"):
        chunk = order[start : start + batch_size]
        batch = processor.collate([rows[i] for i in chunk], side="left")
        dna_embeds, dna_mask = dna_inputs(encoder, batch["dna"], encoder_batch_size) if encoder else (None, None)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
            new_tokens = model.generate(
                batch["input_ids"].to(device), batch["attention_mask"].to(device), dna_embeds, dna_mask,
                max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            )
        for i, text in zip(chunk, tokenizer.batch_decode(new_tokens, skip_special_tokens=True)):
            texts[i] = text
    return texts


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
                raise RecordError(f"{e}; this checkpoint reads DNA, so every record needs both sequences "
                                  "(only a text-only checkpoint, data.use_dna=false, evaluates without them)") from None
            raise
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def training_label_set(recipe, examples) -> tuple[LabelSet, str]:
    """Labels the model was trained on (from ``data.train`` when it is still there), else the eval labels."""
    train_file = Path(recipe.data.train) if recipe.data.train else None
    if train_file and train_file.is_file():
        return LabelSet.from_jsonl(train_file), str(train_file)
    return LabelSet(list(examples["answer"])), "eval data (training file not found)"


def score(answers: list[str], texts: list[str], labels: LabelSet, label_source: str = "") -> tuple[list[str], list[str], dict]:
    """Ground-truth answers + generated texts -> (truth labels, predicted labels, metrics).

    A ground-truth label the model never saw in training stays a class of its own (it can
    only be missed); a reply without 'Answer:' is an empty prediction, always wrong.
    """
    truth = [labels.canonical(a) for a in answers]
    pred = [labels.predicted_label(t) for t in texts]
    metrics = classification_metrics(truth, pred)
    metrics["no_answer"] = sum(1 for p in pred if not p)
    metrics["labels_unseen_in_training"] = sorted({t for t in truth if t not in labels})
    metrics["n_training_labels"] = len(labels)
    metrics["label_source"] = label_source
    return truth, pred, metrics


def write_outputs(out_dir: str | Path, metrics: dict, truth: list[str], pred: list[str], texts: list[str], title: str = "") -> None:
    """``metrics.json``, ``predictions.csv`` and ``confusion.png`` in ``out_dir``, each written whole."""
    out_dir = Path(out_dir)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["ground_truth", "pred_label", "generated_text", "correct"])
    for t, p, text in zip(truth, pred, texts):
        writer.writerow([t, p, text, int(t == p)])
    atomic_write_text(out_dir / "predictions.csv", buf.getvalue())
    plot_confusion(truth, pred, out_dir / "confusion.png", title=title)
    atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")


def evaluate(checkpoint: str | Path, data, out_dir: str | Path, overrides: list[str] | tuple = ()) -> dict:
    """Generate, parse and score answers for ``data`` (one path or several, merged)."""
    device = pick_device()
    recipe, encoder, model, processor = load_checkpoint(checkpoint, device, overrides)
    examples = load_eval_examples(data, recipe.data.dna_window, need_dna=recipe.data.use_dna)
    for path in as_paths(data):
        require_cached(encoder, path, recipe.data.dna_window)
    texts = generate_answers(
        model, encoder, processor, examples, batch_size=recipe.eval.batch_size,
        max_new_tokens=recipe.eval.max_new_tokens, encoder_batch_size=recipe.encoder.batch_size, device=device,
    )
    labels, source = training_label_set(recipe, examples)
    truth, pred, scores = score(list(examples["answer"]), texts, labels, source)
    metrics = {"checkpoint": str(checkpoint), "data": [str(p) for p in as_paths(data)], "uses_dna": recipe.data.use_dna, **scores}
    write_outputs(out_dir, metrics, truth, pred, texts, title=recipe.run_name)
    return metrics
