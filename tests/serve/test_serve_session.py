"""The loaded checkpoint: prompts laid out as in training, streamed replies, cancel, terminal chat."""

import io

import pytest

from dnallm.data.chat import DNA_PAD, parse_answer
from dnallm.data.kegg import load_examples
from dnallm.eval.kegg import generate_answers
from dnallm.fusion.projector import n_pooled
from dnallm.serve.chat import ChatREPL
from dnallm.serve.session import Conversation, Sampling


def conversation(session, rec, turns=None):
    dna = session.prepare_dna(rec["reference_sequence"], rec["variant_sequence"], 10_000)
    return Conversation(turns or [{"role": "user", "content": rec["question"]}], dna)


def test_single_turn_prompt_is_the_training_prompt(session, planted_files, test_records):
    example = load_examples(planted_files["test"], session.window)[0]
    expected = session.processor(example, with_answer=False)["input_ids"]
    assert session.prompt_ids(conversation(session, test_records[0])) == expected


def test_streamed_reply_equals_evaluation_output(session, planted_files, test_records):
    examples = load_examples(planted_files["test"], session.window).select(range(3))
    expected = generate_answers(
        session.model,
        session.encoder,
        session.processor,
        examples,
        batch_size=1,
        max_new_tokens=24,
        encoder_batch_size=8,
        device="cpu",
    )
    for rec, want in zip(test_records[:3], expected):
        pieces = list(session.stream(conversation(session, rec), Sampling(max_new_tokens=24)))
        assert "".join(pieces) == want


def test_multi_turn_prompt_keeps_history_and_one_dna_pair(session, test_records):
    rec = test_records[0]
    turns = [
        {"role": "user", "content": rec["question"]},
        {"role": "assistant", "content": "Answer: melanoma"},
        {"role": "user", "content": "Why that disease?"},
    ]
    conv = conversation(session, rec, turns)
    ids = session.prompt_ids(conv)
    text = session.tokenizer.decode(ids)
    n_summary = session.processor.summary_tokens  # the variant summary's positions, after the two blocks
    n_pad = sum(session.processor.n_placeholders(s) for s in (conv.dna.reference, conv.dna.variant)) + n_summary
    assert (
        ids.count(session.tokenizer.convert_tokens_to_ids(DNA_PAD))
        == n_pad
        == 2 * n_pooled(session.window, session.processor.pool) + n_summary
    )
    assert text.index("<|dna_start|>") < text.index("Answer: melanoma") < text.index("Why that disease?")
    assert session.reply(conv, Sampling(max_new_tokens=8)) is not None


def test_logit_bias_and_length_finish(session, test_records):
    token = session.tokenizer.convert_tokens_to_ids("A")
    streamer = session.text_streamer(timeout=60)
    generation = session.start(
        conversation(session, test_records[0]), Sampling(max_new_tokens=5, logit_bias={token: 100.0}), streamer
    )
    text = "".join(streamer)
    generation.join()
    assert generation.new_tokens == [token] * 5
    assert text == "AAAAA" and generation.finish_reason == "length"


def test_closing_the_stream_cancels_generation(session, test_records):
    no_stop = Sampling(max_new_tokens=3000, logit_bias={session.eos_id: -100.0})
    streamer = session.text_streamer(timeout=60)
    generation = session.start(conversation(session, test_records[0]), no_stop, streamer)
    for _, piece in zip(range(3), streamer):
        pass
    generation.cancel()
    generation.join(timeout=30)
    assert generation.done and generation.cancelled
    assert 0 < len(generation.new_tokens) < 3000


def test_leaving_the_stream_early_cancels_and_waits_for_the_worker(session, test_records):
    no_stop = Sampling(max_new_tokens=3000, logit_bias={session.eos_id: -100.0})
    reply = session.start(conversation(session, test_records[0]), no_stop, session.text_streamer(timeout=60))
    pieces = reply.pieces()
    assert all(next(pieces) for _ in range(3))
    pieces.close()
    assert reply.done and reply.cancelled  # close() returned only once the worker had stopped
    assert 0 < len(reply.new_tokens) < 3000


def test_a_failed_generation_reaches_the_reader(session, test_records):
    out_of_vocabulary = Sampling(max_new_tokens=4, logit_bias={10**9: 1.0})
    reply = session.start(conversation(session, test_records[0]), out_of_vocabulary, session.text_streamer(60))
    with pytest.raises(RuntimeError, match="generation failed: .*out of bounds"):
        list(reply.pieces())
    assert reply.done and not reply.cancelled


def test_repl_commands_and_multi_turn(session, planted_files, test_records, tmp_path):
    rec = test_records[1]
    fasta = tmp_path / "pair.fa"
    fasta.write_text(f">ref\n{rec['reference_sequence']}\n>alt\n{rec['variant_sequence']}\n")
    script = (
        "\n".join(
            [
                "what disease?",
                "/help",
                f"/dna {fasta}",
                rec["question"],
                "and why?",
                "/reset",
                f"/dna {planted_files['test']} 99",
                "/dna",
                "ACGU",
                "",
                "ACGT",
                "",
                "/bogus",
                "/quit",
                "never read",
            ]
        )
        + "\n"
    )
    out = io.StringIO()
    repl = ChatREPL(session, Sampling(max_new_tokens=16), 10_000, stdin=io.StringIO(script), stdout=out)
    repl.run()
    text = out.getvalue()
    expected = session.reply(conversation(session, rec), Sampling(max_new_tokens=16))
    assert "Set the DNA first" in text
    assert "/dna FILE.jsonl N" in text  # help
    assert "DNA set: reference 4001 bp, variant 4001 bp (model reads the central 32 bp)" in text
    assert f"model> {expected}\n" in text
    assert "Conversation cleared" in text
    assert "record index 99 out of range (file has 8 records" in text
    assert "'ACGU' is neither a file nor a DNA sequence" in text
    assert "unknown command /bogus" in text
    assert repl.turns == [] and repl.dna is not None  # /reset kept the DNA, dropped the turns
    if parse_answer(expected):
        assert f"[predicted disease: {parse_answer(expected)}]" in text
