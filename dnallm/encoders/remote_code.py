"""What a checkpoint's own modelling code, written for transformers 4, needs from transformers 5.

Published DNA models (DNABERT-2, Nucleotide Transformer v2, Caduceus) ship code that relies
on four things transformers 5 changed. Each is restored here by what the code does, never by
the model's name, and only for code loaded with ``trust_remote_code``:

- **Config defaults**: transformers 4's ``PretrainedConfig`` set ``pad_token_id``,
  ``is_decoder`` and a dozen more on every config; a config class written against it reads
  them without setting them (``fill_config_defaults``).
- **Removed helpers**: ``transformers.pytorch_utils.find_pruneable_heads_and_indices`` and the
  ``pytorch_utils`` helpers ``transformers.modeling_utils`` re-exported (imported at module load),
  and the model methods ``get_extended_attention_mask``, ``invert_attention_mask``,
  ``get_head_mask`` (called in ``forward``) (``removed_helpers``, ``add_removed_methods``).
- **Tensors made at init**: transformers 5 builds the model on the meta device and then fills
  what the checkpoint holds. A plain tensor attribute made in ``__init__`` (DNABERT-2's ALiBi
  table) stays on meta, with no data, or ``__init__`` fails outright where it mixes tensors made
  on meta with tensors made on the CPU (DNABERT-2's published ``rebuild_alibi_tensor``); a
  non-persistent buffer (DNABERT-2's ``token_type_ids``) is allocated but never written, unless
  the class's ``_init_weights`` sets it again, which transformers-4 code does not
  (``builds_on_meta``, ``loadable``).
- **post_init**: transformers 5 reads attributes that ``post_init()`` sets (``all_tied_weights_keys``);
  a class that never calls it cannot be loaded (``loadable``).

And one error made readable: a package the code imports but this environment lacks
(``missing_package``).
"""

from __future__ import annotations

import contextlib
import re
import sys

import torch
from transformers import PreTrainedModel, modeling_utils, pytorch_utils

# Attributes transformers 4's PretrainedConfig.__init__ gave every config (its defaults), which
# transformers 5 no longer sets. Left out: generation settings (an encoder never generates) and
# tie_word_embeddings (tying concerns only the heads an encoder drops, and transformers 5 reads
# a missing one as False).
V4_CONFIG_DEFAULTS = {
    "pad_token_id": None,
    "bos_token_id": None,
    "eos_token_id": None,
    "sep_token_id": None,
    "decoder_start_token_id": None,
    "is_decoder": False,
    "add_cross_attention": False,
    "cross_attention_hidden_size": None,
    "tie_encoder_decoder": False,
    "output_attentions": False,
    "torchscript": False,
    "use_bfloat16": False,
    "pruned_heads": {},
    "finetuning_task": None,
    "tokenizer_class": None,
    "prefix": None,
    "task_specific_params": None,
}

# Packages that install and run only on a CUDA machine: import name -> pip name.
CUDA_ONLY = {"mamba_ssm": "mamba-ssm", "causal_conv1d": "causal-conv1d", "flash_attn": "flash-attn"}


def fill_config_defaults(config) -> None:
    """Give ``config`` the transformers-4 defaults it lacks (values it has are kept)."""
    for name, value in V4_CONFIG_DEFAULTS.items():
        if not hasattr(config, name):
            setattr(config, name, value.copy() if isinstance(value, dict) else value)


def find_pruneable_heads_and_indices(heads, n_heads: int, head_size: int, already_pruned_heads: set):
    """transformers 4's helper: -> (heads still to prune, indices of the rows of a fused head
    projection to keep), counting head numbers as they were before any pruning."""
    mask = torch.ones(n_heads, head_size)
    heads = set(heads) - already_pruned_heads
    for head in heads:
        # the position of this head once the heads pruned before it are gone
        mask[head - sum(1 for pruned in already_pruned_heads if pruned < head)] = 0
    keep = mask.view(-1).eq(1)  # (n_heads * head_size,)
    return heads, torch.arange(len(keep))[keep].long()


@contextlib.contextmanager
def removed_helpers():
    """Module-level helpers transformers 5 removed, present while a checkpoint's code is imported
    (``from transformers.pytorch_utils import ...`` binds them once, at import)."""
    removed = _removed_functions()
    added = [(module, name) for module, helpers in removed.items() for name in helpers if not hasattr(module, name)]
    for module, name in added:
        setattr(module, name, removed[module][name])
    try:
        yield
    finally:
        for module, name in added:
            delattr(module, name)


def _removed_functions() -> dict:
    """module -> {name: function} that transformers 4 exported there; ``modeling_utils`` re-exported
    the ``pytorch_utils`` helpers, and older code imports them from it."""
    pruning = {"find_pruneable_heads_and_indices": find_pruneable_heads_and_indices}
    reexported = {
        **pruning,
        "prune_linear_layer": pytorch_utils.prune_linear_layer,
        "apply_chunking_to_forward": pytorch_utils.apply_chunking_to_forward,
    }
    return {pytorch_utils: pruning, modeling_utils: reexported}


def get_extended_attention_mask(self, attention_mask, input_shape, device=None, dtype=None):
    """(batch, length) or (batch, from, to) mask of 1/0 -> additive (batch, 1, from or 1, to) bias:
    0 where attended, the dtype's minimum where not; causal as well for a decoder config."""
    dtype = dtype or self.dtype
    if attention_mask.dim() == 3:
        extended = attention_mask[:, None, :, :]
    elif getattr(self.config, "is_decoder", False):
        length = input_shape[-1]
        causal = torch.ones(length, length, device=attention_mask.device).tril()  # (length, length)
        extended = causal[None, None, :, :] * attention_mask[:, None, None, :]
    else:
        extended = attention_mask[:, None, None, :]
    return (1.0 - extended.to(dtype)) * torch.finfo(dtype).min


def invert_attention_mask(self, encoder_attention_mask):
    """An encoder's (batch, length) or (batch, from, to) mask -> additive bias, never causal."""
    mask = encoder_attention_mask
    extended = mask[:, None, :, :] if mask.dim() == 3 else mask[:, None, None, :]
    return (1.0 - extended.to(self.dtype)) * torch.finfo(self.dtype).min


def get_head_mask(self, head_mask, num_hidden_layers: int, is_attention_chunked: bool = False):
    """None -> one None per layer; a (heads,) or (layers, heads) mask -> (layers, batch, heads, from, to)."""
    if head_mask is None:
        return [None] * num_hidden_layers
    if head_mask.dim() == 1:
        head_mask = head_mask[None, None, :, None, None].expand(num_hidden_layers, -1, -1, -1, -1)
    elif head_mask.dim() == 2:
        head_mask = head_mask[:, None, :, None, None]
    head_mask = head_mask.to(self.dtype)
    return head_mask.unsqueeze(-1) if is_attention_chunked else head_mask


_REMOVED_METHODS = {
    "get_extended_attention_mask": get_extended_attention_mask,
    "invert_attention_mask": invert_attention_mask,
    "get_head_mask": get_head_mask,
}


def add_removed_methods(model_class: type) -> None:
    """Give the model classes of ``model_class``'s module (the trunk inside a task class is one of
    them) the methods transformers 5 removed that they lack. Only the checkpoint's own classes change."""
    module = model_class.__module__
    own_classes = [
        value
        for value in vars(sys.modules[module]).values()
        if isinstance(value, type) and issubclass(value, PreTrainedModel) and value.__module__ == module
    ]
    for own_class in own_classes:
        for name, method in _REMOVED_METHODS.items():
            if not hasattr(own_class, name):
                setattr(own_class, name, method)


def _non_persistent_buffers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}.{name}".lstrip("."): module.get_buffer(name)
        for prefix, module in model.named_modules()
        for name in module._non_persistent_buffers_set
    }


def tensors_made_at_init(model: torch.nn.Module) -> list[str]:
    """Tensors that ``__init__`` made and a meta-device build loses, as ``module.name``: plain
    tensor attributes left on the meta device, and non-persistent buffers (never in a checkpoint)."""
    plain = [
        f"{prefix}.{name}".lstrip(".")
        for prefix, module in model.named_modules()
        for name, value in vars(module).items()
        if isinstance(value, torch.Tensor) and value.is_meta
    ]
    return plain + list(_non_persistent_buffers(model))


def builds_on_meta(model_class: type, config) -> bool:
    """Whether ``model_class(config)`` built on the meta device, as transformers 5 builds it,
    keeps everything its ``__init__`` makes. Building there allocates nothing, so trying costs
    nothing; code that cannot be built there is built on the CPU, as transformers 4 did."""
    try:
        with torch.device("meta"):
            model = loadable(model_class, on_meta=True)(config)
    except (RuntimeError, NotImplementedError):  # tensors of two devices, or an op meta cannot run
        return False
    return not tensors_made_at_init(model)


def loadable(model_class: type, on_meta: bool) -> type:
    """``model_class`` as ``from_pretrained`` can load it: ``post_init()`` run where its
    ``__init__`` skipped it, and built off the meta device unless ``on_meta``. After loading, call
    ``restore_buffers`` and give the instance back its own class (``model.__class__ = model_class``)."""

    class Loadable(model_class):
        # Non-persistent buffers as __init__ made them, off the meta device: transformers 5 swaps
        # every one for an unwritten tensor once the model is built.
        buffers_made_at_init: dict[str, torch.Tensor] = {}

        @classmethod
        def get_init_context(cls, *args, **kwargs):
            contexts = super().get_init_context(*args, **kwargs)
            if on_meta:
                return contexts
            return [c for c in contexts if not (isinstance(c, torch.device) and c.type == "meta")]

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if not hasattr(self, "all_tied_weights_keys"):  # set by post_init
                self.post_init()
            if not on_meta:
                made = _non_persistent_buffers(self)
                type(self).buffers_made_at_init = {key: buffer.detach().clone() for key, buffer in made.items()}

    Loadable.__name__ = Loadable.__qualname__ = model_class.__name__
    return Loadable


@torch.no_grad()
def restore_buffers(model: torch.nn.Module, loaded_as: type) -> None:
    """Write the non-persistent buffers ``loaded_as`` (a ``loadable`` class) made at init back into ``model``."""
    for key, value in loaded_as.buffers_made_at_init.items():
        model.get_buffer(key).copy_(value)


def missing_package(error: ImportError) -> str | None:
    """What a failed import of a checkpoint's code lacks, and how to install it: "needs mamba_ssm,
    which is not installed (pip install mamba-ssm; it needs a CUDA GPU ...)"; None if it names no package."""
    listed = re.search(r"not found in your environment: (.+?)\. Run", str(error))  # transformers' check_imports
    names = listed.group(1).split(", ") if listed else [error.name] if error.name else []
    if not names:
        return None
    tops = [name.split(".")[0] for name in names]
    install = "pip install " + " ".join(CUDA_ONLY.get(top, top.replace("_", "-")) for top in tops)
    cuda = "; it needs a CUDA GPU and a CUDA build of torch" if any(top in CUDA_ONLY for top in tops) else ""
    return f"needs {', '.join(tops)}, which {'is' if len(tops) == 1 else 'are'} not installed ({install}{cuda})"
