"""Where DNA enters the LLM: placeholder layout, scatter order, masks and the loss mask."""

import random

import pytest
import torch
from transformers import AutoTokenizer

from dnallm.data.chat import DNA_END, DNA_PAD, DNA_START, IGNORE_INDEX
from dnallm.encoders import DNATokenizer
from dnallm.fusion import DNAFusionConfig, DNAFusionLM
from dnallm.fusion.processor import DNAChatProcessor
from dnallm.fusion.projector import DNAProjector

LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
DNA_HIDDEN = 16


def _example(answer="prion disease", ref="ACGTACGTACGTACGTACGTACGT", var="ACGTACGTACGTTCGTACGTACGT"):
    return {"question": "Which disease?", "answer": answer, "reasoning": "", "ref_window": ref, "var_window": var}


@pytest.fixture(scope="module")
def fusion(tiny_models):
    torch.manual_seed(0)
    config = DNAFusionConfig.from_dict(
        {
            "llm": {"name_or_path": str(tiny_models["qwen3"])},
            "lora": LORA,
            "projector": {"kind": "conv", "pool": 4, "kernel": 8, "summary": "none"},
        }
    )
    model, tok = DNAFusionLM.from_config(config, DNA_HIDDEN)
    processor = DNAChatProcessor(tok, DNATokenizer(str(tiny_models["genos"])), pool=4)
    return model.eval(), tok, processor


def test_one_block_per_sequence_with_pooled_placeholder_count(fusion):
    _, tok, processor = fusion
    row = processor(_example(ref="A" * 24, var="C" * 23))  # an indel: 24 and 23 bases
    ids = row["input_ids"]
    starts = [i for i, t in enumerate(ids) if t == tok.convert_tokens_to_ids(DNA_START)]
    ends = [i for i, t in enumerate(ids) if t == tok.convert_tokens_to_ids(DNA_END)]
    assert len(starts) == len(ends) == 2
    pad = tok.convert_tokens_to_ids(DNA_PAD)
    blocks = [ids[s + 1 : e] for s, e in zip(starts, ends)]
    assert [len(b) for b in blocks] == [6, 6]  # ceil(24 / 4), ceil(23 / 4)
    assert all(t == pad for b in blocks for t in b)
    assert ids.count(pad) == 12  # no stray placeholders outside the blocks
    assert row["dna"] == ["A" * 24, "C" * 23]  # reference before variant


def test_loss_only_on_the_answer_and_end_of_turn(fusion):
    _, tok, processor = fusion
    row = processor(_example(answer="Parkinson disease"))
    supervised = [t for t in row["labels"] if t != IGNORE_INDEX]
    assert tok.decode(supervised) == "Answer: Parkinson disease<|im_end|>"
    first = row["labels"].index(supervised[0])
    assert all(t == IGNORE_INDEX for t in row["labels"][:first])
    assert row["input_ids"][first:] == supervised  # labels align with the reply tokens


def _two_sample_batch(processor):
    """Two examples collated, with encoder outputs for ref0, var0, ref1, var1; var1 is shorter:
    its tail is padding in the encoder output."""
    rows = [processor(_example()), processor(_example(answer="x", ref="G" * 24, var="T" * 16))]
    dna_mask = torch.arange(24)[None, :] < torch.tensor([24, 24, 24, 16])[:, None]
    return processor.collate(rows), torch.randn(4, 24, DNA_HIDDEN), dna_mask


def test_features_land_in_placeholder_slots_in_batch_order(fusion):
    model, tok, processor = fusion
    batch, dna_embeds, dna_mask = _two_sample_batch(processor)
    with torch.no_grad():
        embeds = model.embed(batch["input_ids"], dna_embeds, dna_mask)
        features, valid = model.projector(dna_embeds, dna_mask)
    assert valid.sum(1).tolist() == [6, 6, 6, 4]
    slots = batch["input_ids"] == tok.convert_tokens_to_ids(DNA_PAD)
    assert slots.sum(1).tolist() == [12, 10]
    torch.testing.assert_close(embeds[slots], features[valid])
    ids = batch["input_ids"]
    starts, ends = ids == tok.convert_tokens_to_ids(DNA_START), ids == tok.convert_tokens_to_ids(DNA_END)
    text = ~(slots | starts | ends)
    torch.testing.assert_close(embeds[text], model.llm.get_input_embeddings()(ids)[text])
    assert torch.equal(embeds[starts], model.dna_boundary[0].expand(int(starts.sum()), -1))
    assert torch.equal(embeds[ends], model.dna_boundary[1].expand(int(ends.sum()), -1))
    # Each boundary row's gradient: the sum of the gradients at its token's positions.
    upstream = torch.randn(embeds.shape)
    model.zero_grad(set_to_none=True)
    (model.embed(batch["input_ids"], dna_embeds, dna_mask) * upstream).sum().backward()
    torch.testing.assert_close(model.dna_boundary.grad, torch.stack([upstream[starts].sum(0), upstream[ends].sum(0)]))
    model.zero_grad(set_to_none=True)


def test_padding_positions_do_not_change_features():
    torch.manual_seed(0)
    for kind in ("linear", "mlp", "conv"):
        proj = DNAProjector(DNA_HIDDEN, 8, kind=kind, pool=4, kernel=4).eval()
        x = torch.randn(1, 12, DNA_HIDDEN)
        mask = torch.tensor([[True] * 8 + [False] * 4])
        noisy = x.clone()
        noisy[:, 8:] = 100.0  # garbage in padded positions
        a, va = proj(x, mask)
        b, vb = proj(noisy, mask)
        assert va.tolist() == vb.tolist() == [[True, True, False]]
        torch.testing.assert_close(a[va], b[vb])


def test_placeholder_feature_mismatch_raises_with_counts(fusion):
    model, _, processor = fusion
    batch = processor.collate([processor(_example())])  # 12 placeholders
    with pytest.raises(ValueError, match=r"tokens: 12, features: 8"):
        model.embed(batch["input_ids"], torch.randn(2, 16, DNA_HIDDEN))
    with pytest.raises(ValueError, match=r"12 DNA placeholder tokens but no DNA embeddings"):
        model.embed(batch["input_ids"])


def test_left_padding_for_generation_keeps_prompts_right_aligned(fusion):
    _, tok, processor = fusion
    rows = [
        processor(_example(), with_answer=False),
        processor({**_example(), "question": "Which disease does this variant cause?"}, with_answer=False),
    ]
    batch = processor.collate(rows, side="left")
    assert (batch["input_ids"][:, -1] == batch["input_ids"][0, -1]).all()  # both end with the assistant header
    n_pad = batch["attention_mask"].shape[1] - batch["attention_mask"].sum(1)
    for i, n in enumerate(n_pad.tolist()):
        assert batch["attention_mask"][i, :n].sum() == 0 and (batch["input_ids"][i, :n] == tok.pad_token_id).all()
    assert (batch["labels"] == IGNORE_INDEX).all()


def test_text_only_prompts_have_no_dna_blocks(tiny_models):
    tok = AutoTokenizer.from_pretrained(tiny_models["qwen3"])
    tok.add_tokens([DNA_START, DNA_PAD, DNA_END], special_tokens=True)
    row = DNAChatProcessor(tok, None)(_example())
    assert row["dna"] == [] and tok.convert_tokens_to_ids(DNA_PAD) not in row["input_ids"]


@pytest.fixture(scope="module")
def fusion_with_summary(tiny_models):
    torch.manual_seed(0)
    config = DNAFusionConfig.from_dict(
        {
            "llm": {"name_or_path": str(tiny_models["qwen3"])},
            "lora": LORA,
            "projector": {"kind": "conv", "pool": 4, "kernel": 8, "summary": "pooled+centre", "summary_tokens": 2},
        }
    )
    model, tok = DNAFusionLM.from_config(config, DNA_HIDDEN)
    processor = DNAChatProcessor(tok, DNATokenizer(str(tiny_models["genos"])), pool=4, summary_tokens=2)
    return model.eval(), tok, processor


def test_variant_summary_block_follows_the_two_sequence_blocks(fusion_with_summary):
    _, tok, processor = fusion_with_summary
    ids = processor(_example(ref="A" * 24, var="C" * 23))["input_ids"]
    starts = [i for i, t in enumerate(ids) if t == tok.convert_tokens_to_ids(DNA_START)]
    ends = [i for i, t in enumerate(ids) if t == tok.convert_tokens_to_ids(DNA_END)]
    assert [e - s - 1 for s, e in zip(starts, ends)] == [6, 6, 2]  # reference, variant, summary
    assert ids.count(tok.convert_tokens_to_ids(DNA_PAD)) == 14
    assert "Variant summary:" in tok.decode(ids[ends[1] : starts[2]])


def test_summary_features_land_after_each_samples_blocks(fusion_with_summary):
    model, tok, processor = fusion_with_summary
    batch, dna_embeds, dna_mask = _two_sample_batch(processor)
    with torch.no_grad():
        embeds = model.embed(batch["input_ids"], dna_embeds, dna_mask)
        blocks, valid = model.projector(dna_embeds, dna_mask)
        summary = model.summary(dna_embeds, dna_mask)  # (2 pairs, 2 tokens, hidden)
    slots = batch["input_ids"] == tok.convert_tokens_to_ids(DNA_PAD)
    assert slots.sum(1).tolist() == [14, 12]
    expected = torch.cat(
        [blocks[0][valid[0]], blocks[1][valid[1]], summary[0], blocks[2][valid[2]], blocks[3][valid[3]], summary[1]]
    )
    torch.testing.assert_close(embeds[slots], expected)


def test_summary_sees_one_base_at_the_centre_of_a_long_window():
    from dnallm.fusion.summary import VariantSummary, centre_positions

    torch.manual_seed(0)
    ref = torch.randn(1, 1001, DNA_HIDDEN)
    var = ref.clone()
    var[0, 500] = torch.randn(DNA_HIDDEN)  # one changed position: the variant at the window's centre
    mask = torch.ones(2, 1001, dtype=torch.bool)
    pair = torch.cat([ref, var])
    torch.testing.assert_close(centre_positions(pair, mask, 5), pair[:, 498:503])
    summary = VariantSummary(DNA_HIDDEN, 8, kind="centre", context=5).eval()
    unchanged = summary(torch.cat([ref, ref]), mask)
    changed = summary(pair, mask)
    # Seen at full strength at the centre; pooled over 1,001 positions it is a thousandth as large.
    pooled = VariantSummary(DNA_HIDDEN, 8, kind="pooled").eval()
    assert (changed - unchanged).norm() > 10 * (pooled(pair, mask) - pooled(torch.cat([ref, ref]), mask)).norm()
    # Padding after a shorter (indel) window moves its centre with it; past a short
    # sequence's ends the context is zeros, not padding.
    short = torch.arange(1001)[None, :] < torch.tensor([[1001], [999]])
    torch.testing.assert_close(centre_positions(pair, short, 3)[1], pair[1, 498:501])
    edge = centre_positions(pair[:, :4], torch.ones(2, 4, dtype=torch.bool), 7)  # 4 positions, 7 wanted
    torch.testing.assert_close(edge[:, 1:5], pair[:, :4])
    assert edge[:, 0].abs().sum() == 0 and edge[:, 5:].abs().sum() == 0
    with pytest.raises(ValueError, match="pairs, got 3 sequences"):
        summary(torch.randn(3, 10, DNA_HIDDEN), torch.ones(3, 10, dtype=torch.bool))
    with pytest.raises(ValueError, match="summary_context must be odd"):
        VariantSummary(DNA_HIDDEN, 8, context=4)


def test_change_span_aligns_flanks_of_snvs_insertions_and_deletions():
    from dnallm.data.dna import centre_window, change_span

    rng = random.Random(7)
    left, right = ("".join(rng.choice("ACGT") for _ in range(60)) for _ in range(2))
    window = lambda seq: centre_window(seq, 40, where="t", field="seq")  # noqa: E731  each centred on its own allele
    snv_ref, snv_var = window(left + "A" + right), window(left + "C" + right)
    assert change_span(snv_ref, snv_var) == ((20, 21), (20, 21))
    ref, var = window(left + "G" + right), window(left + "GTTACA" + right)  # an insertion of TTACA after the anchor G
    (r0, r1), (v0, v1) = change_span(ref, var)
    assert (r1 - r0, v1 - v0) == (0, 5) and var[v0:v1] == "TTACA"
    assert ref[:r0][-10:] == var[:v0][-10:] and ref[r1:][:10] == var[v1:][:10]  # flanks meet on both sides
    assert change_span(var, ref) == ((v0, v1), (r0, r1))  # the deletion is the mirror image
    assert change_span("ACGTTTGCA", "ACGTTTTGCA") == ((6, 6), (6, 7))  # in a run: the longest left flank wins
    assert change_span("ACGTACGT", "ACGTACGT") == ((4, 4), (4, 4))  # no change: an empty span at the centre


def test_pair_views_line_up_an_insertions_flanks_and_show_its_bases():
    """With embeddings that are a function of the base alone, the aligned flanks of a pair are
    equal position by position and the allele slots hold the inserted bases, whatever the shift."""
    from dnallm.data.dna import centre_window
    from dnallm.fusion.processor import pair_spans
    from dnallm.fusion.summary import pair_views

    rng = random.Random(3)
    left, right = ("".join(rng.choice("ACGT") for _ in range(50)) for _ in range(2))
    ref, var = (centre_window(s, 32, where="t", field="seq") for s in (left + "A" + right, left + "AGGCATT" + right))
    one_hot = torch.eye(4)[torch.tensor([["ACGT".index(b) for b in seq] for seq in (ref, var)])]  # (2, 32, 4)
    spans = pair_spans([ref, var])[:, :2]
    views = pair_views(one_hot, torch.ones(2, 32, dtype=torch.bool), spans, context=9)  # flanks of 4, 5 allele slots
    aligned, valid = views["aligned"], views["aligned_mask"]
    flanks = list(range(4)) + list(range(9, 13))
    torch.testing.assert_close(aligned[0, flanks], aligned[1, flanks])
    assert valid[:, flanks].all() and views["allele_len"].tolist() == [0, 6]
    assert (
        valid[0, 4:9].sum() == 0 and valid[1, 4:9].all()
    )  # the reference has no allele; 5 of the 6 inserted bases shown
    assert "".join("ACGT"[i] for i in aligned[1, 4:9].argmax(-1)) == "GGCAT"
    # The k-mer view reads each window's contiguous stretch: the variant's insertion with its flanks.
    stretch = "".join("ACGT"[i] for i in views["local"][1][views["local_mask"][1]].argmax(-1))
    assert stretch == var[spans[1, 0] - 4 : spans[1, 0] + 4 + 5]
