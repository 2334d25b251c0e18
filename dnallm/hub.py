"""Loading from the Hugging Face hub or a local path, with remote code only on request."""

from __future__ import annotations

from transformers import PretrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING


class RemoteCodeNotAllowed(RuntimeError):
    pass


class CheckpointError(ValueError):
    """A checkpoint cannot serve as asked (weights missing, no base model, no hidden states)."""


def _own_code(config_dict: dict) -> str:
    return f"ships its own modelling code (model_type={config_dict.get('model_type')!r}, auto_map={sorted(config_dict['auto_map'])})"


def check_remote_code(name_or_path: str, trust_remote_code: bool, recipe_key: str) -> None:
    """Fail before loading when a checkpoint needs its own Python code and the recipe does not allow it."""
    if trust_remote_code:
        return
    config_dict, _ = PretrainedConfig.get_config_dict(name_or_path)
    model_type = config_dict.get("model_type")
    if "auto_map" in config_dict and model_type not in CONFIG_MAPPING:
        raise RemoteCodeNotAllowed(
            f"'{name_or_path}' {_own_code(config_dict)} which transformers does not include. Read that "
            f"code, then set {recipe_key}=true in the recipe (or on the command line) to run it."
        )


def remote_code_hint(name_or_path: str, recipe_key: str) -> str:
    """For a checkpoint whose weights do not fit transformers' class of its model_type: how to
    load it with its own code (DNABERT-2 says model_type 'bert' but ships its own layers); '' if it has none."""
    config_dict, _ = PretrainedConfig.get_config_dict(name_or_path)
    if "auto_map" not in config_dict:
        return ""
    return f"it {_own_code(config_dict)}: read that code, then set {recipe_key}=true to run it"


def resolve_dtype(name: str, device: str):
    """'auto' -> bfloat16 on CUDA, float32 on CPU; otherwise a torch dtype by name."""
    import torch

    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        dtype = getattr(torch, name)
    except AttributeError:
        raise ValueError(f"unknown dtype {name!r}; use auto, float32, bfloat16 or float16") from None
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}; use auto, float32, bfloat16 or float16")
    return dtype


def enable_activation_checkpointing(model, **kwargs) -> None:
    """Recompute activations in the backward pass (transformers' new name, or the old one)."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
