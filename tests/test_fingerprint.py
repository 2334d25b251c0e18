"""The embedding cache's weights fingerprint sees every weight format and shard."""

import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM

from dnallm.encoders.cache import CacheError, weights_fingerprint


def _flip_byte(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_bin_weights_are_fingerprinted(tiny_models, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_models["genos"])
    folder = tmp_path / "bin"
    shutil.copytree(tiny_models["genos"], folder)
    next(folder.glob("*.safetensors")).unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    before = weights_fingerprint(str(folder))
    _flip_byte(folder / "pytorch_model.bin", (folder / "pytorch_model.bin").stat().st_size - 100)
    assert weights_fingerprint(str(folder)) != before


def test_every_shard_is_fingerprinted(tiny_models, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_models["genos"])
    folder = tmp_path / "sharded"
    model.save_pretrained(folder, max_shard_size="200KB")
    shards = sorted(folder.glob("model-*.safetensors"))
    assert len(shards) > 2 and (folder / "model.safetensors.index.json").is_file()
    before = weights_fingerprint(str(folder))
    _flip_byte(shards[-1], shards[-1].stat().st_size - 100)
    assert weights_fingerprint(str(folder)) != before


def test_own_code_is_fingerprinted(tiny_models, tmp_path):
    folder = tmp_path / "code"
    shutil.copytree(tiny_models["genos"], folder)
    before = weights_fingerprint(str(folder))
    (folder / "modeling_custom.py").write_text("SCALE = 2\n")
    assert weights_fingerprint(str(folder)) != before


def test_no_weight_files_is_an_error(tiny_models, tmp_path):
    folder = tmp_path / "config-only"
    folder.mkdir()
    shutil.copy(tiny_models["genos"] / "config.json", folder)
    with pytest.raises(CacheError, match=r"no weight files \(\*\.safetensors, \*\.bin\) beside .*config-only"):
        weights_fingerprint(str(folder))
