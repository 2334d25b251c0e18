"""DNA-only baseline: frozen encoder -> the fusion model's pair encoder -> classifier head.

The head (``dnallm.fusion.classifier.PairClassifier``) reads each (reference, variant) pair as
the fusion model's variant summary does (pooled windows, the aligned change and its flanks,
k-mers over the change), so it is as strong a baseline as the fusion model's own DNA view.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from dnallm.data.labels import LabelSet
from dnallm.fusion.classifier import PairClassifier, accuracy, encode_pairs, train_classifier
from dnallm.io import atomic_directory


@dataclass
class DNAHeadConfig:
    dropout: float = 0.1  # dropout of the classifier
    epochs: int = 100  # passes over the training pairs
    batch_size: int = 64  # pairs per step
    lr: float = 1.0e-3  # AdamW learning rate
    weight_decay: float = 0.01  # AdamW weight decay


def examples_views(encoder, examples, batch_size: int, context: int) -> dict:
    """Examples with ``ref_window`` / ``var_window`` -> their ``pair_views``."""
    return encode_pairs(encoder, list(examples["ref_window"]), list(examples["var_window"]), batch_size, context)


def save_head(out_dir: str | Path, head: PairClassifier, labels: list[str], meta: dict) -> Path:
    """``head.safetensors`` + ``head.json`` (labels in logit order, encoder, window, sizes)."""
    with atomic_directory(out_dir) as tmp:
        save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(tmp / "head.safetensors"))
        (tmp / "head.json").write_text(json.dumps({"labels": labels, **meta}, indent=2) + "\n")
    return Path(out_dir)


def load_head(head_dir: str | Path) -> tuple[PairClassifier, dict]:
    head_dir = Path(head_dir)
    meta = json.loads((head_dir / "head.json").read_text())
    head = PairClassifier(meta["dna_hidden"], len(meta["labels"]), meta["kind"], meta["context"], meta["dropout"])
    head.load_state_dict(load_file(str(head_dir / "head.safetensors")))
    return head.eval(), meta


@torch.no_grad()
def predict(head: PairClassifier, views: dict, labels: list[str]) -> list[str]:
    return [labels[i] for i in head(views).argmax(-1).tolist()]


def fit_dna_only(
    encoder,
    train_examples,
    cfg: DNAHeadConfig,
    *,
    kind: str,
    context: int,
    encoder_batch_size: int,
    seed: int,
    out_dir: str | Path,
) -> dict:
    """Train the head on ``train_examples`` and save it to ``out_dir``. -> summary with the loss curve.

    ``kind``, ``context``: the pair features (``projector.summary`` views, context in encoder positions)."""
    label_set = LabelSet(list(train_examples["answer"]))
    targets = torch.tensor([label_set.labels.index(label_set.canonical(a)) for a in train_examples["answer"]])
    views = examples_views(encoder, train_examples, encoder_batch_size, context)
    head, losses = train_classifier(
        views,
        targets,
        len(label_set),
        kind=kind,
        context=context,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        dropout=cfg.dropout,
        seed=seed,
        desc="training DNA-only head",
    )
    meta = {
        "encoder": encoder.name_or_path,
        "dna_hidden": views["pooled"].shape[-1],
        "kind": kind,
        "context": context,
        "dropout": cfg.dropout,
    }
    save_head(out_dir, head, label_set.labels, meta)
    return {
        "first_epoch_loss": losses[0],
        "last_epoch_loss": losses[-1],
        "train_accuracy": accuracy(head, views, targets),
        "epochs": cfg.epochs,
        "features": kind,
    }
