"""A trainable DNA trunk (Genos) with a convolutional head: per-base coverage for each track.

    input_ids (B, L) -> trunk -> hidden (B, L, H)
      -> Conv1d H->256, BatchNorm, GELU, dropout
      -> Conv1d 256->64, BatchNorm, GELU, dropout
      -> Conv1d 64->T,  BatchNorm
      -> * per-track scale -> Softplus -> (B, L, T) >= 0

One output per token, so the trunk's tokenizer must give one token per base. The trunk is loaded
as every encoder trunk is (``load_backbone``), but left trainable.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from transformers import AutoTokenizer

from dnallm.data.coverage import base_lookup
from dnallm.data.dna import ALPHABET
from dnallm.encoders.hf import build_backbone, load_backbone, run_unpadded, takes_attention_mask
from dnallm.hub import check_remote_code, enable_activation_checkpointing


class BatchNormFP32(nn.BatchNorm1d):
    """BatchNorm computed in fp32 whatever the dtype of its input and parameters.

    Under DeepSpeed's bf16 the parameters become bf16 while the running statistics stay
    fp32 (buffers are not cast): kernels then see three dtypes, and statistics accumulated
    in bf16 would lose their precision. Here input, parameters and statistics meet in fp32
    and the output goes back to the input's dtype. The state-dict keys are BatchNorm1d's.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
        momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        use_batch = self.training or not self.track_running_stats
        stats = (self.running_mean, self.running_var) if self.track_running_stats else (None, None)
        for stat in stats:
            if stat is not None and stat.dtype != torch.float32:
                stat.data = stat.data.float()
        out = nn.functional.batch_norm(
            x.float(),
            *stats,
            None if self.weight is None else self.weight.float(),
            None if self.bias is None else self.bias.float(),
            use_batch,
            momentum if self.training else 0.0,
            self.eps,
        )
        return out.to(x.dtype)


class ConvBlock(nn.Sequential):
    """Conv1d over positions -> BatchNorm (in fp32) -> (GELU -> dropout); 'same' padding keeps the length."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, dropout: float, last: bool = False):
        layers = [nn.Conv1d(c_in, c_out, kernel_size, padding=kernel_size // 2), BatchNormFP32(c_out)]
        if not last:
            layers += [nn.GELU(), nn.Dropout(dropout)]
        super().__init__(*layers)


class CoverageHead(nn.Module):
    """(B, L, H) hidden states -> (B, L, T) non-negative coverage in the transformed space."""

    def __init__(
        self, hidden_size: int, n_tracks: int, channels=(256, 64), kernel_size: int = 5, dropout: float = 0.1
    ):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"head kernel_size must be odd to keep positions aligned, got {kernel_size}")
        sizes = [hidden_size, *channels]
        blocks = [ConvBlock(a, b, kernel_size, dropout) for a, b in zip(sizes, sizes[1:])]
        self.blocks = nn.Sequential(*blocks, ConvBlock(sizes[-1], n_tracks, kernel_size, dropout, last=True))
        self.track_scale = nn.Parameter(torch.ones(n_tracks))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is not None:
            hidden = hidden * mask.unsqueeze(-1).to(hidden.dtype)  # padding must not leak into the convolutions
        x = self.blocks(hidden.transpose(1, 2))  # (B, T, L)
        return nn.functional.softplus(x.transpose(1, 2) * self.track_scale)  # (B, L, T)


@dataclass
class CoverageOutput:
    pred: torch.Tensor  # (B, L, T), transformed space
    loss: torch.Tensor | None = None


@torch.no_grad()
def trunk_width(trunk: nn.Module) -> int:
    """The trunk's output width, read from a one-token forward pass: families name it differently
    in their configs (``hidden_size``, ``d_model``)."""
    ids = torch.zeros(1, 1, dtype=torch.long, device=next(trunk.parameters()).device)
    return trunk(input_ids=ids)[0].shape[-1]


class CoverageModel(nn.Module):
    """Trunk + head, trained end to end; ``loss`` is the MSE on transformed targets over real positions."""

    def __init__(self, trunk: nn.Module, head: CoverageHead):
        super().__init__()
        self.trunk = trunk
        self.head = head
        # No KV cache while training, for trunks that keep one; own code may take no use_cache at all.
        takes_cache = "use_cache" in inspect.signature(trunk.forward).parameters
        self.trunk_kwargs = {"use_cache": False} if takes_cache else {}
        self.takes_mask = takes_attention_mask(trunk)  # HyenaDNA and Caduceus take none

    @classmethod
    def from_config(
        cls,
        config,
        n_tracks: int,
        *,
        channels=(256, 64),
        kernel_size: int = 5,
        dropout: float = 0.1,
        trust_remote_code: bool = False,
    ):
        """Random trunk weights of ``config``'s shape (benchmarks, or before loading a checkpoint),
        built as ``from_pretrained`` loads them (``build_backbone``)."""
        trunk = build_backbone(config, trust_remote_code)
        return cls(trunk, CoverageHead(trunk_width(trunk), n_tracks, channels, kernel_size, dropout))

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        n_tracks: int,
        *,
        trust_remote_code: bool = False,
        channels=(256, 64),
        kernel_size: int = 5,
        dropout: float = 0.1,
    ):
        """Pre-trained trunk (fp32 master weights for full fine-tuning) and a fresh head. The trunk
        comes from ``load_backbone``, as a frozen encoder's does: heads and pooler left out, and a
        checkpoint's own modelling code made loadable under the installed transformers."""
        trunk = load_backbone(name_or_path, torch.float32, trust_remote_code)
        return cls(trunk, CoverageHead(trunk_width(trunk), n_tracks, channels, kernel_size, dropout))

    @property
    def n_tracks(self) -> int:
        return self.head.track_scale.numel()

    def enable_gradient_checkpointing(self) -> None:
        # Non-reentrant: works with inputs that need no grad and under ZeRO-3.
        enable_activation_checkpointing(self.trunk, use_reentrant=False)
        self.trunk.config.use_cache = False

    def trunk_hidden(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L) ids and mask -> (B, L, H): the trunk's first output (last_hidden_state of a
        ModelOutput, or element 0 of own code's tuple); a trunk without a mask never sees padding."""
        if self.takes_mask:
            return self.trunk(input_ids=input_ids, attention_mask=mask.long(), **self.trunk_kwargs)[0]
        return run_unpadded(lambda ids: self.trunk(input_ids=ids, **self.trunk_kwargs)[0], input_ids, mask)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, targets: torch.Tensor | None = None
    ) -> CoverageOutput:
        mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        hidden = self.trunk_hidden(input_ids, mask)  # (B, L, H)
        pred = self.head(hidden, mask).float()  # (B, L, T)
        loss = None
        if targets is not None:
            weight = mask.unsqueeze(-1).float()  # (B, L, 1)
            loss = ((pred - targets.float()) ** 2 * weight).sum() / (weight.sum() * pred.shape[-1]).clamp(min=1)
        return CoverageOutput(pred, loss)


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    check_remote_code(name_or_path, trust_remote_code, "encoder.trust_remote_code")
    return AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)


def base_token_ids(tokenizer) -> np.ndarray:
    """ASCII -> token id table for A, C, G, T, N, checked against the tokenizer itself.

    The head predicts one value per token; a tokenizer that merges bases (k-mers, BPE)
    cannot give per-base coverage and is refused here.
    """
    probe = "ACGTNNTGCAAACCGGTT"
    ids = tokenizer(probe, add_special_tokens=False)["input_ids"]
    if len(ids) != len(probe):
        raise ValueError(
            f"the encoder tokenizer turns {len(probe)} bases into {len(ids)} tokens; per-base coverage needs one token per base"
        )
    token_ids = {}
    for base, token_id in zip(probe, ids):
        if token_ids.setdefault(base, token_id) != token_id:
            raise ValueError(
                f"the encoder tokenizer maps base {base} to different tokens by context; per-base coverage needs a fixed token per base"
            )
    unk = tokenizer.unk_token_id
    missing = [b for b in ALPHABET if token_ids.get(b) is None or (token_ids[b] == unk and unk is not None)]
    if missing:
        raise ValueError(f"the encoder tokenizer has no token for base(s) {', '.join(missing)}")
    return base_lookup({b: token_ids[b] for b in ALPHABET})


def pad_token_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
