"""Any Hugging Face DNA model (Genos, masked or causal) as a frozen encoder."""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from dnallm.hub import check_remote_code


def load_backbone(name_or_path: str, dtype, trust_remote_code: bool) -> nn.Module:
    """The model's trunk (``AutoModel``) from a checkpoint that may carry a task head.

    A causal-LM checkpoint's ``lm_head`` is expected to be left out, so transformers' load
    report is kept quiet; weights the trunk needs but the checkpoint lacks would stay
    randomly initialised, so they are an error.
    """
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model, info = AutoModel.from_pretrained(name_or_path, dtype=dtype, trust_remote_code=trust_remote_code, output_loading_info=True)
    finally:
        hf_logging.set_verbosity(verbosity)
    missing = sorted(info["missing_keys"]) + sorted(k for k, *_ in info["mismatched_keys"])
    if missing:
        raise ValueError(f"{name_or_path}: the checkpoint lacks or mis-shapes weights the encoder needs: {', '.join(missing[:5])}"
                         + (f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""))
    return model


class DNATokenizer:
    """The encoder's tokenizer, without special tokens: one position per token.

    Kept apart from the model so prompts can be laid out (placeholder counts) without
    loading encoder weights.
    """

    def __init__(self, name_or_path: str, trust_remote_code: bool = False):
        check_remote_code(name_or_path, trust_remote_code, "encoder.trust_remote_code")
        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def n_positions(self, seq: str) -> int:
        return len(self.tokenizer(seq, add_special_tokens=False)["input_ids"])

    def __call__(self, seqs: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(list(seqs), add_special_tokens=False)["input_ids"]
        longest = max(len(e) for e in enc)
        ids = torch.full((len(enc), longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(enc), longest), dtype=torch.bool)
        for i, e in enumerate(enc):
            ids[i, : len(e)] = torch.tensor(e, dtype=torch.long)
            mask[i, : len(e)] = True
        return {"input_ids": ids, "attention_mask": mask}


class DNAEncoder(nn.Module):
    """Frozen DNA model: ``encode(sequences) -> (embeds, mask)``.

    ``embeds`` is ``(batch, positions, hidden)`` from ``layer`` (-1: last hidden state),
    ``mask`` is ``(batch, positions)``, True where a position holds a real token.
    Weights never receive gradients and no autograd graph is kept.
    """

    def __init__(self, name_or_path: str, *, layer: int = -1, dtype=torch.float32, device: str = "cpu", trust_remote_code: bool = False, model: nn.Module | None = None):
        """``model``: an already built model to wrap instead of loading weights (benchmarks
        of published shapes from their configs); the tokenizer still comes from ``name_or_path``."""
        super().__init__()
        self.name_or_path = name_or_path
        self.layer = layer
        self.tokenizer = DNATokenizer(name_or_path, trust_remote_code)
        if model is None:
            model = load_backbone(name_or_path, dtype, trust_remote_code)
        self.model = model
        self.model.to(device)
        self.model.requires_grad_(False)
        self.model.eval()

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def train(self, mode: bool = True):
        # Frozen: dropout and MoE router noise stay off whatever the parent module does.
        return super().train(False)

    @torch.no_grad()
    def encode(self, sequences: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.tokenizer(sequences)
        ids = batch["input_ids"].to(self.device)
        mask = batch["attention_mask"].to(self.device)
        out = self.model(input_ids=ids, attention_mask=mask.long(), output_hidden_states=self.layer != -1)
        embeds = out.last_hidden_state if self.layer == -1 else out.hidden_states[self.layer]
        return embeds.detach(), mask  # (batch, positions, hidden), (batch, positions)
