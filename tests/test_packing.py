"""Padding-free batches and reply-only logits compute the same loss and gradients as padded
batches with logits everywhere; GRPO's reply scores match a full log-softmax."""

import pytest
import torch

from dnallm.config import RecipeError
from dnallm.encoders import DNATokenizer
from dnallm.fusion import DNAFusionConfig, DNAFusionLM
from dnallm.fusion.packing import chunked_token_logps, pack_rows
from dnallm.fusion.processor import DNAChatProcessor

LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj"]}
DNA_HIDDEN = 16


def fusion_config(tiny_models) -> DNAFusionConfig:
    projector = {
        "kind": "conv",
        "pool": 4,
        "kernel": 8,
        "summary": "pooled+centre",
        "summary_tokens": 2,
        "summary_context": 5,
    }
    return DNAFusionConfig.from_dict(
        {"llm": {"name_or_path": str(tiny_models["qwen3"])}, "lora": LORA, "projector": projector}
    )


def _examples():
    """Three samples of different lengths (question, answer and indel windows differ)."""
    return [
        {
            "question": "Which disease?",
            "answer": "prion disease",
            "reasoning": "",
            "ref_window": "ACGT" * 6,
            "var_window": "ACGA" * 6,
        },
        {
            "question": "Which disease does this variant contribute to, given both sequences?",
            "answer": "Parkinson disease",
            "reasoning": "",
            "ref_window": "G" * 24,
            "var_window": "T" * 16,
        },
        {"question": "Disease?", "answer": "x", "reasoning": "", "ref_window": "CA" * 12, "var_window": "CAT" * 8},
    ]


@pytest.fixture(scope="module")
def setup(tiny_models):
    torch.manual_seed(0)
    model, tok = DNAFusionLM.from_config(fusion_config(tiny_models), DNA_HIDDEN, packing=True)
    for p in model.parameters():  # LoRA B starts at zero: give every trainable tensor a gradient path
        if p.requires_grad:
            p.data.normal_(0, 0.05)
    processor = DNAChatProcessor(tok, DNATokenizer(str(tiny_models["genos"])), pool=4, summary_tokens=2)
    rows = [processor(ex) for ex in _examples()]
    lengths = [len(s) for r in rows for s in r["dna"]]
    dna_mask = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]
    dna = torch.randn(len(lengths), max(lengths), DNA_HIDDEN) * dna_mask[..., None]
    return model.train(), processor, rows, dna, dna_mask


def _loss_and_grads(model, batch, dna, dna_mask, logits: str, chunk: int = 1024):
    model.logits, model.logits_chunk = logits, chunk
    model.zero_grad()
    packed = {k: batch[k] for k in ("position_ids", "cu_seq_lens") if k in batch}
    loss = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        labels=batch["labels"],
        dna_embeds=dna,
        dna_mask=dna_mask,
        **packed,
    ).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.logits, model.logits_chunk = "reply", 1024
    return loss.detach(), grads


def _assert_same(a, b):
    (loss_a, grads_a), (loss_b, grads_b) = a, b
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-5, atol=1e-6)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-4, atol=1e-6, msg=name)
    assert sum(float(g.abs().sum()) for g in grads_a.values()) > 0


def test_packed_row_has_restarting_positions_and_no_cross_sample_target(setup):
    _, processor, rows, _, _ = setup
    batch = pack_rows(rows, processor.tokenizer.pad_token_id)
    lengths = [len(r["input_ids"]) for r in rows]
    assert batch["input_ids"].shape == (1, sum(lengths))
    assert batch["cu_seq_lens"].tolist() == [0, lengths[0], lengths[0] + lengths[1], sum(lengths)]
    starts = batch["cu_seq_lens"][:-1].long()
    assert (batch["position_ids"][0, starts] == 0).all()
    assert (batch["labels"][0, starts] == -100).all()
    padded = processor.collate(rows)
    assert int((padded["labels"] != -100).sum()) == int((batch["labels"] != -100).sum())


def test_packed_batch_same_loss_and_gradients_as_padded(setup):
    model, processor, rows, dna, dna_mask = setup
    padded = processor.collate(rows)
    packed = pack_rows(rows, processor.tokenizer.pad_token_id)
    assert padded["attention_mask"].numel() > packed["input_ids"].numel()  # padding went away
    for logits in ("full", "reply"):
        _assert_same(
            _loss_and_grads(model, padded, dna, dna_mask, logits),
            _loss_and_grads(model, packed, dna, dna_mask, logits),
        )


def test_reply_only_chunked_logits_same_loss_and_gradients_as_full(setup):
    model, processor, rows, dna, dna_mask = setup
    batch = processor.collate(rows)
    full = _loss_and_grads(model, batch, dna, dna_mask, "full")
    _assert_same(full, _loss_and_grads(model, batch, dna, dna_mask, "reply"))
    _assert_same(full, _loss_and_grads(model, batch, dna, dna_mask, "reply", chunk=3))  # chunks cut replies


def test_packed_attention_keeps_samples_apart(setup):
    """Changing the first sample changes nothing the second and third samples see."""
    model, processor, rows, dna, dna_mask = setup
    other = processor({**_examples()[0], "question": "A different and much longer first question?"})
    with torch.no_grad():
        losses = []
        for first in (rows[0], other):
            batch = pack_rows([first, *rows[1:]], processor.tokenizer.pad_token_id)
            hidden = model.hidden_states(
                batch["input_ids"], batch["attention_mask"], dna, dna_mask, batch["position_ids"], batch["cu_seq_lens"]
            )
            losses.append(hidden[0, int(batch["cu_seq_lens"][1]) :])
    torch.testing.assert_close(losses[0], losses[1])


def test_token_logps_match_a_full_log_softmax(setup):
    model, processor, rows, dna, dna_mask = setup
    batch = processor.collate(rows)
    score = batch["labels"] != -100  # score the reply tokens
    with torch.no_grad():
        got = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            dna_embeds=dna,
            dna_mask=dna_mask,
            score_mask=score.long(),
        ).token_logps
        model.logits = "full"
        logits = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            dna_embeds=dna,
            dna_mask=dna_mask,
            labels=batch["labels"],
        ).logits
        model.logits = "reply"
    want = logits[:, :-1].float().log_softmax(-1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    assert (got[:, 0] == 0).all()
    torch.testing.assert_close(got[:, 1:][score[:, 1:]], want[score[:, 1:]], rtol=1e-5, atol=1e-5)
    assert (got[:, 1:][~score[:, 1:]] == 0).all()


def test_chunked_logps_keep_one_chunk_of_logits_for_the_backward():
    """Saved for the backward: the hidden rows, never a (rows x vocabulary) matrix."""
    torch.manual_seed(0)
    head = torch.nn.Linear(32, 50_000, bias=False)
    hidden = torch.randn(400, 32, requires_grad=True)
    targets = torch.randint(0, 50_000, (400,))
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        chunked_token_logps(hidden, targets, head, chunk=64).sum().backward()
    assert max(saved) < 64 * 50_000 * 2
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        (head(hidden).float().log_softmax(-1).gather(-1, targets[:, None])).sum().backward()
    assert max(saved) >= 400 * 50_000


def test_packed_batch_without_packing_attention_names_the_switch(tiny_models, setup):
    _, processor, rows, dna, dna_mask = setup
    plain, _ = DNAFusionLM.from_config(fusion_config(tiny_models), DNA_HIDDEN)
    batch = pack_rows(rows, processor.tokenizer.pad_token_id)
    with pytest.raises(ValueError, match=r"train\.packing=true"):
        plain(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            labels=batch["labels"],
            dna_embeds=dna,
            dna_mask=dna_mask,
            position_ids=batch["position_ids"],
            cu_seq_lens=batch["cu_seq_lens"],
        )


def test_an_unknown_logits_setting_is_named_before_any_weights_load(tmp_path):
    with pytest.raises(RecipeError, match=r"^recipe key 'logits' must be one of reply, full, got 'some'$"):
        DNAFusionConfig.from_dict({"llm": {"name_or_path": str(tmp_path / "no-such-llm")}, "logits": "some"})


def test_the_per_sample_loop_on_a_gpu_is_named_once_with_its_reason():
    import warnings

    from dnallm.fusion.packing import packed_kernel, varlen_blocker, warn_per_sample

    query = torch.zeros(1, 2, 3, 8)  # (batch, heads, tokens, dim), fp32 on the CPU
    assert varlen_blocker(query) == "not on a GPU" and packed_kernel(query) == "per-sample"
    reason = "float32 activations (varlen needs float16 or bfloat16)"
    warn_per_sample.cache_clear()
    with pytest.warns(
        RuntimeWarning, match=r"runs one SDPA call per sample, not one varlen call: float32 activations"
    ):
        warn_per_sample(reason)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_per_sample(reason)  # said once, not at every layer and step
