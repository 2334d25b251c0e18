"""RMSNorm in one kernel, for the encoders' and the LLMs' layers alike.

transformers' eager RMSNorm is six elementwise kernels forward and about a dozen backward, four
times per decoder layer (q_norm and k_norm included). ``fused_rms_norm`` gives those layers
torch's fused RMSNorm (``aten._fused_rms_norm``, one kernel forward and one backward, on CPU and
CUDA; ``F.rms_norm`` where a torch lacks it): the same numbers as the eager norm in fp32, the
normalisation accumulated in fp32 in half precision.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
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
    """weight * hidden / sqrt(mean(hidden^2) + eps) over the last dimension, one kernel."""
    weight = weight.to(hidden.dtype)
    if _FUSED is not None:
        return _FUSED(hidden, weight.shape, weight, eps)[0]
    return F.rms_norm(hidden, weight.shape, weight, eps)


_FUSED = getattr(torch.ops.aten, "_fused_rms_norm", None)


def _forward(self, hidden: torch.Tensor) -> torch.Tensor:
    return rms_norm(hidden, self.weight, self.variance_epsilon)


@lru_cache(maxsize=None)
def _fused_class(cls: type) -> type:
    if cls.forward is _forward:
        return cls
    return type(cls.__name__, (cls,), {"forward": _forward, "__module__": __name__})
