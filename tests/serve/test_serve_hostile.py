"""The server against hostile clients: text the tokenizer cannot take, foreign Host headers,
non-JSON bodies, and slow or idle connections. Traffic goes only to a test server on
127.0.0.1; every loop is bounded in count and time."""

import dataclasses
import json
import socket
import time

import pytest
from conftest import LiveServer
from serve_helpers import health, request, tagged

SURROGATE = "\ud800"


@pytest.fixture(scope="module")
def open_server(session, limits):
    """Without a key, as most local servers run."""
    from dnallm.serve.server import create_app

    live = LiveServer(create_app(session, limits))
    yield live
    live.stop()


def chat_body(session, rec, **fields) -> dict:
    return {"model": session.name, "messages": [{"role": "user", "content": tagged(rec)}], "max_tokens": 2, **fields}


@pytest.mark.parametrize(
    "where, param",
    [
        ("system", "messages.0.content"),
        ("user", "messages.1.content"),
        ("content part", "messages.1.content.0.text"),
        ("dna", "dna.reference"),
        ("stop", "stop.0"),
    ],
)
def test_a_lone_surrogate_in_any_field_is_400_naming_it(where, param, open_server, session, test_records):
    rec = test_records[0]
    system = {"role": "system", "content": "Be brief." + (SURROGATE if where == "system" else "")}
    user_text = tagged(rec) + (SURROGATE if where in ("user", "content part") else "")
    user = {"role": "user", "content": [{"type": "text", "text": user_text}] if where == "content part" else user_text}
    body = {"model": session.name, "messages": [system, user], "max_tokens": 2}
    if where == "dna":
        body.update(
            dna={"reference": rec["reference_sequence"][:-1] + SURROGATE, "variant": rec["variant_sequence"]},
            messages=[system, {"role": "user", "content": "Which disease?"}],
        )
    if where == "stop":
        body["stop"] = [SURROGATE]
    # json.dumps escapes the surrogate as \ud800: valid JSON
    status, _, reply = request(open_server, "POST", "/v1/chat/completions", json.dumps(body).encode())
    assert status == 400 and reply["error"]["code"] == "invalid_text" and reply["error"]["param"] == param, reply
    assert "lone surrogate (U+D800)" in reply["error"]["message"]
    status, _, _ = request(open_server, "POST", "/v1/chat/completions", chat_body(session, rec))
    assert status == 200


def test_foreign_host_and_non_json_bodies_are_refused(open_server, session, test_records):
    body = chat_body(session, test_records[0])
    for host in ("evil.example", "evil.example:80", "127.0.0.1.evil.example"):
        status, _, reply = request(open_server, "POST", "/v1/chat/completions", body, headers={"Host": host})
        assert status == 400 and reply["error"]["code"] == "host_not_allowed", reply
        assert "--allowed-hosts" in reply["error"]["message"]
    for host in (f"127.0.0.1:{open_server.port}", f"localhost:{open_server.port}", f"[::1]:{open_server.port}"):
        assert request(open_server, "GET", "/health", headers={"Host": host}, key=None)[0] == 200
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        status, _, reply = request(
            open_server,
            "POST",
            "/v1/chat/completions",
            json.dumps(body).encode(),
            headers={"Content-Type": content_type},
        )
        assert status == 415 and reply["error"]["code"] == "unsupported_media_type", reply
    status, _, _ = request(
        open_server,
        "POST",
        "/v1/chat/completions",
        json.dumps(body).encode(),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert status == 200


def test_allowed_hosts_widen_the_list(session, limits, test_records):
    from dnallm.serve.server import create_app

    live = LiveServer(create_app(session, limits, allowed_hosts=["127.0.0.1", "dna.lab.example"]))
    try:
        assert request(live, "GET", "/health", headers={"Host": "dna.lab.example:8000"}, key=None)[0] == 200
        assert request(live, "GET", "/health", headers={"Host": "localhost"}, key=None)[0] == 400
    finally:
        live.stop()


def slow_connection(port: int, first: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(first)
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """True when the server has closed ``sock`` (end of stream or reset), False while it is open."""
    sock.settimeout(0.2)
    try:
        while sock.recv(4096):
            pass  # an error reply written before closing
        return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def content_length(reply: bytes) -> int:
    """The Content-Length of a raw HTTP reply's head (0 until the head is whole, or without one)."""
    head = reply.partition(b"\r\n\r\n")[0].decode("latin-1").lower()
    for line in head.split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip() == "content-length":
            return int(value.strip())
    return 0


def test_slow_and_idle_connections_are_closed_and_never_starve_requests(session, limits):
    """A bounded slowloris: more connections trickling headers a byte at a time than uvicorn's
    connection cap (past which everyone gets 503), for a few seconds. /health keeps answering,
    and each slow connection is closed."""
    from dnallm.serve.server import create_app, server_config

    tight = dataclasses.replace(limits, header_timeout_s=1.5, body_timeout_s=1.5, max_idle_connections=10)
    live = LiveServer(create_app(session, tight), limits=tight)
    try:
        n_slow = server_config(live.app, tight).limit_concurrency + 15
        slow = [slow_connection(live.port, b"G") for _ in range(n_slow)]
        deadline, answered = time.monotonic() + 4, 0
        while time.monotonic() < deadline:
            for sock in slow:
                try:
                    sock.send(b"E")  # never a whole request line
                except OSError:
                    pass
            assert request(live, "GET", "/health", key=None)[0] == 200  # never a 503
            answered += 1
            time.sleep(0.1)
        assert answered >= 5
        # Each one closed within its header timeout (give a loaded machine some seconds more).
        deadline = time.monotonic() + 10
        open_ones = slow
        while open_ones and time.monotonic() < deadline:
            open_ones = [sock for sock in open_ones if not closed_by_server(sock)]
        assert not open_ones, f"{len(open_ones)} of {len(slow)} slow connections still open"
        # A body sent too slowly: 408 once the body timeout passes.
        sock = slow_connection(
            live.port,
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
        )
        sock.settimeout(10)
        started = time.monotonic()
        reply = b""
        while b"\r\n\r\n" not in reply or len(reply.partition(b"\r\n\r\n")[2]) < content_length(reply):
            chunk = sock.recv(4096)  # the head and the body may come in two segments
            if not chunk:
                break
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 408") and b"body_timeout" in reply and time.monotonic() - started < 8, reply
        for s in [*slow, sock]:
            s.close()
        assert health(live)["status"] == "ok"
    finally:
        live.stop()


def test_a_prompt_past_the_models_context_is_400_before_any_generation(session, limits, test_records):
    from dnallm.fusion.generate import context_length
    from dnallm.serve.server import create_app

    context = context_length(session.model)
    roomy = dataclasses.replace(limits, max_prompt_tokens=10 * context, max_body_bytes=8 << 20)
    live = LiveServer(create_app(session, roomy))
    try:
        question = "why " * context  # a token or more per word
        content = question + tagged(test_records[0])
        body = {"model": session.name, "messages": [{"role": "user", "content": content}], "max_tokens": 2}
        status, _, reply = request(live, "POST", "/v1/chat/completions", body)
        assert status == 400 and reply["error"]["code"] == "context_length_exceeded", reply
        assert f"context of {context}" in reply["error"]["message"]
        assert request(live, "POST", "/v1/chat/completions", chat_body(session, test_records[0]))[0] == 200
    finally:
        live.stop()


@pytest.mark.parametrize("path", ["/v1/explain", "/v1/chat/completions"])
def test_a_4_mb_body_is_answered_413_with_json_not_a_reset(open_server, limits, path):
    big = b'{"x": "' + b"A" * (4 << 20) + b'"}'
    assert len(big) > limits.max_body_bytes
    status, _, reply = request(open_server, "POST", path, big)
    assert status == 413 and reply["error"]["code"] == "body_too_large", reply
    chunked = iter([big[i : i + 65_536] for i in range(0, len(big), 65_536)])  # no Content-Length
    status, _, reply = request(open_server, "POST", path, chunked)
    assert status == 413 and reply["error"]["code"] == "body_too_large", reply
    assert health(open_server)["status"] == "ok"
