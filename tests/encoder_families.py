"""Tiny checkpoints of each supported encoder family, saved as the hub ships them.

Each uses the family's real config class and tokenizer type; families that ship their own
code get a folder with its ``configuration_*.py`` / ``modeling_*.py`` (ours, see
``remote_code/``) and an ``auto_map``, loaded with ``trust_remote_code=True``.
"""

from __future__ import annotations

import itertools
import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
from transformers import BertConfig, BertForMaskedLM, BertTokenizer, EsmTokenizer, PreTrainedTokenizerFast
from transformers.dynamic_module_utils import get_class_from_dynamic_module

from dnallm.encoders.remote_code import V4_CONFIG_DEFAULTS, fill_config_defaults, removed_helpers
from dnallm.tiny import make_tiny_genos

REMOTE_CODE = Path(__file__).resolve().parent / "remote_code"
BASES = "ACGTN"


@dataclass(frozen=True)
class Family:
    path: Path
    trust_remote_code: bool
    width: int  # the trunk's output width, which no config key of every family names
    bases_per_token: int


def char_tokenizer(specials: list[str], pad: str, unk: str) -> PreTrainedTokenizerFast:
    vocab = {t: i for i, t in enumerate(specials + list(BASES))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=pad, unk_token=unk, model_max_length=1 << 20)


def nucleotide_transformer(out: Path) -> Family:
    """Nucleotide Transformer v2's interface: ``model_type: esm`` with its own layers (rotary, gated
    feed-forward), only task classes in ``auto_map``, EsmTokenizer over non-overlapping 6-mers
    (single bases for a remainder)."""
    vocab = ["<unk>", "<pad>", "<mask>", "<cls>", "<eos>", "<bos>"]
    vocab += ["".join(k) for k in itertools.product("ATCG", repeat=6)] + list("ATCGN")
    out.mkdir(parents=True)
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = EsmTokenizer(str(out / "vocab.txt"), model_max_length=1000)
    (out / "vocab.txt").unlink()
    auto_map = {"AutoConfig": "esm_config.EsmConfig", "AutoModelForMaskedLM": "modeling_esm.EsmForMaskedLM"}
    _remote(
        out,
        "ntv2",
        auto_map["AutoConfig"],
        auto_map["AutoModelForMaskedLM"],
        auto_map,
        vocab_size=len(vocab),
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=96,
        pad_token_id=1,
        mask_token_id=2,
    )
    tokenizer.save_pretrained(out)
    return Family(out, True, 48, 6)


def bert(out: Path) -> Family:
    """BertForMaskedLM + a character-level tokenizer (one token per base)."""
    tokenizer = char_tokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], "[PAD]", "[UNK]")
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=56, num_hidden_layers=2, num_attention_heads=4, intermediate_size=112
    )
    torch.manual_seed(0)
    BertForMaskedLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return Family(out, False, 56, 1)


def wordpiece_bert(out: Path) -> Path:
    """BertForMaskedLM + BertTokenizer over single bases: WordPiece reads a window as one word
    and gives a single [UNK] for any word over 100 characters."""
    bert(out)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *BASES, *(f"##{b}" for b in BASES)]
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (out / name).unlink(missing_ok=True)
    BertTokenizer(str(out / "vocab.txt"), do_lower_case=False).save_pretrained(out)
    return out


def _remote(out: Path, package: str, config_class: str, model_class: str, auto_map: dict, **config_kwargs):
    """Save a model of our own remote code the way transformers 4's ``save_pretrained`` shipped the
    published checkpoints: built with its config defaults, which its ``config.json`` leaves out."""
    out.mkdir(parents=True, exist_ok=True)
    for source in (REMOTE_CODE / package).glob("*.py"):
        shutil.copy(source, out / source.name)
    with removed_helpers():  # transformers 4's helpers, which the code imports
        config = get_class_from_dynamic_module(config_class, str(out))(**config_kwargs)
        model_class = get_class_from_dynamic_module(model_class, str(out))
    config.auto_map = auto_map
    fill_config_defaults(config)
    torch.manual_seed(0)
    model = model_class(config)
    model.save_pretrained(out)
    saved = json.loads((out / "config.json").read_text())
    kept = {k: v for k, v in saved.items() if k not in V4_CONFIG_DEFAULTS or v != V4_CONFIG_DEFAULTS[k]}
    (out / "config.json").write_text(json.dumps(kept, indent=2))
    return model


def dnabert2(out: Path) -> Family:
    """DNABERT-2's interface: ``model_type: bert`` with its own layers, tuple outputs, BPE over DNA."""
    rng = random.Random(1)
    corpus = ["".join(rng.choice("ACGT") for _ in range(200)) for _ in range(200)]
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=96,
            special_tokens=["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"],
            initial_alphabet=list(BASES),
            show_progress=False,
        ),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        mask_token="[MASK]",
        model_max_length=512,
    )
    auto_map = {
        "AutoConfig": "configuration_dnabert.DNABertConfig",
        "AutoModel": "modeling_dnabert.DNABertModel",
        "AutoModelForMaskedLM": "modeling_dnabert.DNABertForMaskedLM",
    }
    _remote(
        out,
        "dnabert",
        auto_map["AutoConfig"],
        auto_map["AutoModelForMaskedLM"],
        auto_map,
        vocab_size=len(tokenizer),
        hidden_size=72,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=144,
    )
    tokenizer.save_pretrained(out)
    return Family(out, True, 72, 3)  # 96 BPE merges learned on random sequence: 2.8 bases per token on mixed sequence


def hyenadna(out: Path) -> Family:
    """HyenaDNA's interface: ``d_model``, causal, no attention mask, weights as ``pytorch_model.bin``."""
    auto_map = {
        "AutoConfig": "configuration_dnaconv.DNAConvConfig",
        "AutoModel": "modeling_dnaconv.DNAConvModel",
        "AutoModelForCausalLM": "modeling_dnaconv.DNAConvForCausalLM",
    }
    tokenizer = char_tokenizer(["[CLS]", "[SEP]", "[BOS]", "[MASK]", "[PAD]", "[RESERVED]", "[UNK]"], "[PAD]", "[UNK]")
    model = _remote(
        out,
        "dnaconv",
        auto_map["AutoConfig"],
        auto_map["AutoModelForCausalLM"],
        auto_map,
        vocab_size=len(tokenizer),
        d_model=40,
        n_layer=2,
    )
    for weights in out.glob("*.safetensors"):
        weights.unlink()
    torch.save(model.state_dict(), out / "pytorch_model.bin")
    tokenizer.save_pretrained(out)
    return Family(out, True, 40, 1)


def caduceus(out: Path) -> Family:
    """Caduceus's interface: ``d_model``, bidirectional, no attention mask, a trunk class without ``post_init``."""
    auto_map = {
        "AutoConfig": "configuration_caduceus.CaduceusConfig",
        "AutoModel": "modeling_caduceus.Caduceus",
        "AutoModelForMaskedLM": "modeling_caduceus.CaduceusForMaskedLM",
    }
    tokenizer = char_tokenizer(["[CLS]", "[SEP]", "[BOS]", "[MASK]", "[PAD]", "[RESERVED]", "[UNK]"], "[PAD]", "[UNK]")
    _remote(
        out,
        "caduceus",
        auto_map["AutoConfig"],
        auto_map["AutoModelForMaskedLM"],
        auto_map,
        vocab_size=len(tokenizer),
        d_model=24,
        n_layer=2,
    )
    tokenizer.save_pretrained(out)
    return Family(out, True, 24, 1)


def genos(out: Path) -> Family:
    return Family(make_tiny_genos(out), False, 64, 1)


BUILDERS = {
    "genos": genos,
    "nucleotide_transformer": nucleotide_transformer,
    "bert": bert,
    "dnabert2": dnabert2,
    "hyenadna": hyenadna,
    "caduceus": caduceus,
}
