"""Time to first token and streaming rate of ``dnallm serve``, printed as JSON.

Starts the server in this process on a free 127.0.0.1 port and sends streaming requests
one after another (the server generates one at a time), each for a reply of exactly
``--tokens`` tokens (end-of-turn banned), with random planted-signal DNA of ``--length`` bp.

    python scripts/bench_serve.py runs/kegg-tiny --requests 5 --tokens 128
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import statistics
import threading
import time

import uvicorn

from dnallm.data.synthetic import planted_records
from dnallm.serve.protocol import Limits
from dnallm.serve.server import create_app
from dnallm.serve.session import ModelSession


def start_server(app) -> tuple[uvicorn.Server, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    return server, sock.getsockname()[1]


def timed_stream(port: int, body: dict) -> tuple[float, float, int]:
    """-> (seconds to the first content chunk, seconds in all, content chunks)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    start = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"server answered {resp.status}: {resp.read()[:500]!r}")
    first, chunks = None, 0
    # Stop at the end-of-stream event: reading on to the end of the socket would wait out
    # the server's keep-alive timeout.
    while (line := resp.fp.readline()) and not line.startswith(b"data: [DONE]"):
        if not line.startswith(b"data: {"):
            continue
        choices = json.loads(line[6:])["choices"]
        if choices and choices[0]["delta"].get("content"):
            first = first or time.perf_counter() - start
            chunks += 1
    conn.close()
    return first or float("nan"), time.perf_counter() - start, chunks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--length", type=int, default=4001, help="bp per sequence (odd)")
    parser.add_argument("--device")
    args = parser.parse_args()

    session = ModelSession.load(args.checkpoint, device=args.device)
    app = create_app(session, Limits(max_new_tokens=args.tokens))
    server, port = start_server(app)
    records = planted_records(args.requests, length=args.length, seed=1)
    first_token, total = [], []
    for rec in records:
        body = {
            "model": session.name,
            "messages": [{"role": "user", "content": rec["question"]}],
            "stream": True,
            "dna": {"reference": rec["reference_sequence"], "variant": rec["variant_sequence"]},
            "max_tokens": args.tokens,
            "logit_bias": {str(session.eos_id): -100},
        }
        ttft, seconds, _ = timed_stream(port, body)
        first_token.append(ttft)
        total.append(seconds)
    server.should_exit = True
    rates = [(args.tokens - 1) / (t - f) for t, f in zip(total, first_token) if t > f]
    print(
        json.dumps(
            {
                "checkpoint": str(args.checkpoint),
                "device": session.device,
                "requests": args.requests,
                "reply_tokens": args.tokens,
                "dna_bp": args.length,
                "dna_window": session.window,
                "time_to_first_token_s": {"median": statistics.median(first_token), "max": max(first_token)},
                "decode_tokens_per_s": {"median": statistics.median(rates), "min": min(rates)},
                "generated_tokens": app.state.slots.generated_tokens,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
