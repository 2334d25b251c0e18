"""Recipes: YAML files of nested sections, any field overridable as ``section.key=value``."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from dnallm.data.chat import DEFAULT_SYSTEM_PROMPT


class RecipeError(ValueError):
    pass


class RecipeBase:
    """Mixin for top-level recipe dataclasses."""

    def to_dict(self) -> dict:
        return asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(asdict(self), sort_keys=False)


@dataclass
class DataConfig:
    train: str = ""
    val: str = ""
    dna_window: int = 1024
    with_reasoning: bool = False
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    use_dna: bool = True  # False: text-only baseline, no DNA blocks in the prompt


@dataclass
class EncoderConfig:
    name_or_path: str = "BGI-HangzhouAI/Genos-1.2B"
    trust_remote_code: bool = False
    layer: int = -1
    dtype: str = "auto"
    batch_size: int = 8  # sequences per encoder forward
    cache_dir: str = ""  # embeddings from `dnallm cache-embeddings`; empty: run the encoder every step
    cache_dtype: str = "bfloat16"  # float32 | float16 | bfloat16: storage precision of cached embeddings


@dataclass
class LLMConfig:
    name_or_path: str = "Qwen/Qwen3-4B"
    trust_remote_code: bool = False
    dtype: str = "auto"
    gradient_checkpointing: bool = False


@dataclass
class LoraSection:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


@dataclass
class ProjectorConfig:
    kind: str = "mlp"  # linear | mlp | conv
    pool: int = 1  # DNA positions per LLM position
    kernel: int = 9  # conv only: bases each LLM position sees (>= pool)
    # Variant summary after the two blocks (dnallm/fusion/summary.py): none | pooled | centre | pooled+centre.
    # "none" is the published layout (two DNA blocks only).
    summary: str = "pooled+centre"
    summary_tokens: int = 4  # LLM positions the summary takes (more positions, more of the attention)
    summary_context: int = 9  # centre view: bases around the variant it reads (odd)


@dataclass
class TrainConfig:
    epochs: float = 3.0
    max_steps: int = 0  # > 0 overrides epochs
    micro_batch_size: int = 1
    grad_accum: int = 8
    lr: float = 1e-4
    projector_lr: float = 0.0  # 0: same as lr
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    max_grad_norm: float = 1.0
    log_every: int = 10
    save_every: int = 0  # optimizer steps; 0: only at the end
    keep_last: int = 2
    report_to: list = field(default_factory=list)  # tensorboard, wandb
    resume_from_checkpoint: str = ""  # path, or "auto" for the latest in output_dir


@dataclass
class EvalConfig:
    batch_size: int = 8
    max_new_tokens: int = 0  # 0: the longest training reply (reasoning, answer, end of turn) + 32


@dataclass
class Recipe(RecipeBase):
    run_name: str = "kegg"
    output_dir: str = "runs/kegg"
    seed: int = 42
    deepspeed: str = ""  # path to a DeepSpeed JSON; empty: plain PyTorch
    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    lora: LoraSection = field(default_factory=LoraSection)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


@dataclass
class GRPOConfig:
    init_from: str = ""  # the fine-tuned checkpoint (or its run directory: the latest) to start from
    group_size: int = 8  # replies sampled per prompt (G)
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    rewards: list = field(default_factory=lambda: ["correct_label", "answer_format"])  # names or module:function
    reward_weights: list = field(default_factory=list)  # one per reward; empty: all 1.0
    length_target: int = 0  # the `length` reward: replies up to this many tokens score 1
    scale_rewards: bool = True  # divide advantages by the group's reward std (False: Dr. GRPO)
    clip_eps: float = 0.2  # ratio clipped to [1 - clip_eps, 1 + clip_eps_high]
    clip_eps_high: float = 0.0  # 0: clip_eps
    kl_beta: float = 0.02  # weight of the KL penalty to the reference policy; 0: no reference forward
    updates_per_batch: int = 1  # optimizer steps on each batch of sampled replies


@dataclass
class GRPORecipe(Recipe):
    """A KEGG recipe plus the reinforcement stage's section; model sections must match ``grpo.init_from``."""

    run_name: str = "kegg-grpo"
    output_dir: str = "runs/kegg-grpo"
    grpo: GRPOConfig = field(default_factory=GRPOConfig)


def kegg_recipe_class(tree: dict):
    """The recipe class a saved KEGG ``recipe.yaml`` was written from."""
    return GRPORecipe if "grpo" in tree else Recipe


def _all_keys(cls, prefix: str = "") -> list[str]:
    keys = []
    for f in fields(cls):
        sub = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        if sub is not None and is_dataclass(sub):
            keys += _all_keys(sub, f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def _unknown(key: str, cls) -> RecipeError:
    close = difflib.get_close_matches(key, _all_keys(cls), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return RecipeError(f"unknown recipe key '{key}'{hint}")


def _coerce(value: Any, current: Any, key: str) -> Any:
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise RecipeError(f"recipe key '{key}' expects true/false, got {value!r}")
        return value
    if isinstance(current, float) and not isinstance(value, bool):
        try:
            return float(value)  # YAML reads 2e-4 (no dot) as a string
        except (TypeError, ValueError):
            raise RecipeError(f"recipe key '{key}' expects a number, got {value!r}") from None
    if isinstance(current, str) and value is None:
        return ""
    if isinstance(current, list) and isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if current is not None and not isinstance(value, type(current)):
        raise RecipeError(f"recipe key '{key}' expects {type(current).__name__}, got {value!r}")
    return value


def _set(obj, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    target = obj
    for i, part in enumerate(parts):
        if not is_dataclass(target) or part not in {f.name for f in fields(target)}:
            raise _unknown(dotted, type(obj))
        if i == len(parts) - 1:
            current = getattr(target, part)
            if is_dataclass(current):
                raise RecipeError(f"recipe key '{dotted}' is a section; set its fields, e.g. {dotted}.{fields(current)[0].name}=...")
            setattr(target, part, _coerce(value, current, dotted))
        else:
            target = getattr(target, part)


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[prefix + k] = v
    return flat


def load_recipe(path: str | Path | None = None, overrides: list[str] | tuple = (), cls=Recipe):
    """Defaults <- YAML file <- ``key=value`` overrides (values parsed as YAML scalars).

    ``cls`` is the recipe dataclass (nested dataclasses as sections); KEGG by default.
    """
    recipe = cls()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise RecipeError(f"recipe not found: {path}")
        tree = yaml.safe_load(path.read_text()) or {}
        if not isinstance(tree, dict):
            raise RecipeError(f"{path}: a recipe must be a mapping of sections")
        for key, value in _flatten(tree).items():
            _set(recipe, key, value)
    return apply_overrides(recipe, overrides)


def apply_overrides(recipe, overrides: list[str] | tuple):
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"override {item!r} must look like key=value, e.g. train.lr=2e-4")
        key, raw = item.split("=", 1)
        _set(recipe, key.strip(), yaml.safe_load(raw) if raw.strip() else "")
    return recipe


def recipe_from_dict(tree: dict, cls=Recipe):
    recipe = cls()
    for key, value in _flatten(tree).items():
        _set(recipe, key, value)
    return recipe
