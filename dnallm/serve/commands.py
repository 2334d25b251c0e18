"""``dnallm chat`` and ``dnallm serve`` subcommands (registered by ``dnallm.cli``)."""

from __future__ import annotations

import argparse
import errno
import ipaddress
import os
import socket
import sys
from pathlib import Path

from dnallm.argtypes import int_in

API_KEY_ENV = "DNALLM_API_KEY"


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("chat", help="ask a trained model about a variant in the terminal, replies streaming")
    _common(p)
    dna = p.add_argument_group("DNA to start with (or set it later with /dna)")
    dna.add_argument("--fasta", type=Path, help="two FASTA records: reference, then variant")
    dna.add_argument("--jsonl", type=Path, help="a KEGG-format JSONL file; with --record")
    dna.add_argument("--record", type=int_in(0), default=0, help="record index (0-based) in --jsonl")
    dna.add_argument("--ref", help="reference: bases, or a one-record FASTA file")
    dna.add_argument("--var", help="variant: bases, or a one-record FASTA file")
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.set_defaults(func=_chat)

    p = subparsers.add_parser("serve", help="OpenAI-compatible HTTP server and browser page for a trained model")
    _common(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int_in(1, 65535), default=8000)
    p.add_argument(
        "--allowed-hosts",
        default="",
        metavar="NAME,...",
        help="more names the Host header may carry (default: 127.0.0.1, localhost, ::1 and --host; '*': any)",
    )
    p.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_ENV),
        help=f"require this key on every route but /health (default: ${API_KEY_ENV})",
    )
    p.add_argument("--model-name", help="model id clients send (default: the recipe's run_name)")
    p.add_argument("--max-body-bytes", type=int_in(1024), default=1 << 20)
    p.add_argument("--max-prompt-tokens", type=int_in(1), default=8192)
    p.add_argument(
        "--max-queue", type=int_in(0), default=8, help="requests that may wait while one generates; more get 429"
    )
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=_serve)

    add_mcp_command(subparsers)


def add_mcp_command(subparsers) -> None:
    p = subparsers.add_parser(
        "mcp", help="the model as MCP tools for assistants (ask, predict_variant, annotate_vcf, explain, embed)"
    )
    p.add_argument("checkpoint", type=Path, help="a checkpoint-N directory or a run directory (latest checkpoint)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. llm.name_or_path=/models/Qwen3-4B")
    p.add_argument("--fasta", help="reference genome for predict_variant and annotate_vcf")
    p.add_argument("--data-root", type=Path, help="the folder annotate_vcf may read and write (nothing outside it)")
    p.add_argument(
        "--tool-timeout",
        action="append",
        default=[],
        metavar="[TOOL=]SECONDS",
        help="seconds a tool call may take, every tool's (300) or one's (explain=60); may be repeated",
    )
    p.add_argument("--device", help="cuda, cpu, ... (default: cuda if available)")
    http = p.add_argument_group("streamable HTTP (default: stdio)")
    http.add_argument("--http", action="store_true", help="serve streamable HTTP at /mcp instead of stdio")
    http.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    http.add_argument("--port", type=int_in(1, 65535), default=8001)
    http.add_argument("--allowed-hosts", default="", metavar="NAME,...", help="as for dnallm serve")
    http.add_argument(
        "--api-key", default=os.environ.get(API_KEY_ENV), help=f"require this key (default: ${API_KEY_ENV})"
    )
    http.add_argument("--max-body-bytes", type=int_in(1024), default=1 << 20)
    p.set_defaults(func=_mcp)


def _mcp(args) -> None:
    try:
        from dnallm.serve.mcp import create_mcp, parse_timeouts
    except ModuleNotFoundError as e:
        from dnallm.data.vcf import InputError

        if e.name != "mcp" and not (e.name or "").startswith("mcp."):
            raise
        raise InputError("dnallm mcp needs the mcp SDK: pip install 'dnallm-fusion[mcp]'") from None
    from dnallm.api import load
    from dnallm.hub import resolve_checkpoint
    from dnallm.serve.protocol import Limits
    from dnallm.serve.server import Guard, run_server

    timeouts = parse_timeouts(args.tool_timeout)
    if args.data_root is not None and not args.data_root.is_dir():
        raise FileNotFoundError(f"--data-root {args.data_root}: no such folder")
    if args.fasta and not Path(args.fasta).is_file():
        raise FileNotFoundError(f"--fasta {args.fasta}: no such file")
    sock = bind(args.host, args.port) if args.http else None  # a port in use fails before the model loads
    try:
        checkpoint = resolve_checkpoint(args.checkpoint)
        model = load(
            checkpoint, device=args.device, overrides=args.overrides, trust_remote_code=args.trust_remote_code
        )
    except BaseException:
        if sock is not None:
            sock.close()
        raise
    server = create_mcp(
        model, checkpoint, fasta=args.fasta, data_root=args.data_root, timeouts=timeouts, overrides=args.overrides
    )
    if not args.http:
        server.run("stdio")
        return
    from mcp.server.transport_security import TransportSecuritySettings

    hosts = http_hosts(args)
    # Our guard checks Host, the key and the body size, as for dnallm serve; the SDK's own Host check
    # would refuse the names given with --allowed-hosts.
    app = server.streamable_http_app(
        host=args.host,
        max_request_body_size=args.max_body_bytes,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    guarded = Guard(app, args.api_key, args.max_body_bytes, frozenset(hosts))
    print(f"MCP tools of {model.recipe.run_name!r} on http://{args.host}:{args.port}/mcp", file=sys.stderr)
    run_server(guarded, sock, Limits(max_body_bytes=args.max_body_bytes), log_level="warning")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", type=Path, help="a checkpoint-N directory or a run directory (latest checkpoint)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. llm.name_or_path=/models/Qwen3-4B")
    p.add_argument("--device", help="cuda, cpu, ... (default: cuda if available)")
    p.add_argument(
        "--max-new-tokens", type=int_in(1), default=512, help="longest reply (the server's limit and default)"
    )
    p.add_argument("--max-dna-length", type=int_in(1), default=100_000, help="longest sequence accepted, in bp")


def _chat(args) -> None:
    from dnallm.serve.chat import ChatREPL
    from dnallm.serve.session import ModelSession, Sampling

    start = _start_dna(args)  # before the (slow) model load, so that a typo fails fast
    session = ModelSession.load(
        args.checkpoint, device=args.device, overrides=args.overrides, trust_remote_code=args.trust_remote_code
    )
    sampling = Sampling(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p)
    repl = ChatREPL(session, sampling, args.max_dna_length)
    if start:
        repl.set_dna(*start)
    repl.run()


def _start_dna(args) -> tuple[str, str] | None:
    from dnallm.serve.chat import load_pair
    from dnallm.serve.inputs import DNAInputError, read_sequence_arg

    if args.fasta:
        return load_pair([str(args.fasta)])
    if args.jsonl:
        return load_pair([str(args.jsonl), str(args.record)])
    if args.ref or args.var:
        if not (args.ref and args.var):
            raise DNAInputError("give both --ref and --var")
        return read_sequence_arg(args.ref), read_sequence_arg(args.var)
    return None


def http_hosts(args) -> list[str]:
    """The Host names an HTTP server answers (``--host``, ``--allowed-hosts``, loopback), lower-cased,
    with the warnings a server reachable from elsewhere needs."""
    from dnallm.serve.server import LOOPBACK_NAMES

    if not _is_loopback(args.host) and not args.api_key:
        print(
            f"warning: serving on {args.host} without an API key: anyone who can reach it can use the model",
            file=sys.stderr,
        )
    if args.host in ("0.0.0.0", "::") and not args.allowed_hosts:
        print(
            f"note: only requests for {', '.join(LOOPBACK_NAMES)} are answered; name the server's other names "
            "with --allowed-hosts",
            file=sys.stderr,
        )
    named = (h.strip() for h in args.allowed_hosts.split(",") if h.strip())
    return [h.lower() for h in (*LOOPBACK_NAMES, args.host, *named)]


def _serve(args) -> None:
    from dnallm.serve.protocol import Limits
    from dnallm.serve.server import create_app, run_server
    from dnallm.serve.session import ModelSession

    allowed_hosts = http_hosts(args)
    limits = Limits(
        max_body_bytes=args.max_body_bytes,
        max_dna_length=args.max_dna_length,
        max_new_tokens=args.max_new_tokens,
        max_prompt_tokens=args.max_prompt_tokens,
        max_queue=args.max_queue,
    )
    sock = bind(args.host, args.port)  # before the (slow) model load: a port in use fails at once
    try:
        session = ModelSession.load(
            args.checkpoint,
            device=args.device,
            overrides=args.overrides,
            name=args.model_name,
            trust_remote_code=args.trust_remote_code,
        )
    except BaseException:
        sock.close()
        raise
    app = create_app(session, limits, api_key=args.api_key, allowed_hosts=allowed_hosts)
    print(
        f"serving {session.name!r} on http://{args.host}:{args.port}/ (page), /v1/chat/completions (API)",
        file=sys.stderr,
    )
    run_server(app, sock, limits, log_level=args.log_level)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``; a port in use or a host not of this machine is one line."""
    from dnallm.io import OutputPathError

    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a restart need not wait
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as e:
        fix = (
            "another server holds the port: stop it or choose another --port"
            if e.errno == errno.EADDRINUSE
            else "check --host and --port"
        )
        raise OutputPathError(f"cannot listen on {host}:{port} ({e.strerror or e}); {fix}") from None
    sock.set_inheritable(True)
    return sock


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
