"""Tiny checkpoints with the real architectures, built locally and saved like hub models.

- ``genos``: a Genos-shaped MoE encoder (Mixtral-style blocks: 8 experts, top-2 routing,
  grouped-query attention, RoPE base 5e7) with a character-level DNA tokenizer.
- ``qwen3``: a ``Qwen3Config`` causal LM with a byte-level BPE tokenizer that carries
  Qwen's chat special tokens and a Qwen3-style chat template.

Both are written with ``save_pretrained`` (safetensors) and loaded back by the same
``from_pretrained`` calls that load ``BGI-HangzhouAI/Genos-1.2B`` or ``Qwen/Qwen3-4B``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoTokenizer,
    MixtralConfig,
    MixtralForCausalLM,
    PreTrainedTokenizerFast,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from dnallm.data.chat import DEFAULT_SYSTEM_PROMPT
from dnallm.data.synthetic import DISEASES, QUESTION
from dnallm.io import atomic_directory

DNA_VOCAB = ["<pad>", "<unk>", "<s>", "</s>", "<mask>", "A", "C", "G", "T", "N"]

QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
QWEN_ADDED_TOKENS = ["<tool_call>", "</tool_call>", "<think>", "</think>"]

# Qwen3's template, reduced to what dnallm uses: plain turns, and an empty think block
# after the assistant header when thinking is disabled.
QWEN3_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)

_CORPUS = [
    DEFAULT_SYSTEM_PROMPT,
    QUESTION,
    "Given this context, what is the biological effect of this allele, specifically what disease does this contribute to?",
    "Chromosome Number: Network Definition of the pathway: Genes in the pathway:",
    "Reference sequence: Variant sequence: Answer:",
    "Step 1: The substitution at position on chromosome occurs in the gene, which encodes a protein.",
] + [f"Answer: {d}" for d in DISEASES]


def build_dna_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(DNA_VOCAB)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        mask_token="<mask>",
        model_max_length=1_048_576,
    )


def build_text_tokenizer(vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=QWEN_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=QWEN_SPECIAL_TOKENS[1:],
        model_max_length=131072,
    )
    fast.add_tokens(QWEN_ADDED_TOKENS)
    fast.chat_template = QWEN3_CHAT_TEMPLATE
    return fast


# Genos's embedding tables are padded past its handful of DNA tokens: 128 rows for
# Genos-1.2B, 256 for Genos-10B (the model cards); the tiny stand-in pads like 1.2B.
GENOS_VOCAB = {"tiny": 128, "1.2b": 128, "10b": 256}


def genos_config(size: str, vocab_size: int | None = None) -> MixtralConfig:
    """Genos shapes (12 layers, 16 heads, 8 KV groups, 8 experts top-2) or a tiny one;
    ``vocab_size`` defaults to the padded size of that shape."""
    shapes = {
        "tiny": dict(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
        ),
        "1.2b": dict(
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=12,
            num_attention_heads=16,
            num_key_value_heads=8,
        ),
        "10b": dict(
            hidden_size=4096,
            intermediate_size=8192,
            num_hidden_layers=12,
            num_attention_heads=16,
            num_key_value_heads=8,
        ),
    }[size]
    return MixtralConfig(
        vocab_size=vocab_size or GENOS_VOCAB[size],
        num_local_experts=8,
        num_experts_per_tok=2,
        rope_theta=5e7,
        max_position_embeddings=1_048_576,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        tie_word_embeddings=False,
        **shapes,
    )


def qwen3_config(size: str, vocab_size: int, pad_id: int, eos_id: int) -> Qwen3Config:
    """Published Qwen3 shapes or a tiny one."""
    shapes = {
        "tiny": dict(
            hidden_size=64,
            intermediate_size=192,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            tie_word_embeddings=True,
        ),
        "1.7b": dict(
            hidden_size=2048,
            intermediate_size=6144,
            num_hidden_layers=28,
            num_attention_heads=16,
            num_key_value_heads=8,
            head_dim=128,
            tie_word_embeddings=True,
        ),
        "4b": dict(
            hidden_size=2560,
            intermediate_size=9728,
            num_hidden_layers=36,
            num_attention_heads=32,
            num_key_value_heads=8,
            head_dim=128,
            tie_word_embeddings=True,
        ),
        "8b": dict(
            hidden_size=4096,
            intermediate_size=12288,
            num_hidden_layers=36,
            num_attention_heads=32,
            num_key_value_heads=8,
            head_dim=128,
            tie_word_embeddings=False,
        ),
    }[size]
    return Qwen3Config(
        vocab_size=vocab_size,
        max_position_embeddings=40960,
        rope_theta=1_000_000,
        pad_token_id=pad_id,
        eos_token_id=eos_id,
        bos_token_id=None,
        **shapes,
    )


def make_tiny_genos(out: str | Path, seed: int = 0) -> Path:
    tokenizer = build_dna_tokenizer()
    torch.manual_seed(seed)
    # Weights drawn for the real tokens first, then the spare rows: the padding leaves every
    # trained-on weight as it was drawn without it.
    model = MixtralForCausalLM(genos_config("tiny", len(tokenizer)))
    model.resize_token_embeddings(GENOS_VOCAB["tiny"], mean_resizing=False)
    with atomic_directory(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return Path(out)


# Embedding rows of every published Qwen3: the 151,669 tokens plus spare rows.
QWEN3_VOCAB = 151_936


def make_tiny_qwen3(out: str | Path, seed: int = 0, tokenizer: str | Path | None = None) -> Path:
    """``tokenizer``: a folder with Qwen3's own tokenizer; the model then gets Qwen3's
    ``QWEN3_VOCAB`` rows (the DNA tokens fit in the spare ones). Without it, a small BPE
    tokenizer and no spare rows, so adding the DNA tokens exercises the embedding resize."""
    if tokenizer is None:
        tokenizer, vocab_size = build_text_tokenizer(), None
    else:
        tokenizer, vocab_size = AutoTokenizer.from_pretrained(tokenizer), QWEN3_VOCAB
    torch.manual_seed(seed)
    config = qwen3_config("tiny", vocab_size or len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id)
    model = Qwen3ForCausalLM(config)
    # Frozen, tied, randomly initialised rows of std 0.02 cap the logits near +-1 (the final
    # RMSNorm fixes the hidden-state scale), so no adapter could make a prediction confident.
    # Rows of std 0.25 allow logits of a trained model's range (about +-16).
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0.0, 0.25)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    with atomic_directory(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return Path(out)


def is_tiny_genos(folder: str | Path, seed: int = 0) -> bool:
    """Whether ``folder`` holds, file for file, the tiny Genos ``make_tiny_genos(seed)`` builds: the
    KEGG and coverage quick starts then share it rather than refuse each other's."""
    import filecmp
    import tempfile

    folder = Path(folder)
    if not folder.is_dir():
        return False
    with tempfile.TemporaryDirectory() as tmp:
        fresh = make_tiny_genos(Path(tmp) / "genos", seed)
        names = sorted(p.name for p in fresh.iterdir())
        if names != sorted(p.name for p in folder.iterdir()):
            return False
        return all(filecmp.cmp(fresh / name, folder / name, shallow=False) for name in names)


def make_tiny(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    out_dir = Path(out_dir)
    return {"genos": make_tiny_genos(out_dir / "genos", seed), "qwen3": make_tiny_qwen3(out_dir / "qwen3", seed)}
