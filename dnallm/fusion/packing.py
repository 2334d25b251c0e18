"""Padding-free batches and logits only where they are needed.

**Packing.** ``pack_rows`` lays a micro-batch's samples end to end in one row: position ids
restart at every sample and ``cu_seq_lens`` (cumulative lengths, as flash-attention's varlen
kernels take them) marks where each sample starts. The attention implementation
``dnallm_packed`` (registered with transformers' ``AttentionInterface``) runs causal attention
inside each sample only, so no token attends across samples and no position is padding;
given no ``cu_seq_lens`` (generation, padded batches) it is transformers' SDPA. On a GPU the
whole packed row is one flash-attention varlen call (``torch.nn.attention.varlen``), else one
SDPA call per sample (``packed_kernel`` says which). An LLM that already runs a varlen
flash-attention implementation (``flash_attention_2``, from its config) keeps it: it reads
the same ``cu_seq_lens``.

**Logits where the loss is.** ``chunked_token_logps`` applies the LM head to the chosen
hidden states only (the reply tokens), a chunk at a time under activation checkpointing,
so the ``tokens x vocabulary`` matrix (151,936 words for Qwen3) never exists in full,
neither in the forward nor in the backward.
"""

from __future__ import annotations

import inspect
import warnings
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from dnallm.data.chat import IGNORE_INDEX

PACKED_ATTENTION = "dnallm_packed"
PACKING_ATTENTION = (PACKED_ATTENTION, "flash_attention_2", "flash_attention_3")  # read cu_seq_lens


def packed_attention(
    module,
    query,
    key,
    value,
    attention_mask,
    dropout: float = 0.0,
    scaling: float | None = None,
    cu_seq_lens_q: torch.Tensor | None = None,
    max_length_q: int | None = None,
    **kwargs,
):
    """Causal attention within each packed sample. query (1, heads, tokens, dim) -> (1, tokens, heads, dim)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if cu_seq_lens_q is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    if query.shape[0] != 1:
        raise ValueError(f"packed attention expects one packed row, got a batch of {query.shape[0]}")
    groups = getattr(module, "num_key_value_groups", 1)
    dropout = dropout if module.training else 0.0
    blocker = varlen_blocker(query, dropout)
    if not blocker:
        return varlen_causal(query, key, value, cu_seq_lens_q, scaling, groups, max_length_q), None
    if query.is_cuda and USE_VARLEN:
        warn_per_sample(blocker)
    return per_sample_causal(query, key, value, cu_seq_lens_q, scaling, groups, dropout), None


USE_VARLEN = True  # False: the per-sample SDPA loop everywhere (for comparisons)


def packed_kernel(query: torch.Tensor, dropout: float = 0.0) -> str:
    """``varlen``: one flash-attention call over the packed row (CUDA, half precision, no
    attention dropout, a torch with ``torch.nn.attention.varlen``); else ``per-sample``: one
    SDPA call per sample. On a GPU the loop costs a kernel launch, and with cuDNN's SDPA a
    graph lookup of about a millisecond of CPU time, per sample, layer and pass."""
    return "per-sample" if varlen_blocker(query, dropout) else "varlen"


def varlen_blocker(query: torch.Tensor, dropout: float = 0.0) -> str:
    """Why the packed row cannot be one varlen call ('' when it can)."""
    if not USE_VARLEN:
        return "USE_VARLEN is off"
    if not query.is_cuda:
        return "not on a GPU"
    if query.dtype not in (torch.float16, torch.bfloat16):
        return f"{str(query.dtype).removeprefix('torch.')} activations (varlen needs float16 or bfloat16)"
    if dropout:
        return f"attention dropout {dropout} (varlen runs without)"
    if query.shape[-1] > 256:
        return f"head size {query.shape[-1]} (varlen takes up to 256)"
    if _varlen_api() is None:
        return f"torch {torch.__version__} has no torch.nn.attention.varlen"
    return ""


@lru_cache(maxsize=None)
def warn_per_sample(blocker: str) -> None:
    """Once per reason: a GPU running the per-sample loop is slower than it need be, so say so."""
    warnings.warn(
        f"packed attention on the GPU runs one SDPA call per sample, not one varlen call: {blocker}",
        RuntimeWarning,
        stacklevel=3,
    )


@lru_cache(maxsize=1)
def _varlen_api():
    """(varlen_attn, its keyword names), or None where this torch lacks it. Its keywords differ
    across torch releases (``is_causal`` then ``window_size``; ``enable_gqa`` later)."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn, frozenset(inspect.signature(varlen_attn).parameters)


def varlen_causal(
    query, key, value, cu_seq_lens: torch.Tensor, scaling: float | None, groups: int, longest: int | None = None
) -> torch.Tensor:
    """Causal attention within each sample in one varlen call: (1, heads, tokens, dim) in,
    (1, tokens, heads, dim) out. ``longest``: the longest sample (``packed_kwargs`` computes it
    once per forward; read here from ``cu_seq_lens`` it would cost a device sync per layer)."""
    varlen_attn, params = _varlen_api()
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # (tokens, heads, dim)
    kwargs = {"scale": scaling}
    if "window_size" in params:
        kwargs["window_size"] = (-1, 0)
    else:
        kwargs["is_causal"] = True
    if groups > 1:
        if "enable_gqa" in params:
            kwargs["enable_gqa"] = True
        else:
            k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
    cu = cu_seq_lens.to(device=query.device, dtype=torch.int32)
    if longest is None:
        longest = int((cu[1:] - cu[:-1]).max())
    return varlen_attn(q, k, v, cu, cu, longest, longest, **kwargs).unsqueeze(0)


def per_sample_causal(
    query, key, value, cu_seq_lens: torch.Tensor, scaling: float | None, groups: int, dropout: float = 0.0
) -> torch.Tensor:
    """The same attention as ``varlen_causal``, one SDPA call per sample (any device, any dtype)."""
    bounds = cu_seq_lens.tolist()
    parts = [
        F.scaled_dot_product_attention(
            query[:, :, s:e],
            key[:, :, s:e],
            value[:, :, s:e],
            dropout_p=dropout,
            is_causal=True,
            scale=scaling,
            enable_gqa=groups > 1,
        )
        for s, e in zip(bounds[:-1], bounds[1:])
    ]
    return torch.cat(parts, 2).transpose(1, 2).contiguous()


def register() -> None:
    """Make ``dnallm_packed`` an attention implementation transformers knows (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(PACKED_ATTENTION, packed_attention)
    AttentionMaskInterface.register(PACKED_ATTENTION, sdpa_mask)


def pack_rows(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor | int]:
    """Processor rows -> one packed row: ``input_ids``, ``labels``, ``position_ids`` (1, tokens),
    ``attention_mask`` (all ones, for counting), ``cu_seq_lens`` (samples + 1,) and
    ``max_length``, the longest sample as a host int (read from a device tensor in the step it
    would cost a host sync per forward)."""
    lengths = [len(r["input_ids"]) for r in rows]
    ids = [t for r in rows for t in r["input_ids"]]
    # A sample's first token is never a target: in the packed row it would be the previous sample's.
    labels = [IGNORE_INDEX if i == 0 else t for r in rows for i, t in enumerate(r["labels"])]
    positions = [p for n in lengths for p in range(n)]
    cu = torch.tensor([0, *lengths], dtype=torch.int32).cumsum(0, dtype=torch.int32)
    return {
        "input_ids": torch.tensor([ids], dtype=torch.long),
        "labels": torch.tensor([labels], dtype=torch.long),
        "position_ids": torch.tensor([positions], dtype=torch.long),
        "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
        "cu_seq_lens": cu,
        "max_length": max(lengths),
    }


# Masks given as a dict are used as given: no (tokens x tokens) mask is built, attention is causal.
CAUSAL_ONLY = {"full_attention": None, "sliding_attention": None}


def packed_kwargs(cu_seq_lens: torch.Tensor, longest: int | None = None) -> dict:
    """What the decoder needs for a packed row: no padding mask, and the sample boundaries.
    ``longest``: the longest sample (``pack_rows``' ``max_length``); None reads it from
    ``cu_seq_lens``, a host sync when that tensor is on a GPU."""
    if longest is None:
        longest = int((cu_seq_lens[1:] - cu_seq_lens[:-1]).max())
    return {
        "attention_mask": CAUSAL_ONLY,  # within each sample: cu_seq_lens
        "cu_seq_lens_q": cu_seq_lens,
        "cu_seq_lens_k": cu_seq_lens,
        "max_length_q": longest,
        "max_length_k": longest,
    }


def _chunk_logps(hidden: torch.Tensor, targets: torch.Tensor, head: torch.nn.Module) -> torch.Tensor:
    logits = head(hidden).float()
    return logits.gather(-1, targets[:, None]).squeeze(-1) - logits.logsumexp(-1)


def chunked_token_logps(
    hidden: torch.Tensor, targets: torch.Tensor, head: torch.nn.Module, chunk: int
) -> torch.Tensor:
    """log p(target) for each row of ``hidden`` (n, width) under the LM ``head``: (n,), fp32.

    ``chunk`` rows at a time; with gradients on, each chunk's logits are recomputed in the
    backward rather than kept, so memory holds one chunk of logits at most.
    """
    if hidden.shape[0] == 0:
        return hidden.new_zeros(0, dtype=torch.float32)
    out = []
    for start in range(0, hidden.shape[0], chunk):
        h, t = hidden[start : start + chunk], targets[start : start + chunk]
        if torch.is_grad_enabled() and hidden.requires_grad:
            out.append(checkpoint(_chunk_logps, h, t, head, use_reentrant=False))
        else:
            out.append(_chunk_logps(h, t, head))
    return torch.cat(out)


def reply_targets(labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Where the loss is, found on the host before the batch moves (a boolean mask applied on
    the device would wait for the device to count its elements): ``reply_index`` (n,), the
    flat positions in (batch x tokens) whose next token is labelled, and ``reply_targets`` (n,),
    those next tokens."""
    batch, tokens = labels.shape
    keep = labels[:, 1:] != IGNORE_INDEX  # (batch, tokens - 1)
    rows, cols = keep.nonzero(as_tuple=True)
    return {"reply_index": rows * tokens + cols, "reply_targets": labels[rows, cols + 1]}


def shifted_targets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Position t predicts token t + 1: -> (mask over positions (batch, tokens - 1), their targets)."""
    nxt = labels[:, 1:]
    keep = nxt != IGNORE_INDEX
    return keep, nxt[keep]
