"""Fewer kernels per decoder layer: what the training step launches, and how often.

A LoRA step on a 4B model is bound by launches long before the GPU is busy: peft's LoRA
forward casts, reshapes and scales around two small matmuls for every projection, and
transformers' eager RMSNorm is six elementwise kernels. Here, each in one place:

- ``lean_lora``: each LoRA projection as ``x W^T + s (x A^T) B^T`` on 2-D rows, the scale
  and the add folded into one ``addmm``, its backward written out (``LoraLinear``: four matmuls,
  no transposes or scales of autograd's own), no per-call casts of the activations. Anything
  else peft supports (merged or disabled adapters, several adapters, DoRA, mixed batches)
  falls back to peft's forward.
- RMSNorm in one kernel: ``dnallm.norms`` (the encoders use it too).
- ``apply_liger``: Liger-Kernel's Qwen3 patches (fused RMSNorm, RoPE, SwiGLU) where it is
  installed (``pip install dnallm-fusion[liger]``) and the model is on CUDA; before peft wraps
  the model, as Liger expects.
- ``compile_layers``: ``torch.compile`` of each decoder layer (``train.compile``), with dynamic
  token counts so that a new micro-batch length does not recompile.
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F
from torch import nn


def lean_lora(model: nn.Module) -> int:
    """Give every peft ``lora.Linear`` in ``model`` the lean forward. -> how many."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    layers = [m for m in model.modules() if type(m) is LoraLinear and type(m.base_layer) is nn.Linear]
    for layer in layers:
        layer.forward = _lean_forward(layer, layer.forward)
    return len(layers)


def _lean_forward(layer, peft_forward):
    def forward(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        name = _plain_adapter(layer, x, args, kwargs)
        if name is None:
            return peft_forward(x, *args, **kwargs)
        base, lora_a, lora_b = layer.base_layer, layer.lora_A[name].weight, layer.lora_B[name].weight
        rows = x.reshape(-1, x.shape[-1])  # (tokens, in)
        dropout = layer.lora_dropout[name]
        if isinstance(dropout, nn.Identity):
            out = LoraLinear.apply(rows, base.weight, base.bias, lora_a, lora_b, layer.scaling[name])
        else:  # dropout on the adapter's input only: autograd's own backward
            out = F.linear(rows, base.weight, base.bias)  # (tokens, out)
            down = F.linear(dropout(rows), lora_a)  # (tokens, r)
            out = torch.addmm(out, down, lora_b.t(), alpha=layer.scaling[name])  # out + s * down B^T
        return out.view(*x.shape[:-1], out.shape[-1])

    return forward


class LoraLinear(torch.autograd.Function):
    """``x W^T + b + s (x A^T) B^T`` on 2-D rows, with its backward written out: four matmuls,
    where autograd's generic one adds a transpose and a scale per product and a sum per shared input.

    The operands run in one dtype: under autocast the autocast dtype, given to the adapters once per
    call (the frozen base is already in it); the gradients go back in each parameter's own dtype."""

    @staticmethod
    def forward(ctx, rows, weight, bias, lora_a, lora_b, scale: float):
        device = rows.device.type
        if torch.is_autocast_enabled(device):
            dtype = torch.get_autocast_dtype(device)
            rows, weight, lora_a, lora_b = (t.to(dtype) for t in (rows, weight, lora_a, lora_b))
            bias = None if bias is None else bias.to(dtype)
        with torch.autocast(device, enabled=False):
            down = rows @ lora_a.t()  # (tokens, r)
            out = rows @ weight.t() if bias is None else torch.addmm(bias, rows, weight.t())  # (tokens, out)
            out.addmm_(down, lora_b.t(), alpha=scale)
        ctx.save_for_backward(rows, *(_as_gathered(t) for t in (weight, lora_a, lora_b)), down)
        ctx.scale, ctx.has_bias = scale, bias is not None
        return out

    @staticmethod
    def backward(ctx, grad):  # grad: (tokens, out)
        rows, weight, lora_a, lora_b, down = ctx.saved_tensors
        need_rows, need_weight, need_bias, need_a, need_b, _ = ctx.needs_input_grad
        with torch.autocast(grad.device.type, enabled=False):
            grad = grad.to(rows.dtype)
            grad_down = grad @ lora_b  # (tokens, r), unscaled
            # s * (.)^T (.) in one addmm each: beta=0 ignores the first operand, which only gives the shape
            grad_a = torch.addmm(lora_a, grad_down.t(), rows, beta=0, alpha=ctx.scale) if need_a else None  # (r, in)
            grad_b = torch.addmm(lora_b, grad.t(), down, beta=0, alpha=ctx.scale) if need_b else None  # (out, r)
            grad_rows = torch.addmm(grad @ weight, grad_down, lora_a, alpha=ctx.scale) if need_rows else None
            grad_weight = grad.t() @ rows if need_weight else None  # a trained base (LoRA's is frozen)
            grad_bias = grad.sum(0) if ctx.has_bias and need_bias else None
        return grad_rows, grad_weight, grad_bias, grad_a, grad_b, None


def _as_gathered(param: torch.Tensor) -> torch.Tensor:
    """What the backward reads of a parameter: the parameter itself, or, for one that DeepSpeed ZeRO-3
    partitions again after the forward (its data swapped for an empty tensor), an alias of the data
    gathered for the forward, kept for the backward as autograd's own saved tensors keep it."""
    return param.detach() if hasattr(param, "ds_id") else param


def _plain_adapter(layer, x: torch.Tensor, args, kwargs) -> str | None:
    """The one active adapter when the layer is vanilla LoRA in one dtype (or under autocast),
    else None (peft's own forward handles it)."""
    if args or kwargs or layer.disable_adapters or layer.merged or len(layer.active_adapters) != 1:
        return None
    name = layer.active_adapters[0]
    if name not in layer.lora_A or name in layer.lora_variant:
        return None
    dtypes = {x.dtype, layer.base_layer.weight.dtype, layer.lora_A[name].weight.dtype, layer.lora_B[name].weight.dtype}
    if len(dtypes) > 1 and not torch.is_autocast_enabled(x.device.type):
        return None  # e.g. generation with a bf16 base and fp32 adapters: peft casts
    return name


def liger_available() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None


def apply_liger(llm: nn.Module, device: str) -> str:
    """Liger-Kernel's Qwen3 patches on ``llm`` (before peft wraps it), when it is to train on
    ``device``. -> what was done, for the run report: applied, or why not (not CUDA, not
    installed, not a Qwen3)."""
    if not device.startswith("cuda"):
        return f"skipped: {device} is not CUDA (Liger's kernels are Triton)"
    if llm.config.model_type != "qwen3":
        return f"skipped: {llm.config.model_type} is not a Qwen3"
    if not liger_available():
        return "skipped: not installed (pip install dnallm-fusion[liger])"
    from liger_kernel.transformers import apply_liger_kernel_to_qwen3

    # The LM head stays ours: reply-only logits in chunks (packing.chunked_token_logps).
    apply_liger_kernel_to_qwen3(
        rope=True, rms_norm=True, swiglu=True, cross_entropy=False, fused_linear_cross_entropy=False, model=llm
    )
    return "applied"


def compile_layers(model: nn.Module) -> int:
    """``torch.compile`` each decoder layer in place (its parameters, hooks and checkpointing
    stay the module's). ``dynamic``: token counts vary from one micro-batch to the next. -> how many."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    for layer in layers:
        layer.compile(dynamic=True)
    # Guards are per layer: a 36-layer model must not hit the recompile limit and fall back to eager.
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 2 * len(layers))
    return len(layers)
