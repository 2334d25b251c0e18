"""Generation stops at the end of the assistant turn (``<|im_end|>``), not at a Base
checkpoint's eos (``<|endoftext|>``), in eval and in annotate's label probabilities."""

import torch
from transformers import AutoTokenizer, Qwen3ForCausalLM

from dnallm.eval.answers import predict_batch
from dnallm.eval.kegg import generate_answers
from dnallm.fusion import DNAFusionConfig, DNAFusionLM
from dnallm.fusion.processor import DNAChatProcessor
from dnallm.tiny import qwen3_config

LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}


def base_style_llm(tiny_models, out):
    """A Qwen3 whose tokenizer's eos is <|endoftext|> (as Qwen3-*-Base) and whose next token
    depends on the current token only: <|im_end|> after any other token, 'Answer' after <|im_end|>."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["qwen3"])
    tokenizer.eos_token = "<|endoftext|>"
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    follow_on = tokenizer("Answer", add_special_tokens=False)["input_ids"][0]
    config = qwen3_config("tiny", len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id)
    config.tie_word_embeddings = False
    model = Qwen3ForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:  # blocks add nothing: the last hidden state is the token's embedding
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        table, head = model.get_input_embeddings().weight, model.lm_head.weight
        table.zero_()
        table[:, 0] = 1.0
        table[im_end] = 0.0
        table[im_end, 1] = 1.0
        head.zero_()
        head[im_end, 0] = 10.0
        head[follow_on, 1] = 10.0
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_eval_and_annotate_stop_at_the_end_of_turn(tiny_models, tmp_path):
    path = base_style_llm(tiny_models, tmp_path / "base-style")
    config = DNAFusionConfig.from_dict(
        {"llm": {"name_or_path": str(path)}, "lora": LORA, "projector": {"summary": "none"}}
    )
    model, tokenizer = DNAFusionLM.from_config(config, 8)
    assert tokenizer.eos_token == "<|endoftext|>"
    processor = DNAChatProcessor(tokenizer, None)
    examples = [
        {"question": "Which disease?", "answer": "x"},
        {"question": "Which disease does this variant cause?", "answer": "y"},
    ]
    texts = generate_answers(
        model.eval(), None, processor, examples, batch_size=2, max_new_tokens=8, encoder_batch_size=1, device="cpu"
    )
    # Run on past <|im_end|>, the model would invent 'Answer' turns.
    assert texts == ["", ""]
    predictions = predict_batch(model, None, processor, examples, max_new_tokens=8, encoder_batch_size=1, device="cpu")
    assert [(p.reply, p.label, p.probability) for p in predictions] == [("", "", None)] * 2
