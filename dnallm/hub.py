"""Loading from the Hugging Face hub or a local path, with remote code only on request; finding
and reading back checkpoints; the device a process runs on."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import PretrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING


class RemoteCodeNotAllowed(RuntimeError):
    pass


class CheckpointError(ValueError):
    """A checkpoint cannot serve as asked (weights missing, no base model, no hidden states)."""


def first_line(error: BaseException) -> str:
    """An exception's first line (its class name if it has no message): for one-line errors."""
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _own_code(config_dict: dict) -> str:
    return f"ships its own modelling code (model_type={config_dict.get('model_type')!r}, auto_map={sorted(config_dict['auto_map'])})"


class ModelNotFound(FileNotFoundError):
    """A recipe's base model is neither a local folder nor a loadable hub ID."""


MODEL_SECTIONS = ("encoder", "llm")  # recipe sections whose ``name_or_path`` names a base model


def _looks_like_path(name: str) -> bool:
    # Hub IDs are 'name' or 'namespace/name'; anything else can only be a folder.
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def locate_models(recipe, relative_to: str | Path | None = None) -> None:
    """Pin each base model of ``recipe`` (``encoder`` / ``llm`` ``.name_or_path``) to where it is.

    A local folder becomes an absolute path, found as given (relative to the working
    folder) or else relative to ``relative_to`` (a checkpoint), so a saved recipe works from
    any folder; a hub ID stays an ID. A path that exists nowhere raises ``ModelNotFound``
    naming the recipe key, the places looked in and the override that fixes it.
    """
    for section in MODEL_SECTIONS:
        part = getattr(recipe, section, None)
        if part is None or not getattr(part, "name_or_path", ""):
            continue
        part.name_or_path = locate_model(part.name_or_path, f"{section}.name_or_path", relative_to)


def locate_model(name_or_path: str, key: str, relative_to: str | Path | None = None, *, fix: str = "") -> str:
    """``fix``: how to name another model, where not a recipe key on the command line (say a Python argument)."""
    path = Path(name_or_path).expanduser()
    candidates = [path] if path.is_absolute() else [path, *([Path(relative_to) / path] if relative_to else [])]
    for candidate in candidates:
        if candidate.is_dir():
            return str(candidate.resolve())
    if not _looks_like_path(name_or_path):
        return name_or_path
    looked = " or ".join(os.path.abspath(c) for c in candidates)
    raise ModelNotFound(
        f"{key}={name_or_path!r}: no such model folder (looked for {looked}); "
        + (fix or f"pass {key}=PATH (or a hub ID) on the command line")
    )


def check_remote_code(name_or_path: str, trust_remote_code: bool, recipe_key: str) -> None:
    """Fail before loading when a checkpoint needs its own Python code and the recipe does not allow it.

    The model's config is read here first, so a model that cannot be found is reported here,
    naming its recipe key (the section of ``recipe_key``).
    """
    try:
        config_dict, _ = PretrainedConfig.get_config_dict(name_or_path)
    except (OSError, ValueError) as e:
        key = f"{recipe_key.rsplit('.', 1)[0]}.name_or_path"
        reason = first_line(e)
        raise ModelNotFound(
            f"{key}={name_or_path!r}: cannot load this model ({reason}); "
            f"pass {key}=PATH (a local folder or a hub ID) on the command line"
        ) from None
    if trust_remote_code:
        return
    model_type = config_dict.get("model_type")
    if "auto_map" in config_dict and model_type not in CONFIG_MAPPING:
        raise RemoteCodeNotAllowed(
            f"'{name_or_path}' {_own_code(config_dict)} which transformers does not include. Read that "
            f"code, then set {recipe_key}=true in the recipe (or on the command line) to run it."
        )


def remote_code_files(name_or_path: str) -> list[str]:
    """The Python files a model's ``auto_map`` (its config's and its tokenizer's) would import:
    ``folder/module.py`` for a local folder, ``repo--module.py`` / ``module.py`` names otherwise;
    [] for a model that ships no code."""
    maps = []
    for name in ("config.json", "tokenizer_config.json"):
        path = Path(name_or_path) / name
        if path.is_file():
            try:
                maps.append(json.loads(path.read_text()).get("auto_map") or {})
            except (ValueError, AttributeError):
                continue
    if not maps and not Path(name_or_path).is_dir():
        try:
            maps.append(PretrainedConfig.get_config_dict(name_or_path)[0].get("auto_map") or {})
        except (OSError, ValueError):
            return []
    modules = set()
    for auto_map in maps:
        for ref in auto_map.values():
            for item in ref if isinstance(ref, (list, tuple)) else [ref]:
                if isinstance(item, str) and "." in item:
                    modules.add(item.rsplit(".", 1)[0].replace("--", "/") + ".py")
    local = Path(name_or_path).is_dir()
    return sorted(str(Path(name_or_path) / m) if local and "/" not in m else m for m in modules)


TRUST_KEYS = tuple(f"{section}.trust_remote_code" for section in MODEL_SECTIONS)
TRUST_FIX = "read that code, then load with --trust-remote-code (trust_remote_code=True in Python)"


def user_trust(recipe, checkpoint: Path, trust_remote_code: bool, overrides=(), code_at: dict | None = None) -> None:
    """Whether a checkpoint's base models may run their own code is the user's word at load time,
    never the checkpoint's: ``--trust-remote-code`` (``trust_remote_code=True``) lets each model run
    the code the checkpoint was trained with, an explicit ``encoder.trust_remote_code=...`` override
    decides for that model. Without either, a checkpoint that says its model runs its own code stops
    here, naming the files that would run; otherwise the model loads with none. Sets the recipe's
    (or config's) ``*.trust_remote_code`` to what may run. Call after ``locate_models``. ``code_at``:
    {key: folder} where a model's code is, when not at its ``name_or_path`` (a saved trunk)."""
    given = {item.split("=", 1)[0].strip() for item in overrides}
    for key in TRUST_KEYS:
        section = getattr(recipe, key.split(".")[0], None)
        if section is None or key in given or not hasattr(section, "trust_remote_code"):
            continue
        if section.trust_remote_code and not trust_remote_code:
            files = remote_code_files(str((code_at or {}).get(key, section.name_or_path)))
            if files:
                raise RemoteCodeNotAllowed(
                    f"{checkpoint}: its recipe sets {key}, so loading it would run {', '.join(files)}; {TRUST_FIX}"
                )
            section.trust_remote_code = False


def remote_code_hint(name_or_path: str, recipe_key: str) -> str:
    """For a checkpoint whose weights do not fit transformers' class of its model_type: how to
    load it with its own code (DNABERT-2 says model_type 'bert' but ships its own layers); '' if it has none."""
    config_dict, _ = PretrainedConfig.get_config_dict(name_or_path)
    if "auto_map" not in config_dict:
        return ""
    return f"it {_own_code(config_dict)}: read that code, then set {recipe_key}=true to run it"


def resolve_dtype(name: str, device: str):
    """'auto' -> bfloat16 on CUDA, float32 on CPU; otherwise a torch dtype by name."""
    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        dtype = getattr(torch, name)
    except AttributeError:
        raise ValueError(f"unknown dtype {name!r}; use auto, float32, bfloat16 or float16") from None
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}; use auto, float32, bfloat16 or float16")
    return dtype


def enable_activation_checkpointing(model, every_n_layers: int = 1, **kwargs) -> None:
    """Recompute activations in the backward pass (transformers' new name, or the old one),
    in every ``every_n_layers``-th decoder layer (the others keep their activations)."""
    if hasattr(model, "activation_checkpointing_enable"):
        every = {"every_n_layers": every_n_layers} if every_n_layers > 1 else {}  # a keyword of later releases
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs, **every)
        return
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if every_n_layers > 1:
        from transformers.modeling_layers import GradientCheckpointingLayer

        layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
        for index, layer in enumerate(layers):
            layer.gradient_checkpointing = index % every_n_layers == 0


# ---- checkpoints on disk -----------------------------------------------------------------------

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def list_checkpoints(run_dir: str | Path, marker: str = "trainable.safetensors") -> list[Path]:
    """Complete ``checkpoint-<step>`` directories (holding ``marker``) of a run, oldest first."""
    run_dir = Path(run_dir)
    found = []
    if run_dir.is_dir():
        for p in run_dir.iterdir():
            m = CHECKPOINT_RE.match(p.name)
            if m and (p / marker).is_file():
                found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def resolve_checkpoint(path: str | Path, marker: str = "trainable.safetensors") -> Path:
    """A checkpoint directory, or the latest complete one inside a run directory."""
    path = Path(path)
    if (path / marker).is_file():
        return path
    found = list_checkpoints(path, marker)
    if not found:
        _refuse_other_kind(path, marker)
        raise FileNotFoundError(f"no checkpoint found at {path} (expected {marker} or checkpoint-*/ inside)")
    return found[-1]


# The weights file each kind of checkpoint holds, and what the kind is for.
CHECKPOINT_KINDS = {
    "trainable.safetensors": "a KEGG fusion checkpoint (dnallm train or grpo; for eval, annotate, chat, serve)",
    "model.safetensors": "a coverage-track checkpoint (dnallm train-tracks; for predict-tracks, eval-tracks)",
}


def _refuse_other_kind(path: Path, marker: str) -> None:
    """A checkpoint of the other kind is named as such, not reported as missing."""
    for other, kind in CHECKPOINT_KINDS.items():
        if other != marker and ((path / other).is_file() or list_checkpoints(path, other)):
            wanted = CHECKPOINT_KINDS.get(marker, f"a checkpoint holding {marker}")
            raise CheckpointError(f"{path} is {kind}; this command needs {wanted}")


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """A checkpoint's safetensors file, or a ``CheckpointError`` naming it and what is wrong."""
    from safetensors import SafetensorError

    try:
        return load_file(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing from the checkpoint; restore it, or use another checkpoint") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{path}: not a readable safetensors file ({first_line(e)}); restore it, or use another checkpoint"
        ) from None


def load_trainable(model, checkpoint: str | Path, file: str = "trainable.safetensors") -> None:
    """Load trainable values into a freshly built model; every trainable tensor must be present."""
    checkpoint = Path(checkpoint)
    values = read_tensors(checkpoint / file)
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = expected - values.keys(), values.keys() - expected
    if missing or unexpected:
        raise CheckpointError(
            f"{checkpoint}: trainable tensors do not match the model built from its recipe "
            f"(missing: {sorted(missing)[:5]}, unexpected: {sorted(unexpected)[:5]})"
        )
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in values.items():
            if params[name].shape != value.shape:
                raise CheckpointError(
                    f"{checkpoint}: '{name}' has shape {tuple(value.shape)}, model expects {tuple(params[name].shape)}"
                )
            params[name].copy_(value.to(params[name].dtype))


# ---- device ------------------------------------------------------------------------------------


def distributed_env() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) as set by deepspeed, torchrun or accelerate launchers."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def pick_device() -> str:
    """This process's GPU (its launcher's local rank) when there is one, else the CPU."""
    if torch.cuda.is_available() and os.environ.get("DS_ACCELERATOR", "cuda") != "cpu":
        _, local_rank, _ = distributed_env()
        torch.cuda.set_device(local_rank)
        # What stays fp32 on the GPU (trainable projector and head, master weights' matmuls) uses TF32.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return f"cuda:{local_rank}"
    return "cpu"


def autocast(device: str):
    """bf16 autocast on a GPU (mixed precision over the bf16 bases), none on the CPU (fp32).
    Its state is per thread: enter it in the thread that runs the model."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda"))
