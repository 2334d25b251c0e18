"""What the fusion model is: the one description it is built from, saved with every checkpoint.

``DNAFusionConfig`` holds the encoder, the LLM, LoRA, the projector and variant summary,
the DNA window, the prompt layout, the logits mode and the added tokens. It is checked
when built (ranges and fixed choices, the recipe's own checks), written as
``fusion_config.json`` beside the weights, and read back by ``DNAFusionLM.from_pretrained``.

Its keys are the recipe's (``projector.kind``, ``lora.r``, ...); the few top-level ones name
the recipe key they come from (``RECIPE_KEYS``), so a recipe, a command-line override and a
saved config speak one vocabulary.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

from dnallm.config import (
    EncoderModel,
    LLMModel,
    LoraSection,
    ProjectorConfig,
    RecipeError,
    all_keys,
    check,
    check_fields,
    get_key,
    recipe_from_dict,
    set_key,
)
from dnallm.data.chat import DEFAULT_SYSTEM_PROMPT, DNA_TOKENS

CONFIG_FILE = "fusion_config.json"


@dataclass
class DNAFusionConfig:
    encoder: EncoderModel = field(default_factory=EncoderModel)
    llm: LLMModel = field(default_factory=LLMModel)
    lora: LoraSection = field(default_factory=LoraSection)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    dna_window: int = check(1024, ge=1)  # bases per sequence the encoder reads
    use_dna: bool = True  # False: a text-only model (no DNA blocks in its prompts)
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    with_reasoning: bool = False  # replies carry reasoning before "Answer:"
    logits: str = check("reply", choices=("reply", "full"))  # LM head on labelled tokens only, or everywhere
    logits_chunk: int = check(1024, ge=1)  # positions per LM-head chunk (logits="reply")
    tokens: list = field(default_factory=lambda: list(DNA_TOKENS))  # added to the LLM's tokenizer

    # Top-level keys and the recipe key each is read from; a section's keys are the recipe's own.
    RECIPE_KEYS: ClassVar[dict[str, str]] = {
        "dna_window": "data.dna_window",
        "use_dna": "data.use_dna",
        "system_prompt": "data.system_prompt",
        "with_reasoning": "data.with_reasoning",
        "logits": "train.logits",
        "logits_chunk": "train.logits_chunk",
    }

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Ranges and fixed choices of every field, then what fields must agree on."""
        check_fields(self)
        if list(self.tokens) != list(DNA_TOKENS):
            raise RecipeError(
                f"fusion config: tokens must be {list(DNA_TOKENS)} (what this version lays DNA out with), "
                f"got {self.tokens}"
            )
        p = self.projector
        if p.kind == "conv" and p.kernel < p.pool:
            raise RecipeError(
                f"recipe key 'projector.kernel' ({p.kernel}) must be >= projector.pool ({p.pool}) "
                "so that no base is skipped"
            )

    @classmethod
    def keys(cls) -> list[str]:
        """The config's own dotted keys (``projector.kind``, ``dna_window``, ...)."""
        return [k for k in all_keys(cls()) if k != "tokens"]

    @classmethod
    def recipe_key(cls, key: str) -> str:
        return cls.RECIPE_KEYS.get(key, key)

    @classmethod
    def from_recipe(cls, recipe) -> "DNAFusionConfig":
        """The model a (KEGG or GRPO) recipe describes."""
        return cls.from_dict({}).updated_from(recipe, [cls.recipe_key(key) for key in cls.keys()])

    def updated_from(self, recipe, recipe_keys) -> "DNAFusionConfig":
        """Take the values of ``recipe_keys`` (recipe spelling) that this config holds from ``recipe``; checked."""
        wanted = set(recipe_keys)
        for key in self.keys():
            if self.recipe_key(key) in wanted:
                set_key(self, key, get_key(recipe, self.recipe_key(key)))
        self.validate()
        return self

    def differences(self, other: "DNAFusionConfig", ignore: tuple = ()) -> list[tuple[str, object, object]]:
        """(recipe key, ours, theirs) for every key where the two models differ."""
        return [
            (self.recipe_key(key), get_key(self, key), get_key(other, key))
            for key in self.keys()
            if key not in ignore and get_key(self, key) != get_key(other, key)
        ]

    # ---- reading and writing ----------------------------------------------------------------

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, tree: dict) -> "DNAFusionConfig":
        """A config from its JSON form; keys checked as a recipe's are (unknown keys named)."""
        config = recipe_from_dict(tree, cls=cls)
        config.validate()
        return config

    def save(self, directory: str | Path) -> Path:
        """Write ``fusion_config.json`` into ``directory`` (a checkpoint being assembled)."""
        path = Path(directory) / CONFIG_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "DNAFusionConfig":
        path = Path(directory) / CONFIG_FILE
        try:
            tree = json.loads(path.read_text())
        except ValueError as e:
            raise RecipeError(f"{path}: not valid JSON ({e}); restore it from the run's other checkpoints") from None
        try:
            return cls.from_dict(tree)
        except RecipeError as e:
            raise RecipeError(f"{path}: {e}") from None

    def positions(self, dna_tokenizer=None) -> tuple[int, int, int]:
        """``projector.pool``, ``projector.kernel`` and ``projector.summary_context`` (bases) as
        encoder positions: the one place where bases become tokens (``DNATokenizer.to_tokens``:
        k bases per k-mer token, the measured mean for BPE, at least 1; the summary context
        stays odd, centre plus equal flanks). Without a DNA tokenizer one position is one base
        (Genos); a text-only model has no encoder: (1, 1, 1)."""
        p = self.projector
        if not self.use_dna:
            return 1, 1, 1
        if dna_tokenizer is None:
            return p.pool, p.kernel, p.summary_context | 1
        pool = dna_tokenizer.to_tokens(p.pool)
        context = dna_tokenizer.to_tokens(p.summary_context) | 1
        return pool, max(pool, dna_tokenizer.to_tokens(p.kernel)), context
