"""The KEGG objective: frozen DNA encoder -> projector -> LoRA causal LM, loss on the answer.

What is its own: the models it builds, how examples batch, the loss, validation loss, and
what a checkpoint keeps (trainable tensors + a peft adapter). The loop, engines,
checkpoints and resume are the shared core (``trainer.fit``). Launch on one process
(``dnallm train RECIPE``) or many (``deepspeed``, ``torchrun``, ``accelerate launch``):
ranks come from the launcher's environment.
"""

from __future__ import annotations

import math
from functools import partial
from itertools import islice
from pathlib import Path

import torch
from peft import get_peft_model_state_dict
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from dnallm.config import Recipe
from dnallm.data.kegg import load_examples
from dnallm.data.labels import LabelSet
from dnallm.encoders.cache import CachedEncoder, require_cached
from dnallm.fusion.classifier import accuracy, encode_pairs, train_classifier
from dnallm.fusion.packing import reply_targets
from dnallm.fusion.processor import dna_inputs
from dnallm.io import save_tensors
from dnallm.train.batching import TokenBudgetBatches
from dnallm.train.build import build_encoder, build_model, build_processor
from dnallm.train.checkpoint import load_trainable
from dnallm.train.engine import zero_stage
from dnallm.train.trainer import fit


def param_groups(model, recipe: Recipe) -> list[dict]:
    """LoRA at ``train.lr``; the projector and the summary at ``train.projector_lr``, except the summary's
    pair encoder after stage 1, at ``summary_lr_scale`` of it (what stage 1 taught it is kept while the
    LLM learns to read it)."""
    fusion, pretrained, lora = [], [], []
    stage1 = model.summary is not None and recipe.projector.pretrain_epochs > 0
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("llm."):
            lora.append(p)
        elif stage1 and name.startswith("summary.encoder."):
            pretrained.append(p)
        else:
            fusion.append(p)
    t = recipe.train
    fusion_lr = t.projector_lr or t.lr
    groups = [
        {"params": fusion, "lr": fusion_lr, "weight_decay": 0.0},
        {"params": lora, "lr": t.lr, "weight_decay": t.weight_decay},
    ]
    if pretrained:
        groups.append({"params": pretrained, "lr": fusion_lr * t.summary_lr_scale, "weight_decay": 0.0})
    return groups


# What a training batch hands the fusion model's forward, as tensors to move to the device.
MODEL_TENSORS = (
    "input_ids",
    "attention_mask",
    "labels",
    "position_ids",
    "cu_seq_lens",
    "reply_index",
    "reply_targets",
    "dna_layout",
)


def training_batch(
    processor, rows: list[dict], cache: CachedEncoder | None = None, encoder_batch_size: int = 8
) -> dict:
    """``processor.train_batch`` plus, found on the host, where the loss is (``reply_index``,
    ``reply_targets``) and how many tokens it counts (``n_targets``, an int): the step then
    needs no host sync to select them, and the trainer weights micro-batches by it.
    ``cache``: an embedding cache on the host (``CachedEncoder.on_host``), read here, in the
    DataLoader's workers, into ``dna_inputs``."""
    batch = processor.train_batch(rows)
    batch.update(reply_targets(batch["labels"]))
    batch["n_targets"] = len(batch["reply_targets"])
    if cache is not None:
        batch["dna_inputs"] = dna_inputs(cache, batch["dna"], encoder_batch_size)
    return batch


def pretrain_summary(model, encoder, examples, recipe: Recipe, device: str) -> dict:
    """Stage 1 (``projector.pretrain_epochs``): the variant summary's pair encoder learns the
    training labels as a classifier over the frozen encoder's embeddings (the DNA-only head's
    code), before the LLM trains on it; then every part trains together. -> what it reached"""
    epochs = recipe.projector.pretrain_epochs
    if model.summary is None or encoder is None or not epochs:
        return {}
    labels = LabelSet(list(examples["answer"]))
    targets = torch.tensor([labels.labels.index(labels.canonical(a)) for a in examples["answer"]])
    context = model.summary.context
    views = encode_pairs(
        encoder, list(examples["ref_window"]), list(examples["var_window"]), recipe.encoder.batch_size, context
    )
    head, losses = train_classifier(
        views,
        targets,
        len(labels),
        kind=recipe.projector.summary,
        context=context,
        epochs=epochs,
        seed=recipe.seed,
        device=device,
        desc="stage 1: the summary's pair encoder",
    )
    with torch.no_grad():
        for target, trained in zip(model.summary.encoder.parameters(), head.encoder.parameters()):
            target.copy_(trained)
        centre_summary(model.summary, head.encoder(views))
    return {"stage1_loss": round(losses[-1], 4), "stage1_train_accuracy": round(accuracy(head, views, targets), 4)}


def centre_summary(summary, encodings: torch.Tensor) -> None:
    """Start the summary centred over the training pairs (a data-dependent initialisation): its
    output bias cancels the mean pair encoding, so that what the LLM's first norm sees of each
    summary position is what varies between pairs, not a part common to all of them (which held
    60 % of the summary's energy on the k-mer signal, and delayed the LLM's reading of it).

    ``encodings``: (n_pairs, SUMMARY_WIDTH), the stage-1 pair encoder's output on the training pairs."""
    out = summary.out
    out.bias.copy_(-(out.weight @ encodings.mean(0).to(out.weight)))


def step_batch(engine, encoder, batch: dict, device: str, encoder_batch_size: int):
    """One micro-batch forward: frozen encoder (no graph), then the fusion model."""
    if "dna_inputs" in batch:  # read from the cache ahead of the step (training_batch)
        dna = {k: v.to(device, non_blocking=True) for k, v in batch["dna_inputs"].items()}
    else:
        dna = dna_inputs(encoder, batch["dna"], encoder_batch_size) if encoder else {}
    # non_blocking: from pinned memory (the DataLoader's, on a GPU) the copy overlaps the step.
    tensors = {k: batch[k].to(device, non_blocking=True) for k in MODEL_TENSORS if k in batch}
    if "cu_seq_lens" not in tensors:
        # Right-padded rows: padding only follows a sample's tokens, so causal attention alone is exact
        # for each of them, and no padding mask is built (nor checked on the host) in every forward.
        tensors["attention_mask"] = None
    longest = {"max_length": batch["max_length"]} if "max_length" in batch else {}
    return engine(**tensors, **longest, **dna)


@torch.no_grad()
def validation_loss(engine, encoder, rows: list[dict], processor, recipe: Recipe, device: str) -> float:
    """Token-weighted mean loss over this rank's share of ``rows``, averaged over ranks.

    Every rank runs the same number of forwards (under ZeRO-3 each forward gathers weights
    from all ranks, so a rank with one batch more would wait forever): a rank whose share
    runs out first runs a padding batch that counts zero."""
    engine.module.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)
    shard = rows[engine.rank :: engine.world_size]
    size = recipe.eval.batch_size
    n_batches = math.ceil(math.ceil(len(rows) / engine.world_size) / size)
    for start in range(0, n_batches * size, size):
        chunk, weight = shard[start : start + size], 1.0
        if not chunk:
            chunk, weight = rows[:1], 0.0
        batch = training_batch(processor, chunk)
        n_tokens = batch["n_targets"] * weight
        loss = step_batch(engine, encoder, batch, device, recipe.encoder.batch_size).loss
        total += torch.stack([loss.detach().double() * n_tokens, loss.new_tensor(n_tokens, dtype=torch.float64)])
    if engine.world_size > 1:
        torch.distributed.all_reduce(total)
    engine.module.train()
    return float(total[0] / total[1].clamp(min=1))


class FineTune:
    """The KEGG objective for ``trainer.fit`` (the contract is in its docstring)."""

    weights_file = "trainable.safetensors"
    optimizer = None  # AdamW, or ZeRO-Offload's CPU Adam from the DeepSpeed JSON
    validate_at_start = False

    def __init__(self, recipe: Recipe):
        self.recipe = recipe

    def setup(self, device: str, rank: int, world: int):
        recipe = self.recipe
        self.device, self.rank, self.world = device, rank, world
        d = recipe.data
        train_ds = load_examples(d.train, d.dna_window, need_reasoning=d.with_reasoning, need_dna=d.use_dna)
        val_ds = (
            load_examples(d.val, d.dna_window, need_reasoning=d.with_reasoning, need_dna=d.use_dna) if d.val else None
        )
        self.encoder = build_encoder(recipe, device)
        for path in (d.train, d.val):
            if path:
                require_cached(self.encoder, path, d.dna_window)
        model, tokenizer = build_model(recipe, device, self.encoder, place=zero_stage(recipe) != 3)
        self.stage1 = pretrain_summary(model, self.encoder, train_ds, recipe, device) if d.use_dna else {}
        self.processor = build_processor(recipe, tokenizer, self.encoder)
        self.train_rows = [self.processor(ex) for ex in tqdm(train_ds, desc="tokenizing train", disable=rank != 0)]
        self.val_rows = (
            [self.processor(ex) for ex in tqdm(val_ds, desc="tokenizing val", disable=rank != 0)] if val_ds else []
        )
        t = recipe.train
        if t.max_tokens:
            lengths = [len(r["input_ids"]) for r in self.train_rows]
            self.plan = TokenBudgetBatches(lengths, t.max_tokens, recipe.seed, world)
        else:
            self.sampler = DistributedSampler(
                self.train_rows, num_replicas=world, rank=rank, shuffle=True, seed=recipe.seed
            )
        return model

    def param_groups(self, model) -> list[dict]:
        return param_groups(model, self.recipe)

    def batches_per_epoch(self) -> int:
        if self.recipe.train.max_tokens:
            return len(self.plan)
        return math.ceil(len(self.sampler) / self.recipe.train.micro_batch_size)

    def batches(self, epoch: int, skip: int):
        # pin_memory: on a GPU, the step's host-to-device copies are asynchronous (non_blocking). With an
        # embedding cache, workers read it ahead of the step (on a GPU; on the CPU the step would wait for them).
        cuda = self.device.startswith("cuda")
        host_cache = self.encoder.on_host() if isinstance(self.encoder, CachedEncoder) else None
        collate = partial(
            training_batch, self.processor, cache=host_cache, encoder_batch_size=self.recipe.encoder.batch_size
        )
        workers = 2 if cuda and host_cache is not None else 0
        loading = {"collate_fn": collate, "pin_memory": cuda, "num_workers": workers}
        if self.recipe.train.max_tokens:
            return DataLoader(self.train_rows, batch_sampler=self.plan.for_rank(epoch, self.rank)[skip:], **loading)
        self.sampler.set_epoch(epoch)
        # Its own generator: starting an epoch leaves the global RNG (dropout) untouched.
        loader = DataLoader(
            self.train_rows,
            batch_size=self.recipe.train.micro_batch_size,
            sampler=self.sampler,
            generator=torch.Generator().manual_seed(self.recipe.seed + epoch),
            **loading,
        )
        return islice(loader, skip, None)

    def train_step(self, engine, batch: dict):
        loss = step_batch(engine, self.encoder, batch, self.device, self.recipe.encoder.batch_size).loss
        return loss, {"samples": batch["input_ids"].shape[0] * self.world}

    def loss_tokens(self, batch: dict) -> int:
        return batch["n_targets"]

    def train_metrics(self, counts: dict, seconds: float) -> dict:
        return {"train/samples_per_s": counts["samples"] / seconds}

    def validate(self, engine):
        if not self.val_rows:
            return None
        loss = validation_loss(engine, self.encoder, self.val_rows, self.processor, self.recipe, self.device)
        return {"val_loss": loss}, {"val/loss": loss}

    def run_report(self) -> dict:
        return self.stage1

    def checkpoint_tensors(self, engine) -> dict:
        return {n: engine.full_param(p) for n, p in engine.module.named_parameters() if p.requires_grad}

    def write_checkpoint_files(self, directory: Path, model, tensors: dict) -> None:
        model.config.save(directory)  # what rebuilds the model (DNAFusionLM.from_pretrained)
        save_adapter(model, tensors, directory / "adapter")

    def load_checkpoint_tensors(self, model, checkpoint: Path) -> None:
        load_trainable(model, checkpoint, self.weights_file)


def save_adapter(model, values: dict[str, torch.Tensor], out: Path) -> None:
    """The LoRA part alone in peft's format (for merging with peft)."""
    prefix = "llm."
    lora = {n[len(prefix) :]: v for n, v in values.items() if n.startswith(prefix) and "lora_" in n}
    # The DNA token rows are deterministic (see fusion.model.add_dna_tokens): no embeddings here.
    peft_state = get_peft_model_state_dict(model.llm, state_dict=lora, save_embedding_layers=False)
    out.mkdir()
    model.llm.peft_config["default"].save_pretrained(out)
    save_tensors({k: v.contiguous() for k, v in peft_state.items()}, out / "adapter_model.safetensors")


def train(recipe: Recipe, stop_after: int | None = None) -> Path:
    """Train and return the last checkpoint (``trainer.fit``)."""
    return fit(FineTune(recipe), stop_after)
