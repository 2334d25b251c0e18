"""The OpenAI-compatible API on a real uvicorn server: the official client, streaming, errors, limits."""

import http.client
import json

import openai
import pytest

from dnallm.data.chat import parse_answer
from dnallm.data.kegg import load_examples
from dnallm.eval.kegg import generate_replies
from dnallm.serve.session import Conversation, Sampling
from serve_helpers import health, request, tagged, wait_for


def expected_reply(session, rec, max_new_tokens, turns=None):
    dna = session.prepare_dna(rec["reference_sequence"], rec["variant_sequence"], 10_000)
    return session.reply(
        Conversation(turns or [{"role": "user", "content": rec["question"]}], dna),
        Sampling(max_new_tokens=max_new_tokens),
    )


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=server.api_key, max_retries=0, timeout=120)


def test_models_and_health(client, server, session):
    assert [m.id for m in client.models.list().data] == [session.name]
    assert client.models.retrieve(session.name).id == session.name
    assert health(server)["status"] == "ok"
    status, _, body = request(server, "GET", "/health", key=None)
    assert status == 200 and body["model"] == session.name


def test_openai_client_with_tagged_dna(client, session, test_records):
    rec = test_records[0]
    resp = client.chat.completions.create(
        model=session.name, messages=[{"role": "user", "content": tagged(rec)}], max_tokens=24
    )
    want = expected_reply(session, rec, 24)
    assert resp.object == "chat.completion" and resp.id.startswith("chatcmpl-")
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == want
    assert resp.choices[0].finish_reason in ("stop", "length")
    assert resp.usage.prompt_tokens == len(
        session.prompt_ids(
            Conversation(
                [{"role": "user", "content": rec["question"]}],
                session.prepare_dna(rec["reference_sequence"], rec["variant_sequence"], 10_000),
            )
        )
    )
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    assert resp.model_extra["prediction"] == (parse_answer(want) or None)


def test_openai_client_streams_with_dna_field(client, session, test_records):
    rec = test_records[1]
    stream = client.chat.completions.create(
        model=session.name,
        messages=[{"role": "user", "content": rec["question"]}],
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"dna": {"reference": rec["reference_sequence"], "variant": rec["variant_sequence"]}},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(content) == expected_reply(session, rec, 24)
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].model_extra["prediction"] == (parse_answer("".join(content)) or None)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= 1
    assert len({c.id for c in chunks}) == 1


def test_dna_content_parts_as_chat_records_hold_them(client, server, session, test_records):
    rec = test_records[1]
    parts = [
        {"type": "dna", "sequence": rec["reference_sequence"], "pair": "reference"},
        {"type": "dna", "sequence": rec["variant_sequence"], "pair": "variant"},
        {"type": "text", "text": rec["question"]},
    ]
    resp = client.chat.completions.create(
        model=session.name, messages=[{"role": "user", "content": parts}], max_tokens=24
    )
    assert resp.choices[0].message.content == expected_reply(session, rec, 24)
    body = {"model": session.name, "max_tokens": 4, "messages": [{"role": "user", "content": parts[::-1]}]}
    status, _, reply = request(server, "POST", "/v1/chat/completions", body)
    assert status == 400 and reply["error"]["param"] == "messages.0.content", reply
    assert 'two parts marked "pair": "reference" then "variant"' in reply["error"]["message"]
    tagged_too = {**body, "messages": [{"role": "user", "content": [*parts, {"type": "text", "text": tagged(rec)}]}]}
    status, _, reply = request(server, "POST", "/v1/chat/completions", tagged_too)
    assert status == 400 and reply["error"]["code"] == "duplicate_dna", reply


def test_multi_turn_and_system_message(client, session, test_records):
    rec = test_records[2]
    first = expected_reply(session, rec, 16)
    messages = [
        {"role": "user", "content": tagged(rec)},
        {"role": "assistant", "content": first},
        {"role": "user", "content": [{"type": "text", "text": "Are you sure?"}]},
    ]
    resp = client.chat.completions.create(model=session.name, messages=messages, max_tokens=16)
    turns = [
        {"role": "user", "content": rec["question"]},
        {"role": "assistant", "content": first},
        {"role": "user", "content": "Are you sure?"},
    ]
    assert resp.choices[0].message.content == expected_reply(session, rec, 16, turns)


def test_client_errors_are_typed_and_named(client, session, test_records):
    rec = test_records[0]
    bad = rec["variant_sequence"][:100] + "x" + rec["variant_sequence"][101:]
    with pytest.raises(openai.UnprocessableEntityError) as e:
        client.chat.completions.create(
            model=session.name, messages=[{"role": "user", "content": tagged({**rec, "variant_sequence": bad})}]
        )
    assert (
        e.value.body["position"] == 100 and "variant" in e.value.body["message"] and "'X'" in e.value.body["message"]
    )
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=client.base_url, api_key="wrong", max_retries=0).models.list()
    with pytest.raises(openai.NotFoundError, match="not found; this server serves"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": tagged(rec)}])
    with pytest.raises(openai.BadRequestError, match="max_tokens=100000 exceeds this server's limit of 3000"):
        client.chat.completions.create(
            model=session.name, messages=[{"role": "user", "content": tagged(rec)}], max_tokens=100_000
        )
    with pytest.raises(openai.UnprocessableEntityError, match="this model reads DNA"):
        client.chat.completions.create(model=session.name, messages=[{"role": "user", "content": "what disease?"}])


def sse_stream(server, body, read_events=2):
    """Open a streaming request, read ``read_events`` SSE events, and return the open connection."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request(
        "POST",
        "/v1/chat/completions",
        body=json.dumps(body),
        headers={"Authorization": f"Bearer {server.api_key}", "Content-Type": "application/json"},
    )
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("content-type").startswith("text/event-stream")
    events = 0
    while events < read_events:
        line = resp.fp.readline()
        assert line, "stream ended early"
        events += line.startswith(b"data: ")
    return conn


def endless(session, rec) -> dict:
    """A request that cannot end by itself soon: end-of-turn banned, 3000 tokens allowed, and a
    plain-text token favoured, so that every token streams at once as text (a byte token of an
    unfinished UTF-8 character would be held back by the streamer until the character ends)."""
    plain = session.tokenizer.convert_tokens_to_ids("A")
    return {
        "model": session.name,
        "messages": [{"role": "user", "content": tagged(rec)}],
        "stream": True,
        "max_tokens": 3000,
        "logit_bias": {str(session.eos_id): -100, str(plain): 100},
    }


def test_disconnect_during_streaming_frees_the_slot(server, session, test_records):
    before = health(server)
    conn = sse_stream(server, endless(session, test_records[0]), read_events=4)
    assert health(server)["active"] == 1
    conn.close()
    state = wait_for(server, lambda s: s["active"] == 0 and s["cancelled"] == before["cancelled"] + 1, seconds=120)
    assert state["completed"] == before["completed"]
    # stopped early: far fewer than the 3000 tokens it was allowed
    assert 0 < state["generated_tokens"] - before["generated_tokens"] < 1000


def test_queue_limit_then_recovery(server, session, test_records):
    running = sse_stream(server, endless(session, test_records[0]), read_events=2)
    waiting = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    waiting.request(
        "POST",
        "/v1/chat/completions",
        body=json.dumps(endless(session, test_records[1])),
        headers={"Authorization": f"Bearer {server.api_key}", "Content-Type": "application/json"},
    )
    wait_for(server, lambda s: s["active"] == 1 and s["waiting"] == 1)
    status, headers, body = request(
        server, "POST", "/v1/chat/completions", {**endless(session, test_records[2]), "stream": False}
    )
    assert status == 429 and body["error"]["code"] == "queue_full" and "max_queue=1" in body["error"]["message"]
    running.close()
    waiting.close()
    wait_for(server, lambda s: s["active"] == 0 and s["waiting"] == 0)
    status, _, body = request(
        server,
        "POST",
        "/v1/chat/completions",
        {"model": session.name, "messages": [{"role": "user", "content": tagged(test_records[2])}], "max_tokens": 8},
    )
    assert status == 200 and body["choices"][0]["message"]["content"] == expected_reply(session, test_records[2], 8)


def test_disconnect_while_waiting_for_a_full_reply_frees_the_slot(server, session, test_records):
    before = health(server)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request(
        "POST",
        "/v1/chat/completions",
        body=json.dumps({**endless(session, test_records[1]), "stream": False}),
        headers={"Authorization": f"Bearer {server.api_key}", "Content-Type": "application/json"},
    )
    wait_for(server, lambda s: s["active"] == 1)
    conn.close()
    state = wait_for(server, lambda s: s["active"] == 0 and s["cancelled"] == before["cancelled"] + 1, seconds=120)
    assert 0 < state["generated_tokens"] - before["generated_tokens"] < 3000


def test_server_replies_as_eval_does_for_the_same_record(client, session, planted_files, test_records):
    # One generation path: `dnallm eval`'s greedy reply and the HTTP server's are the same text and the same cut.
    examples = load_examples(planted_files["test"], session.window).select(range(2))
    texts, cut = generate_replies(
        session.model,
        session.encoder,
        session.processor,
        examples,
        batch_size=1,
        max_new_tokens=24,
        encoder_batch_size=8,
        device="cpu",
    )
    for rec, want, was_cut in zip(test_records[:2], texts, cut):
        resp = client.chat.completions.create(
            model=session.name, messages=[{"role": "user", "content": tagged(rec)}], max_tokens=24
        )
        assert resp.choices[0].message.content == want
        assert resp.choices[0].finish_reason == ("length" if was_cut else "stop")
