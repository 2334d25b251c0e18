"""RMSNorm in one kernel, for the encoders' and the LLMs' layers alike.

transformers' eager RMSNorm is six elementwise kernels forward and about a dozen backward, four
times per decoder layer (q_norm and k_norm included). ``fused_rms_norm`` gives those layers
torch's fused RMSNorm (``aten._fused_rms_norm``, one kernel forward and one backward) where the
device has that kernel (CUDA), and elsewhere (the CPU, where torch decomposes it into the eager
operations) a function with its backward written out: the same numbers as the eager norm in fp32,
the normalisation accumulated in fp32 in half precision.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

# Norms computing weight * x / sqrt(mean(x^2) + variance_epsilon): Gemma's (1 + weight) is not one of them.
PLAIN_RMS_NORMS = (
    "Qwen3RMSNorm",
    "Qwen2RMSNorm",
    "Qwen3MoeRMSNorm",
    "LlamaRMSNorm",
    "MixtralRMSNorm",
    "MistralRMSNorm",
)


def fused_rms_norm(model: nn.Module) -> int:
    """Every plain RMSNorm layer of ``model`` computed in one kernel. -> how many.

    The layers change class (a subclass with that forward), not instance attribute: transformers
    resets the forward of its hub-kernel layers, RMSNorm among them, each time ``train()`` is called."""
    norms = [m for m in model.modules() if type(m).__name__ in PLAIN_RMS_NORMS and hasattr(m, "variance_epsilon")]
    for norm in norms:
        norm.__class__ = _fused_class(type(norm))
    return len(norms)


def rms_norm(hidden: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """weight * hidden / sqrt(mean(hidden^2) + eps) over the last dimension: torch's fused kernel
    where the device has one (CUDA), else ``RMSNorm``'s written-out backward."""
    weight = weight.to(hidden.dtype)
    if hidden.device.type in _FUSED_DEVICES:
        return torch.ops.aten._fused_rms_norm(hidden, weight.shape, weight, eps)[0]
    return RMSNorm.apply(hidden, weight, eps)


# Devices with a kernel of their own for aten._fused_rms_norm (elsewhere torch decomposes it).
_FUSED_DEVICES = frozenset(
    device
    for device in ("cuda", "xpu", "mps")
    if hasattr(torch.ops.aten, "_fused_rms_norm")
    and torch._C._dispatch_has_kernel_for_dispatch_key("aten::_fused_rms_norm", device.upper())
)


class RMSNorm(torch.autograd.Function):
    """RMSNorm accumulated in fp32, as transformers' eager layers compute it, with its backward
    written out: where torch has no fused kernel (the CPU), autograd's generic backward of the
    six elementwise operations is about twenty."""

    @staticmethod
    def forward(ctx, hidden, weight, eps: float):
        x = hidden.float() if hidden.dtype in (torch.float16, torch.bfloat16) else hidden  # accumulate in fp32
        rstd = x.pow(2).mean(-1, keepdim=True).add_(eps).rsqrt_()  # (..., 1)
        ctx.save_for_backward(hidden, weight, rstd)
        return weight * (x * rstd).to(hidden.dtype)

    @staticmethod
    def backward(ctx, grad):
        hidden, weight, rstd = ctx.saved_tensors
        normed = hidden.to(rstd.dtype) * rstd  # (..., d)
        grad_weight = None
        if ctx.needs_input_grad[1]:  # a trained norm (a frozen base's is not)
            grad_weight = (grad * normed.to(grad.dtype)).sum(tuple(range(grad.dim() - 1)))
        grad_normed = (grad * weight).to(rstd.dtype)
        grad_hidden = rstd * (grad_normed - normed * (grad_normed * normed).mean(-1, keepdim=True))
        return grad_hidden.to(hidden.dtype), grad_weight, None


def _forward(self, hidden: torch.Tensor) -> torch.Tensor:
    return rms_norm(hidden, self.weight, self.variance_epsilon)


@lru_cache(maxsize=None)
def _fused_class(cls: type) -> type:
    if cls.forward is _forward:
        return cls
    return type(cls.__name__, (cls,), {"forward": _forward, "__module__": __name__})
