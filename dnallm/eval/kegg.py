"""``dnallm eval``: greedy answers for a KEGG-format file, parsed and scored."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import torch
from tqdm.auto import tqdm

from dnallm.data.chat import parse_answer
from dnallm.data.kegg import load_examples
from dnallm.eval.metrics import classification_metrics
from dnallm.fusion.processor import dna_inputs
from dnallm.io import atomic_write_text
from dnallm.train.build import load_checkpoint
from dnallm.train.embed_cache import require_cached
from dnallm.train.engine import pick_device


@torch.no_grad()
def generate_answers(model, encoder, processor, examples, *, batch_size: int, max_new_tokens: int, encoder_batch_size: int, device: str) -> list[str]:
    tokenizer = processor.tokenizer
    rows = [processor(ex, with_answer=False) for ex in examples]
    texts = []
    for start in tqdm(range(0, len(rows), batch_size), desc="generating", unit="batch"):
        batch = processor.collate(rows[start : start + batch_size], side="left")
        dna_embeds, dna_mask = dna_inputs(encoder, batch["dna"], encoder_batch_size) if encoder else (None, None)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
            new_tokens = model.generate(
                batch["input_ids"].to(device), batch["attention_mask"].to(device), dna_embeds, dna_mask,
                max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            )
        texts += tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    return texts


def evaluate(checkpoint: str | Path, data: str | Path, out_dir: str | Path, overrides: list[str] | tuple = ()) -> dict:
    device = pick_device()
    recipe, encoder, model, processor = load_checkpoint(checkpoint, device, overrides)
    examples = load_examples(data, recipe.data.dna_window, need_dna=recipe.data.use_dna)
    require_cached(encoder, data, recipe.data.dna_window)
    texts = generate_answers(
        model, encoder, processor, examples, batch_size=recipe.eval.batch_size,
        max_new_tokens=recipe.eval.max_new_tokens, encoder_batch_size=recipe.encoder.batch_size, device=device,
    )
    truth = [a.strip().lower() for a in examples["answer"]]
    pred = [parse_answer(t) for t in texts]
    metrics = {"checkpoint": str(checkpoint), "data": str(data), **classification_metrics(truth, pred)}

    out_dir = Path(out_dir)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["ground_truth", "pred_label", "generated_text", "correct"])
    for t, p, text in zip(truth, pred, texts):
        writer.writerow([t, p, text, int(t == p)])
    atomic_write_text(out_dir / "predictions.csv", buf.getvalue())
    atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics
