"""Plain-HTTP helpers for the serving tests (fresh connection per request, no retries)."""

import http.client
import json
import time


def tagged(rec, question=None) -> str:
    return f"<reference>{rec['reference_sequence']}</reference>\n<variant>{rec['variant_sequence']}</variant>\n{question or rec['question']}"


def request(server, method, path, body=None, headers=None, key="server", timeout=60):
    """One request on a fresh connection -> (status, headers, parsed JSON or raw bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    key = server.api_key if key == "server" else key
    hdrs = {"Authorization": f"Bearer {key}"} if key else {}
    hdrs.update(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    if body is not None:
        hdrs.setdefault("Content-Type", "application/json")
    try:
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    try:
        return resp.status, dict(resp.getheaders()), json.loads(raw)
    except ValueError:
        return resp.status, dict(resp.getheaders()), raw


def health(server) -> dict:
    return request(server, "GET", "/health", key=None)[2]


def wait_for(server, predicate, seconds=30) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        state = health(server)
        if predicate(state):
            return state
        time.sleep(0.05)
    raise AssertionError(f"server state never matched; last: {state}")
