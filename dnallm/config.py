"""Recipes: YAML files of nested sections, any field overridable as ``section.key=value``."""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, ClassVar

import yaml

from dnallm.data.chat import DEFAULT_SYSTEM_PROMPT
from dnallm.data.dna import CONTIG_RULES


class RecipeError(ValueError):
    pass


def check(default, *, ge=None, gt=None, le=None, lt=None, choices=(), joined=""):
    """A recipe field with a range or a fixed set of choices, checked when a recipe is loaded,
    before any weights (``check_fields``). ``joined``: the value is choices joined by this
    separator (``pooled+kmers``); a list value is checked item by item."""
    limits = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"range": limits, "choices": tuple(choices)})
    return field(default=default, metadata={"range": limits, "choices": tuple(choices), "joined": joined})


DTYPES = ("auto", "float32", "bfloat16", "float16")  # a base model's precision; auto: bf16 on a GPU, fp32 on CPU
SUMMARY_VIEWS = ("pooled", "aligned", "kmers", "centre")  # the variant summary's views (dnallm/fusion/summary.py)
DEFAULT_SUMMARY = "pooled+aligned+kmers"  # what every recipe reads of a pair unless it says otherwise


_RANGE_TEXT = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
_RANGE_OK = {"ge": lambda v, x: v >= x, "gt": lambda v, x: v > x, "le": lambda v, x: v <= x, "lt": lambda v, x: v < x}


# ---- shared by every objective --------------------------------------------------------------


@dataclass
class TrainConfig:
    """The ``train`` section of every objective: schedule, batch, checkpoints, resume."""

    epochs: float = check(3.0, gt=0)  # passes over the training data (max_steps > 0 overrides)
    max_steps: int = check(0, ge=0)  # > 0 overrides epochs
    micro_batch_size: int = check(1, ge=1)  # samples per forward on each rank
    global_batch_size: int = check(0, ge=0)  # micro_batch_size x grad_accum x ranks; 0: use grad_accum
    grad_accum: int = check(8, ge=1)  # used when global_batch_size is 0
    lr: float = check(1e-4, gt=0)  # peak learning rate (linear warm-up, then cosine decay)
    weight_decay: float = check(0.0, ge=0)  # AdamW weight decay (LoRA weights; the projector gets none)
    warmup_ratio: float = check(0.05, ge=0, le=1)  # fraction of the steps spent warming the learning rate up
    max_grad_norm: float = check(1.0, ge=0)  # 0: no clipping
    log_every: int = check(10, ge=1)  # optimizer steps between log lines
    save_every: int = check(0, ge=0)  # optimizer steps; 0: only at the end
    keep_last: int = check(2, ge=0)  # checkpoints of this run kept; 0: all
    report_to: list = check([], choices=("tensorboard", "wandb"))  # experiment trackers
    resume_from_checkpoint: str = ""  # path, or "auto" for the latest in output_dir
    overwrite_output_dir: bool = False  # a fresh run may replace another run's checkpoints in output_dir
    # resume even where the model or data keys (or a data file's content) differ from the checkpoint's
    allow_recipe_change: bool = False


# Keys a resumed run may set otherwise than the run it continues (they change neither the model nor
# the data it trains on); a key ending in "." stands for its whole section. Any other difference stops
# the resume (``train.checkpoint.check_resume``) unless train.allow_recipe_change is set.
RESUMABLE_KEYS = (
    "run_name",
    "output_dir",
    "deepspeed",  # ZeRO stage and GPU count: checkpoints are stored un-partitioned
    "train.epochs",
    "train.max_steps",
    "train.log_every",
    "train.save_every",
    "train.keep_last",
    "train.report_to",
    "train.resume_from_checkpoint",
    "train.overwrite_output_dir",
    "train.allow_recipe_change",
    "train.compile",
    "train.logits_chunk",
    "encoder.cache_dir",  # cached and live embeddings are the same numbers
    "encoder.batch_size",
    "llm.liger",
    "llm.gradient_checkpointing",  # recomputed activations are the same numbers
    "encoder.gradient_checkpointing",
    "data.num_workers",
    "eval.",
)


@dataclass
class RecipeBase:
    """Fields of every recipe; an objective's recipe adds its own sections (and its ``train``).

    ``run_name`` and ``output_dir`` default to the objective's name (``objective``).
    """

    objective: ClassVar[str] = "run"
    # Keys of a shared section this objective does not read: refused when set, left out of its
    # recipe.yaml and of docs/recipe.md.
    unused_keys: ClassVar[tuple[str, ...]] = ()
    run_name: str = ""  # name of the run in logs and trackers; default: the objective
    output_dir: str = ""  # where checkpoints and logs go; default: runs/<objective>
    seed: int = 42  # seeds Python, NumPy and torch (every rank), and the data order
    deepspeed: str = ""  # path to a DeepSpeed JSON; empty: plain PyTorch

    def __post_init__(self):
        self.run_name = self.run_name or self.objective
        self.output_dir = self.output_dir or f"runs/{self.objective}"

    def to_dict(self) -> dict:
        tree = asdict(self)
        for key in self.unused_keys:
            section, name = key.split(".")
            del tree[section][name]
        return tree

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ---- KEGG: DNA encoder -> projector -> LoRA LLM ---------------------------------------------


@dataclass
class DataConfig:
    train: str = ""  # training records (KEGG-format JSONL)
    val: str = ""  # validation records, scored at each checkpoint; empty: none
    dna_window: int = check(1024, ge=1)  # bases of each sequence read, centred on the variant
    with_reasoning: bool = False  # train on the reasoning before 'Answer:' too
    system_prompt: str = DEFAULT_SYSTEM_PROMPT  # the chat's system turn (default: the BioReason prompt)
    use_dna: bool = True  # False: text-only baseline, no DNA blocks in the prompt


@dataclass
class EncoderModel:
    """The frozen DNA encoder the fusion model reads (also a section of ``DNAFusionConfig``)."""

    name_or_path: str = "BGI-HangzhouAI/Genos-1.2B"  # hub ID or local folder
    trust_remote_code: bool = False  # run the checkpoint's own modelling code
    layer: int = -1  # hidden layer whose states are read (-1: the last)
    dtype: str = check("auto", choices=DTYPES)  # precision of the encoder's forward


@dataclass
class EncoderConfig(EncoderModel):
    """The ``encoder`` section of every recipe: the fusion model's frozen encoder, or the trunk the
    coverage objective fine-tunes (each recipe names the keys it does not read: ``unused_keys``)."""

    batch_size: int = check(8, ge=1)  # sequences per encoder forward
    cache_dir: str = ""  # embeddings from `dnallm cache-embeddings`; empty: run the encoder every step
    cache_dtype: str = check("bfloat16", choices=DTYPES[1:])  # storage precision of cached embeddings
    gradient_checkpointing: bool = False  # recompute the trained trunk's activations in the backward pass


@dataclass
class LLMModel:
    """The causal LM the fusion model tunes (also a section of ``DNAFusionConfig``)."""

    name_or_path: str = "Qwen/Qwen3-4B"  # hub ID or local folder
    trust_remote_code: bool = False  # run the checkpoint's own modelling code
    dtype: str = check("auto", choices=DTYPES)  # precision of the frozen base weights


@dataclass
class LLMConfig(LLMModel):
    # Recompute activations in the backward: false, true (every decoder layer) or N (every N-th layer,
    # the others keep theirs: less recompute where memory allows; docs/gpu.md has the measured choices).
    gradient_checkpointing: bool | int = field(default=False, metadata={"bool_or_int": True})
    # Liger-Kernel's fused Qwen3 kernels when installed and training on CUDA (pip install dnallm-fusion[liger])
    liger: bool = True


@dataclass
class LoraSection:
    r: int = check(16, ge=1)  # LoRA rank
    alpha: int = check(32, gt=0)  # LoRA scale numerator (scale = alpha / r)
    dropout: float = check(0.05, ge=0, lt=1)  # dropout on the LoRA input
    # LLM linear layers that get LoRA adapters
    target_modules: list = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


@dataclass
class ProjectorConfig:
    kind: str = check("mlp", choices=("linear", "mlp", "conv"))  # how encoder states become LLM embeddings
    pool: int = check(1, ge=1)  # bases per LLM position
    kernel: int = check(9, ge=1)  # conv only: bases each LLM position sees (>= pool)
    # Variant summary after the two blocks (dnallm/fusion/summary.py): none, or views joined with "+" from
    # pooled | aligned | kmers | centre. "none" is the published layout (two DNA blocks only).
    summary: str = check(DEFAULT_SUMMARY, choices=("none", *SUMMARY_VIEWS), joined="+")
    summary_tokens: int = check(16, ge=1)  # LLM positions the summary takes (more positions, more of the attention)
    summary_context: int = check(17, ge=1)  # bases read around the change: flanks of context // 2 (odd)
    # Stage 1: epochs the summary's pair encoder trains as a classifier of the training answers before the LLM
    # trains on it (0: from random weights). The DNA-only baseline head's code; seconds on cached embeddings.
    pretrain_epochs: int = check(30, ge=0)


@dataclass
class FusionTrainConfig(TrainConfig):
    projector_lr: float = check(0.0, ge=0)  # 0: same as lr
    # The summary's pair encoder, trained in stage 1, then learns at this fraction of the projector's rate: the
    # LLM's first gradients are noise to it and would undo stage 1 (docs/eval.md). 1: no difference.
    summary_lr_scale: float = check(0.1, gt=0, le=1)
    packing: bool = False  # a micro-batch's samples in one row, attention within each sample: no padding
    logits: str = check("reply", choices=("reply", "full"))  # reply: LM head on answer tokens, chunked | full: all
    logits_chunk: int = check(1024, ge=1)  # positions per LM-head chunk (logits="reply")
    # > 0: each micro-batch takes samples until their tokens would pass this budget (packed rows; micro_batch_size
    # is then unused): micro-batches of thousands of tokens whatever the sample lengths (dnallm/train/batching.py)
    max_tokens: int = check(0, ge=0)
    compile: bool = False  # torch.compile each decoder layer (dynamic token counts)


@dataclass
class EvalConfig:
    batch_size: int = check(8, ge=1)  # prompts per generation batch (eval, annotate, predict)
    max_new_tokens: int = check(0, ge=0)  # 0: the longest training reply (reasoning, answer, end of turn) + 32
    # How a reply's answer is scored: label (accuracy, macro F1, the label set from the training answers),
    # number (the first number after 'Answer:': Pearson, Spearman, MAE), text (exact match, token F1).
    score: str = check("label", choices=("label", "number", "text"))


@dataclass
class Recipe(RecipeBase):
    objective: ClassVar[str] = "kegg"
    unused_keys: ClassVar[tuple[str, ...]] = ("encoder.gradient_checkpointing",)  # the encoder stays frozen
    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    lora: LoraSection = field(default_factory=LoraSection)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    train: FusionTrainConfig = field(default_factory=FusionTrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


@dataclass
class GRPOConfig:
    init_from: str = ""  # the fine-tuned checkpoint (or its run directory: the latest) to start from
    group_size: int = check(8, ge=2)  # replies sampled per prompt (G); a group compares at least 2
    temperature: float = check(1.0, gt=0)  # sampling temperature
    top_p: float = check(1.0, gt=0, le=1)  # nucleus sampling mass
    max_new_tokens: int = check(64, ge=1)  # reply length limit
    rewards: list = field(default_factory=lambda: ["correct_label", "answer_format"])  # names or module:function
    reward_weights: list = field(default_factory=list)  # one per reward; empty: all 1.0
    length_target: int = check(0, ge=0)  # the `length` reward: replies up to this many tokens score 1
    scale_rewards: bool = True  # divide advantages by the group's reward std (False: Dr. GRPO)
    clip_eps: float = check(0.2, gt=0)  # ratio clipped to [1 - clip_eps, 1 + clip_eps_high]
    clip_eps_high: float = check(0.0, ge=0)  # 0: clip_eps
    kl_beta: float = check(0.02, ge=0)  # weight of the KL penalty to the reference policy; 0: no reference forward
    updates_per_batch: int = check(1, ge=1)  # optimizer steps on each batch of sampled replies


@dataclass
class GRPORecipe(Recipe):
    """A KEGG recipe plus the reinforcement stage's section; model sections must match ``grpo.init_from``."""

    run_name: str = "kegg-grpo"
    output_dir: str = "runs/kegg-grpo"
    grpo: GRPOConfig = field(default_factory=GRPOConfig)


def kegg_recipe_class(tree: dict):
    """The recipe class a saved KEGG ``recipe.yaml`` was written from."""
    return GRPORecipe if "grpo" in tree else Recipe


# ---- coverage tracks: DNA trunk + conv head on RNA-seq bigWigs ------------------------------

AUTOSOMES = [f"chr{i}" for i in range(1, 23)]


@dataclass
class TrackDataConfig:
    fasta: str = ""  # reference genome (FASTA, indexed or bgzipped)
    tracks: str = ""  # track sheet (YAML or TSV)
    bigwig_contigs: str = check("same", choices=CONTIG_RULES)  # FASTA -> bigWig contig names (add_chr: 1 -> chr1)
    strict_contigs: bool = True  # every bigWig contig must be in the FASTA
    chroms: list = field(default_factory=lambda: list(AUTOSOMES))  # contigs to train on
    val_chroms: list = field(default_factory=list)  # contigs held out for validation
    test_chroms: list = field(default_factory=list)  # contigs held out for evaluation
    val_regions: str = ""  # BED of held-out regions (on top of, or instead of, val_chroms)
    test_regions: str = ""  # BED of regions held out for evaluation
    window: int = check(32768, ge=1)  # bases per training window
    overlap: int = check(16384, ge=0)  # bases shared by consecutive windows
    max_n_fraction: float = check(0.5, ge=0, le=1)  # skip windows with more N than this
    rc_augment: bool = True  # train on reverse complements too (strands swapped)
    num_workers: int = check(2, ge=0)  # data-loading worker processes


@dataclass
class TargetConfig:
    power: float = check(0.75, gt=0)  # targets raised to this power (< 1 compresses high coverage)
    clip: float = check(384.0, ge=0)  # soft clip threshold in transformed units; 0: none


@dataclass
class HeadConfig:
    channels: list = field(default_factory=lambda: [256, 64])  # output channels of each conv block of the head
    kernel_size: int = check(5, ge=1)  # conv kernel width of the head, in bases
    dropout: float = check(0.1, ge=0, lt=1)  # dropout in the head


@dataclass
class TrackEvalConfig:
    batch_size: int = check(4, ge=1)  # windows per forward at prediction
    max_val_windows: int = check(512, ge=0)  # validation at each checkpoint: N held-out windows, evenly spaced
    validate_at_start: bool = True  # also before the first step: the untrained baseline
    stitch: str = check("centre", choices=("centre", "mean"))  # how overlapping windows join
    bin_size: int = check(32, ge=0)  # binned Pearson; 0: none


@dataclass
class CoverageRecipe(RecipeBase):
    objective: ClassVar[str] = "coverage"
    # The whole trunk trains in fp32 on its last layer; no embedding cache.
    unused_keys: ClassVar[tuple[str, ...]] = tuple(
        f"encoder.{name}" for name in ("layer", "dtype", "batch_size", "cache_dir", "cache_dtype")
    )
    data: TrackDataConfig = field(default_factory=TrackDataConfig)
    target: TargetConfig = field(default_factory=TargetConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=60.0, global_batch_size=256, grad_accum=1))
    eval: TrackEvalConfig = field(default_factory=TrackEvalConfig)


# ---- loading ---------------------------------------------------------------------------------


def get_key(obj, dotted: str) -> Any:
    """The value of a dotted key (``projector.kind``)."""
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def all_keys(obj, prefix: str = "") -> list[str]:
    """Every dotted key of a recipe (or any nested dataclass), in declaration order."""
    keys = []
    for f in fields(obj):
        value = getattr(obj, f.name)
        keys += all_keys(value, f"{prefix}{f.name}.") if is_dataclass(value) else [prefix + f.name]
    return [key for key in keys if key not in getattr(obj, "unused_keys", ())]


def _unknown(key: str, cls) -> RecipeError:
    close = difflib.get_close_matches(key, all_keys(cls()), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return RecipeError(f"unknown recipe key '{key}'{hint}")


def _coerce(value: Any, current: Any, key: str, bool_or_int: bool = False) -> Any:
    if bool_or_int:
        if isinstance(value, bool) or (isinstance(value, int) and value >= 1):
            return value
        raise RecipeError(
            f"recipe key '{key}' expects true, false or a whole number >= 1 (every N-th layer), got {value!r}"
        )
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


def set_key(obj, dotted: str, value: Any) -> None:
    if dotted in getattr(obj, "unused_keys", ()):
        raise RecipeError(f"recipe key '{dotted}' is not read by {obj.objective} recipes; remove it")
    parts = dotted.split(".")
    target = obj
    for i, part in enumerate(parts):
        if not is_dataclass(target) or part not in {f.name for f in fields(target)}:
            raise _unknown(dotted, type(obj))
        if i == len(parts) - 1:
            current = getattr(target, part)
            if is_dataclass(current):
                raise RecipeError(
                    f"recipe key '{dotted}' is a section; set its fields, e.g. {dotted}.{fields(current)[0].name}=..."
                )
            bool_or_int = next(f for f in fields(target) if f.name == part).metadata.get("bool_or_int", False)
            setattr(target, part, _coerce(value, current, dotted, bool_or_int))
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


def _check_choice(key: str, value, choices: tuple, joined: str) -> None:
    items = value if isinstance(value, list) else (value.split(joined) if joined else [value])
    bad = [v for v in items if v not in choices]
    # "none" stands alone, and a view is named once
    if bad or (joined and len(items) > 1 and (choices[0] in items or len(set(items)) < len(items))):
        how = (
            f"one of {', '.join(choices[1:])} or several joined with '{joined}', or {choices[0]}"
            if joined
            else f"one of {', '.join(choices)}"
        )
        close = difflib.get_close_matches(str(bad[0]), choices, n=1) if bad else []
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise RecipeError(f"recipe key '{key}' must be {how}, got {value!r}{hint}")


def check_fields(obj, prefix: str = "") -> None:
    """Every field declared with ``check(...)`` inside its range and among its choices, or a
    ``RecipeError`` naming the key."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        if is_dataclass(value):
            check_fields(value, f"{prefix}{f.name}.")
            continue
        for kind, limit in f.metadata.get("range", {}).items():
            if not _RANGE_OK[kind](value, limit):  # NaN fails every comparison
                raise RecipeError(f"recipe key '{prefix}{f.name}' must be {_RANGE_TEXT[kind]} {limit}, got {value!r}")
        if f.metadata.get("choices"):
            _check_choice(prefix + f.name, value, f.metadata["choices"], f.metadata.get("joined", ""))


def _parse_yaml(text: str, where: str):
    """YAML, or a ``RecipeError`` naming ``where``, the line and column, and what is wrong there."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(e, "problem", None) or type(e).__name__
        raise RecipeError(f"{where}: invalid YAML{at}: {what}") from None


def load_recipe(path: str | Path | None = None, overrides: list[str] | tuple = (), cls=Recipe):
    """Defaults <- YAML file <- ``key=value`` overrides (values parsed as YAML scalars), checked.

    ``cls`` is the recipe dataclass (nested dataclasses as sections); KEGG by default.
    Ranges are checked and a named DeepSpeed file must exist, before any model loads.
    """
    recipe = cls()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise RecipeError(f"recipe not found: {path}")
        tree = _parse_yaml(path.read_text(), str(path)) or {}
        if not isinstance(tree, dict):
            raise RecipeError(f"{path}: a recipe must be a mapping of sections")
        for key, value in _flatten(tree).items():
            set_key(recipe, key, value)
    apply_overrides(recipe, overrides)
    if recipe.deepspeed and not Path(recipe.deepspeed).is_file():
        raise RecipeError(
            f"recipe key 'deepspeed': no such file {recipe.deepspeed} (e.g. deepspeed=recipes/deepspeed/zero2.json)"
        )
    return recipe


def apply_overrides(recipe, overrides: list[str] | tuple):
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"override {item!r} must look like key=value, e.g. train.lr=2e-4")
        key, raw = item.split("=", 1)
        set_key(recipe, key.strip(), _parse_yaml(raw, f"override {item!r}") if raw.strip() else "")
    check_fields(recipe)
    return recipe


def recipe_from_dict(tree: dict, cls=Recipe):
    recipe = cls()
    for key, value in _flatten(tree).items():
        set_key(recipe, key, value)
    check_fields(recipe)
    return recipe


def load_coverage_recipe(path=None, overrides=()) -> CoverageRecipe:
    return load_recipe(path, overrides, cls=CoverageRecipe)
