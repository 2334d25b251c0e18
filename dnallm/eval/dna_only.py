"""DNA-only baseline: frozen encoder -> the fusion model's pair features -> classifier head.

The head reads each (reference, variant) pair as the fusion model's variant summary does
(``dnallm.fusion.summary``: pooled windows, the aligned change and its flanks, k-mers over
the change), so it is as strong a baseline as the fusion model's own DNA view. The encoder
runs once over every window (what the head reads is gathered then: ``pair_views``); only the
small head trains, with plain PyTorch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.nn import functional as F
from tqdm.auto import tqdm

from dnallm.data.labels import LabelSet
from dnallm.fusion.classifier import PairClassifier
from dnallm.fusion.processor import dna_inputs
from dnallm.fusion.summary import pair_views
from dnallm.io import atomic_directory


@dataclass
class DNAHeadConfig:
    hidden: int = 256  # hidden units of the DNA-only classifier
    dropout: float = 0.1  # dropout of the classifier
    epochs: int = 100  # passes over the training pairs
    batch_size: int = 64  # pairs per step
    lr: float = 1.0e-3  # AdamW learning rate
    weight_decay: float = 0.01  # AdamW weight decay


@torch.no_grad()
def encode_pairs(encoder, examples, batch_size: int, context: int) -> dict[str, torch.Tensor]:
    """Examples with ``ref_window`` / ``var_window`` -> ``pair_views`` of every pair, on the CPU in
    float32, reference and variant interleaved (2 * n rows)."""
    refs, vars_ = list(examples["ref_window"]), list(examples["var_window"])
    parts: list[dict] = []
    for start in tqdm(range(0, len(refs), batch_size), desc="encoding DNA", unit="batch"):
        sequences = [s for pair in zip(refs[start : start + batch_size], vars_[start : start + batch_size]) for s in pair]
        dna = dna_inputs(encoder, sequences, batch_size)
        views = pair_views(dna["dna_embeds"].float(), dna["dna_mask"], dna["dna_spans"], context)
        parts.append({k: v.cpu() for k, v in views.items()})
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def _rows(views: dict, pairs: torch.Tensor) -> dict:
    """The views of ``pairs`` (indices of pairs): both of each pair's rows, in order."""
    rows = torch.stack([2 * pairs, 2 * pairs + 1], 1).flatten()
    return {k: v[rows] for k, v in views.items()}


def train_head(views: dict, targets: torch.Tensor, n_classes: int, cfg: DNAHeadConfig, seed: int, *, kind: str,
               context: int) -> tuple[PairClassifier, list[float]]:
    """Minibatch AdamW on the gathered views. -> (head in eval mode, mean loss per epoch)"""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = PairClassifier(views["pooled"].shape[-1], n_classes, kind, context, cfg.hidden, cfg.dropout)
    optimizer = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    losses = []
    for _ in tqdm(range(cfg.epochs), desc="training DNA-only head", unit="epoch"):
        order = torch.randperm(len(targets), generator=generator)
        total = torch.zeros(())
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            loss = F.cross_entropy(head(_rows(views, idx)), targets[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(idx)
        losses.append(float(total) / len(order))
    return head.eval(), losses


def save_head(out_dir: str | Path, head: PairClassifier, labels: list[str], meta: dict) -> Path:
    """``head.safetensors`` + ``head.json`` (labels in logit order, encoder, window, sizes)."""
    with atomic_directory(out_dir) as tmp:
        save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(tmp / "head.safetensors"))
        (tmp / "head.json").write_text(json.dumps({"labels": labels, **meta}, indent=2) + "\n")
    return Path(out_dir)


def load_head(head_dir: str | Path) -> tuple[PairClassifier, dict]:
    head_dir = Path(head_dir)
    meta = json.loads((head_dir / "head.json").read_text())
    head = PairClassifier(meta["dna_hidden"], len(meta["labels"]), meta["kind"], meta["context"], meta["hidden"], meta["dropout"])
    head.load_state_dict(load_file(str(head_dir / "head.safetensors")))
    return head.eval(), meta


@torch.no_grad()
def predict(head: PairClassifier, views: dict, labels: list[str]) -> list[str]:
    return [labels[i] for i in head(views).argmax(-1).tolist()]


def fit_dna_only(encoder, train_examples, cfg: DNAHeadConfig, *, kind: str, context: int, encoder_batch_size: int, seed: int,
                 out_dir: str | Path) -> dict:
    """Train the head on ``train_examples`` and save it to ``out_dir``. -> summary with the loss curve.

    ``kind``, ``context``: the pair features (``projector.summary`` views, context in encoder positions)."""
    label_set = LabelSet(list(train_examples["answer"]))
    targets = torch.tensor([label_set.labels.index(label_set.canonical(a)) for a in train_examples["answer"]])
    views = encode_pairs(encoder, train_examples, encoder_batch_size, context)
    head, losses = train_head(views, targets, len(label_set), cfg, seed, kind=kind, context=context)
    meta = {"encoder": encoder.name_or_path, "dna_hidden": views["pooled"].shape[-1], "kind": kind, "context": context,
            "hidden": cfg.hidden, "dropout": cfg.dropout}
    save_head(out_dir, head, label_set.labels, meta)
    with torch.no_grad():
        train_accuracy = float((head(views).argmax(-1) == targets).float().mean())
    return {"first_epoch_loss": losses[0], "last_epoch_loss": losses[-1], "train_accuracy": train_accuracy, "epochs": cfg.epochs,
            "features": kind}
