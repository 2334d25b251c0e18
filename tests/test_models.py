"""Tiny checkpoints load through the same from_pretrained path as hub models."""

import json
import shutil

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

from dnallm.encoders import DNAEncoder
from dnallm.fusion import DNAFusionConfig, DNAFusionLM
from dnallm.hub import RemoteCodeNotAllowed

LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}


def test_tiny_genos_is_genos_shaped_and_round_trips(tiny_models):
    model = AutoModel.from_pretrained(tiny_models["genos"])
    cfg = model.config
    assert (cfg.num_local_experts, cfg.num_experts_per_tok) == (8, 2)
    assert cfg.num_key_value_heads < cfg.num_attention_heads  # grouped-query attention
    assert list(tiny_models["genos"].glob("*.safetensors"))
    tok = AutoTokenizer.from_pretrained(tiny_models["genos"])
    assert tok("ACGTN", add_special_tokens=False)["input_ids"] == [tok.convert_tokens_to_ids(c) for c in "ACGTN"]


def test_tiny_qwen3_round_trips_with_chat_tokens(tiny_models):
    model = AutoModelForCausalLM.from_pretrained(tiny_models["qwen3"])
    assert model.config.model_type == "qwen3"
    tok = AutoTokenizer.from_pretrained(tiny_models["qwen3"])
    for special in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"):
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1
    text = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False, enable_thinking=False
    )
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    assert tok.decode(tok("Answer: prion disease")["input_ids"]) == "Answer: prion disease"


def test_encoder_is_frozen_and_keeps_no_graph(tiny_models):
    enc = DNAEncoder(str(tiny_models["genos"]))
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.model.training
    embeds, mask = enc.encode(["ACGTACGTAC", "acgtNNAC".upper()])
    assert embeds.shape == (2, 10, enc.hidden_size) and not embeds.requires_grad
    assert mask.tolist()[1] == [True] * 8 + [False] * 2


def test_encoder_layer_choice(tiny_models):
    last = DNAEncoder(str(tiny_models["genos"])).encode(["ACGTACGT"])[0]
    first = DNAEncoder(str(tiny_models["genos"]), layer=1).encode(["ACGTACGT"])[0]
    assert last.shape == first.shape and not torch.allclose(last, first)


def test_remote_code_refused_unless_allowed(tiny_models, tmp_path):
    custom = tmp_path / "custom"
    shutil.copytree(tiny_models["genos"], custom)
    config = json.loads((custom / "config.json").read_text())
    config.update(
        model_type="genos_custom",
        auto_map={"AutoConfig": "configuration_genos.GenosConfig", "AutoModel": "modeling_genos.GenosModel"},
    )
    (custom / "config.json").write_text(json.dumps(config))
    with pytest.raises(RemoteCodeNotAllowed, match=r"ships its own modelling code .*encoder.trust_remote_code=true"):
        DNAEncoder(str(custom))


def test_dna_tokens_added_and_embeddings_resized(tiny_models):
    base = AutoTokenizer.from_pretrained(tiny_models["qwen3"])
    config = DNAFusionConfig.from_dict(
        {"llm": {"name_or_path": str(tiny_models["qwen3"])}, "lora": LORA, "projector": {"summary": "none"}}
    )
    model, tok = DNAFusionLM.from_config(config, 64)
    assert len(tok) == len(base) + 3
    table = model.llm.get_input_embeddings().weight
    assert table.shape[0] >= len(tok) and table.shape[0] % 64 == 0
    for name in ("<|dna_start|>", "<|dna_pad|>", "<|dna_end|>"):
        assert len(tok(name, add_special_tokens=False)["input_ids"]) == 1
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert (
        "dna_boundary" in trainable
        and any("lora_A" in n for n in trainable)
        and any(n.startswith("projector.") for n in trainable)
    )
    assert not any("embed_tokens" in n for n in trainable)


def test_encoder_checkpoint_missing_weights_is_an_error(tiny_models, tmp_path):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(tiny_models["genos"], broken)
    weights = next(broken.glob("*.safetensors"))
    tensors = load_file(weights)
    name = next(k for k in tensors if k.endswith("layers.0.self_attn.q_proj.weight"))
    del tensors[name]
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(
        ValueError, match=r"lacks or mis-shapes weights the encoder needs: .*layers\.0\.self_attn\.q_proj\.weight"
    ):
        DNAEncoder(str(broken))
