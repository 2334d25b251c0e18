"""The trunk + convolutional head model: shapes, masking, per-base tokens, full fine-tuning."""

import json

import pytest
import torch
from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from dnallm.encoders import DNAEncoder
from dnallm.encoders.coverage import CoverageHead, CoverageModel, base_token_ids, load_tokenizer
from dnallm.hub import RemoteCodeNotAllowed
from encoder_families import caduceus, dnabert2


def test_head_gives_one_non_negative_value_per_base_and_track():
    torch.manual_seed(0)
    head = CoverageHead(hidden_size=16, n_tracks=4, channels=(8, 4), kernel_size=5).eval()
    hidden = torch.randn(2, 50, 16)  # (B, L, H)
    out = head(hidden)
    assert out.shape == (2, 50, 4) and (out >= 0).all()
    assert len(head.blocks) == 3 and not any(isinstance(m, torch.nn.GELU) for m in head.blocks[-1])


def test_padding_does_not_leak_into_real_positions():
    torch.manual_seed(0)
    head = CoverageHead(hidden_size=16, n_tracks=2, channels=(8, 4), kernel_size=5).eval()
    hidden = torch.randn(1, 40, 16)
    mask = torch.zeros(1, 40, dtype=torch.bool)
    mask[:, :30] = True
    garbage = hidden.clone()
    garbage[:, 30:] = 1e3
    torch.testing.assert_close(head(hidden, mask)[:, :30], head(garbage, mask)[:, :30])


def test_base_tokens_come_from_the_trunk_tokenizer(tiny_models):
    lookup = base_token_ids(load_tokenizer(str(tiny_models["genos"])))
    assert [int(lookup[ord(b)]) for b in "ACGTN"] == [5, 6, 7, 8, 9]
    assert lookup[ord("a")] == -1


def test_a_kmer_tokenizer_is_refused():
    kmers = ["".join((a, b)) for a in "ACGTN" for b in "ACGTN"]
    tok = Tokenizer(models.WordLevel({k: i for i, k in enumerate(["<unk>", *kmers])}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(".."), behavior="isolated")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")
    with pytest.raises(ValueError, match="turns 18 bases into 9 tokens; per-base coverage needs one token per base"):
        base_token_ids(fast)


def test_every_weight_trains_and_checkpointing_gives_the_same_gradients(tiny_models):
    torch.manual_seed(0)
    model = CoverageModel.from_pretrained(str(tiny_models["genos"]), n_tracks=3, channels=(16, 8), dropout=0.0)
    ids = torch.randint(5, 10, (2, 64))
    targets = torch.rand(2, 64, 3) * 4
    model.train()
    out = model(ids, torch.ones_like(ids, dtype=torch.bool), targets)
    assert out.pred.shape == (2, 64, 3) and out.loss.item() > 0
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    trunk = [n for n in grads if n.startswith("trunk.")]
    assert trunk and all(p.requires_grad for p in model.parameters())
    model.zero_grad()
    model.enable_gradient_checkpointing()
    model(ids, None, targets).loss.backward()
    for name, grad in grads.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, rtol=1e-4, atol=1e-6)


def test_remote_code_needs_the_recipe_flag(tmp_path):
    config = {"model_type": "genos_custom", "auto_map": {"AutoModel": "modeling_genos.GenosModel"}, "hidden_size": 8}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(RemoteCodeNotAllowed, match="encoder.trust_remote_code=true"):
        CoverageModel.from_pretrained(str(tmp_path), n_tracks=2)


def test_trunk_with_its_own_code_loads_as_the_encoder_does_and_trains(tmp_path):
    # DNABERT-2's traits: a config without pad_token_id, an ALiBi table made at init (lost on the
    # meta device), tuple outputs and no use_cache argument. Plain AutoModel.from_pretrained fails on it.
    family = dnabert2(tmp_path / "dnabert2")
    model = CoverageModel.from_pretrained(
        str(family.path), n_tracks=2, trust_remote_code=True, channels=(8, 4), dropout=0.0
    )
    assert type(model.trunk).__name__ == "DNABertModel" and model.trunk.pooler is None
    encoder = DNAEncoder(str(family.path), trust_remote_code=True)
    seqs = ["ACGTTGCAAGGCTTACGATCGGATCCATGCAA" * 2, "TTGACCGTAGCATG"]
    batch = encoder.tokenizer(seqs)
    model.eval()
    with torch.no_grad():
        hidden = model.trunk(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"].long())[0]
    embeds, mask = encoder.encode(seqs)
    torch.testing.assert_close(hidden[mask], embeds[mask])  # the same trunk, the same numbers
    model.train()
    targets = torch.rand(*batch["input_ids"].shape, 2)
    model(batch["input_ids"], batch["attention_mask"], targets).loss.backward()
    trunk = dict(model.trunk.named_parameters())
    assert all(p.requires_grad for p in trunk.values())  # fine-tuned, not frozen as the encoder is
    assert not [n for n, p in trunk.items() if p.grad is None or not p.grad.abs().sum() > 0]


def test_trunk_without_an_attention_mask_never_sees_padding_and_trains(tmp_path):
    # Caduceus's interface: bidirectional, no attention mask, its width named d_model.
    family = caduceus(tmp_path / "caduceus")
    model = CoverageModel.from_pretrained(
        str(family.path), n_tracks=2, trust_remote_code=True, channels=(8, 4), dropout=0.0
    )
    assert model.head.blocks[0][0].in_channels == family.width
    ids = torch.randint(7, 12, (2, 40))
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[1, 25:] = False
    padded = ids.clone()
    padded[1, 25:] = 4  # [PAD]
    model.eval()
    with torch.no_grad():
        batch = model.trunk_hidden(padded, mask)  # (2, 40, hidden)
        alone = model.trunk_hidden(ids[1:, :25], mask[1:, :25])  # (1, 25, hidden)
    torch.testing.assert_close(batch[1, :25], alone[0])  # a bidirectional trunk would read padding back otherwise
    assert not batch[1, 25:].any()
    model.train()
    model(padded, mask, torch.rand(2, 40, 2)).loss.backward()
    assert not [n for n, p in model.trunk.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
