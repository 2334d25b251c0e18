"""DNA-only baseline: frozen encoder -> pooled (ref, var, var - ref) -> classifier head.

The encoder runs once over every window (its embeddings are cached as pooled features);
only the small head trains, with plain PyTorch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.nn import functional as F
from tqdm.auto import tqdm

from dnallm.encoders import DNAEncoder
from dnallm.data.labels import LabelSet
from dnallm.fusion.classifier import PooledPairClassifier, masked_mean, pair_features
from dnallm.io import atomic_directory


@dataclass
class DNAHeadConfig:
    hidden: int = 256
    dropout: float = 0.1
    epochs: int = 100
    batch_size: int = 64
    lr: float = 1.0e-3
    weight_decay: float = 0.01


@torch.no_grad()
def pooled_pair_features(encoder: DNAEncoder, examples, batch_size: int) -> torch.Tensor:
    """Examples with ``ref_window`` / ``var_window`` -> (n, 3 * dna_hidden) float32 features."""
    feats = []
    refs, vars_ = list(examples["ref_window"]), list(examples["var_window"])
    for start in tqdm(range(0, len(refs), batch_size), desc="encoding DNA", unit="batch"):
        pooled = []
        for seqs in (refs[start : start + batch_size], vars_[start : start + batch_size]):
            embeds, mask = encoder.encode(seqs)  # (b, positions, hidden), (b, positions)
            pooled.append(masked_mean(embeds.float(), mask))
        feats.append(pair_features(*pooled).cpu())
    return torch.cat(feats)


def train_head(features: torch.Tensor, targets: torch.Tensor, n_classes: int, cfg: DNAHeadConfig, seed: int) -> tuple[PooledPairClassifier, list[float]]:
    """Minibatch AdamW on cached features. -> (head in eval mode, mean loss per epoch)"""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = PooledPairClassifier(features.shape[1] // 3, n_classes, cfg.hidden, cfg.dropout)
    optimizer = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    losses = []
    for _ in tqdm(range(cfg.epochs), desc="training DNA-only head", unit="epoch"):
        order = torch.randperm(len(features), generator=generator)
        total = 0.0
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            loss = F.cross_entropy(head(features[idx]), targets[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        losses.append(total / len(order))
    return head.eval(), losses


def save_head(out_dir: str | Path, head: PooledPairClassifier, labels: list[str], meta: dict) -> Path:
    """``head.safetensors`` + ``head.json`` (labels in logit order, encoder, window, sizes)."""
    with atomic_directory(out_dir) as tmp:
        save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(tmp / "head.safetensors"))
        (tmp / "head.json").write_text(json.dumps({"labels": labels, **meta}, indent=2) + "\n")
    return Path(out_dir)


def load_head(head_dir: str | Path) -> tuple[PooledPairClassifier, dict]:
    head_dir = Path(head_dir)
    meta = json.loads((head_dir / "head.json").read_text())
    head = PooledPairClassifier(meta["dna_hidden"], len(meta["labels"]), meta["hidden"], meta["dropout"])
    head.load_state_dict(load_file(str(head_dir / "head.safetensors")))
    return head.eval(), meta


@torch.no_grad()
def predict(head: PooledPairClassifier, features: torch.Tensor, labels: list[str]) -> list[str]:
    return [labels[i] for i in head(features).argmax(-1).tolist()]


def fit_dna_only(encoder: DNAEncoder, train_examples, cfg: DNAHeadConfig, *, encoder_batch_size: int, seed: int, out_dir: str | Path) -> dict:
    """Train the head on ``train_examples`` and save it to ``out_dir``. -> summary with the loss curve."""
    label_set = LabelSet(list(train_examples["answer"]))
    targets = torch.tensor([label_set.labels.index(label_set.canonical(a)) for a in train_examples["answer"]])
    features = pooled_pair_features(encoder, train_examples, encoder_batch_size)
    head, losses = train_head(features, targets, len(label_set), cfg, seed)
    meta = {"encoder": encoder.name_or_path, "dna_hidden": features.shape[1] // 3, "hidden": cfg.hidden, "dropout": cfg.dropout}
    save_head(out_dir, head, label_set.labels, meta)
    train_accuracy = float((head(features).argmax(-1) == targets).float().mean())
    return {"first_epoch_loss": losses[0], "last_epoch_loss": losses[-1], "train_accuracy": train_accuracy, "epochs": cfg.epochs}
