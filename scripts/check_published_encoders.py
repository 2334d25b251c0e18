"""Run the published modelling code of DNA encoder families through dnallm's encoder loader, and
print one JSON line per family.

The code is not part of this project (other projects' files, under their licences): download it
yourself, one folder per family, holding the files as the model's hub page ships them:

    FOLDER/dnabert2/   bert_layers.py bert_padding.py configuration_bert.py [flash_attn_triton.py]
                       config.json tokenizer.json tokenizer_config.json   (zhihan1996/DNABERT-2-117M)
    FOLDER/caduceus/   modeling_caduceus.py modeling_rcps.py configuration_caduceus.py
                       tokenization_caduceus.py                            (kuleshov-group/caduceus)
    FOLDER/ntv2/       modeling_esm.py esm_config.py                       (InstaDeepAI/nucleotide-transformer-v2-*)

For each family found, a tiny checkpoint is built around that code (a few layers, random weights,
saved as transformers 4 saved the published ones: ``pytorch_model.bin``, a config without
transformers 4's defaults) and loaded with ``DNAEncoder(path, trust_remote_code=True)``; its
hidden states are compared with the same weights run by the published code directly, and
``dnallm embed`` runs on a FASTA file. A family whose code imports a package this environment
lacks (Caduceus: mamba_ssm, CUDA only) reports the loader's one-line error instead.

    python scripts/check_published_encoders.py FOLDER [--keep DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import EsmTokenizer
from transformers.dynamic_module_utils import get_class_from_dynamic_module

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dnallm.cli import main as dnallm_main  # noqa: E402
from dnallm.encoders import DNAEncoder  # noqa: E402
from dnallm.encoders.remote_code import fill_config_defaults, removed_helpers  # noqa: E402
from dnallm.hub import CheckpointError  # noqa: E402

SEQUENCES = ["ACGTTGCAAGGCTTACGATCGGATCCATGCAAGTCA" * 3, "TTGACCGTAGCATGCA"]


def dnabert2_config(folder: Path) -> dict:
    """The published config.json, shrunk (the tokenizer's vocabulary kept)."""
    published = json.loads((folder / "config.json").read_text())
    published.pop("_name_or_path", None)
    return {**published, "hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 96}


def dnabert2_tokenizer(folder: Path, out: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(folder / name, out / name)


def caduceus_config(folder: Path) -> dict:
    auto_map = {
        "AutoConfig": "configuration_caduceus.CaduceusConfig",
        "AutoModel": "modeling_caduceus.Caduceus",
        "AutoModelForMaskedLM": "modeling_caduceus.CaduceusForMaskedLM",
    }
    return {
        "model_type": "caduceus",
        "auto_map": auto_map,
        "d_model": 32,
        "n_layer": 2,
        "vocab_size": 12,
        "pad_vocab_size_multiple": 8,
        "rcps": True,
        "bidirectional": True,
        "bidirectional_strategy": "add",
        "bidirectional_weight_tie": True,
        "fused_add_norm": False,
        "rms_norm": True,
        "complement_map": {str(k): v for k, v in enumerate([0, 1, 2, 3, 4, 5, 6, 10, 9, 8, 7, 11])},
    }


def caduceus_tokenizer(folder: Path, out: Path) -> None:
    """The hub's tokenizer_config.json: the code's own character tokenizer, by auto_map."""
    config = {
        "auto_map": {"AutoTokenizer": ["tokenization_caduceus.CaduceusTokenizer", None]},
        "tokenizer_class": "CaduceusTokenizer",
        "characters": list("ACGTN"),
        "model_max_length": 1024,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config))


def ntv2_config(folder: Path) -> dict:
    auto_map = {
        "AutoConfig": "esm_config.EsmConfig",
        "AutoModelForMaskedLM": "modeling_esm.EsmForMaskedLM",
        "AutoModelForTokenClassification": "modeling_esm.EsmForTokenClassification",
    }
    return {
        "model_type": "esm",
        "auto_map": auto_map,
        "vocab_size": len(_ntv2_vocab()),
        "hidden_size": 48,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 96,
        "pad_token_id": 1,
        "mask_token_id": 2,
        "position_embedding_type": "rotary",
        "add_bias_fnn": False,
        "emb_layer_norm_before": False,
        "token_dropout": False,
        "max_position_embeddings": 1026,
        "tie_word_embeddings": False,
    }


def _ntv2_vocab() -> list[str]:
    specials = ["<unk>", "<pad>", "<mask>", "<cls>", "<eos>", "<bos>"]
    return specials + ["".join(k) for k in itertools.product("ATCG", repeat=6)] + list("ATCGN")


def ntv2_tokenizer(folder: Path, out: Path) -> None:
    """The hub's tokenizer: EsmTokenizer over non-overlapping 6-mers (single bases for a remainder)."""
    (out / "vocab.txt").write_text("\n".join(_ntv2_vocab()) + "\n")
    EsmTokenizer(str(out / "vocab.txt"), model_max_length=1000).save_pretrained(out)


# family -> (files its code needs, config.json of a tiny checkpoint, tokenizer writer)
FAMILIES = {
    "dnabert2": (("bert_layers.py", "bert_padding.py", "configuration_bert.py"), dnabert2_config, dnabert2_tokenizer),
    "caduceus": (
        ("modeling_caduceus.py", "modeling_rcps.py", "configuration_caduceus.py", "tokenization_caduceus.py"),
        caduceus_config,
        caduceus_tokenizer,
    ),
    "ntv2": (("modeling_esm.py", "esm_config.py"), ntv2_config, ntv2_tokenizer),
}


def build_checkpoint(folder: Path, out: Path, family: str) -> torch.nn.Module | None:
    """A tiny checkpoint around the published code in ``folder``: -> the model its weights came from
    (None when the code cannot be imported here: config, code and tokenizer only)."""
    files, make_config, write_tokenizer = FAMILIES[family]
    out.mkdir(parents=True)
    for source in folder.glob("*.py"):
        shutil.copy(source, out / source.name)
    config_json = make_config(folder)
    (out / "config.json").write_text(json.dumps(config_json))
    write_tokenizer(folder, out)
    task_class = next(v for k, v in config_json["auto_map"].items() if k != "AutoConfig" and k != "AutoModel")
    try:
        with removed_helpers():  # the published code was written for transformers 4
            config = get_class_from_dynamic_module(config_json["auto_map"]["AutoConfig"], str(out)).from_pretrained(
                out
            )
            model_class = get_class_from_dynamic_module(task_class, str(out))
    except ImportError:
        return None
    fill_config_defaults(config)
    torch.manual_seed(0)
    model = model_class(config).eval()
    torch.save(model.state_dict(), out / "pytorch_model.bin")  # the published checkpoints' format
    return model


def check(folder: Path, out: Path, family: str) -> dict:
    files = FAMILIES[family][0]
    report = {
        "family": family,
        "transformers": transformers.__version__,
        "files": sorted(p.name for p in folder.glob("*.py")),
        "missing_files": [f for f in files if not (folder / f).exists()],
    }
    if report["missing_files"]:
        return report
    written = build_checkpoint(folder, out, family)
    try:
        encoder = DNAEncoder(str(out), trust_remote_code=True)
    except CheckpointError as e:  # the same line the command gives, as its exit status 2 shows
        return {**report, "loaded": False, "error": str(e), **_embed_command(out)}
    embeds, mask = encoder.encode(SEQUENCES)  # (batch, positions, hidden), (batch, positions)
    report.update(
        loaded=True,
        trunk_class=type(encoder.model).__name__,
        hidden_size=encoder.hidden_size,
        bases_per_token=encoder.tokenizer.bases_per_token,
        max_abs_diff_to_published_code=_difference(encoder, written, embeds, mask),
    )
    report.update(_embed_command(out))
    return report


@torch.no_grad()
def _difference(encoder: DNAEncoder, written: torch.nn.Module, embeds, mask) -> float:
    """Largest difference between the loader's hidden states and the trunk the weights were saved from,
    run by the published code itself, one unpadded sequence at a time."""
    trunk = written.base_model
    largest = 0.0
    for row, sequence in enumerate(SEQUENCES):
        ids = encoder.tokenizer([sequence])["input_ids"]
        want = trunk(ids)[0][0]  # (positions, hidden)
        largest = max(largest, (embeds[row, mask[row]] - want).abs().max().item())
    return largest


def _embed_command(checkpoint: Path) -> dict:
    """``dnallm embed`` on a FASTA file of SEQUENCES: -> exit status, its error line, the embeddings' shape."""
    with tempfile.TemporaryDirectory() as tmp:
        fasta = Path(tmp) / "seqs.fa"
        fasta.write_text("".join(f">s{i}\n{seq}\n" for i, seq in enumerate(SEQUENCES)))
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):  # its own summary
            status = dnallm_main(
                [
                    "embed",
                    str(fasta),
                    "--out",
                    f"{tmp}/e.npy",
                    "--model",
                    str(checkpoint),
                    "--trust-remote-code",
                    "--device",
                    "cpu",
                ]
            )
        shape = list(np.load(f"{tmp}/e.npy").shape) if status == 0 else None
    errors = [line for line in stderr.getvalue().splitlines() if line.startswith("dnallm embed: error")]
    return {"embed_exit_status": status, "embed_error": errors[0] if errors else None, "embed_shape": shape}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="one sub-folder per family: dnabert2/, caduceus/, ntv2/")
    parser.add_argument("--keep", type=Path, help="build the checkpoints here and keep them (default: a temp folder)")
    args = parser.parse_args(argv)
    if args.keep and args.keep.exists():
        parser.error(f"--keep {args.keep} exists; give a new folder (checkpoints are built from scratch)")
    reports = []
    with tempfile.TemporaryDirectory(prefix="dnallm-published-") as tmp:
        where = args.keep or Path(tmp)
        for family in FAMILIES:
            if (args.folder / family).is_dir():
                reports.append(check(args.folder / family, where / family, family))
                print(json.dumps(reports[-1]), flush=True)
    return reports


if __name__ == "__main__":
    main()
