"""``dnallm serve``: an OpenAI-compatible chat server and a browser page, one model loaded once.

Routes: ``POST /v1/chat/completions`` (streaming as server-sent events), ``GET /v1/models``,
``GET /health`` (no key needed), ``GET /`` (the page) and ``GET /static/*``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import time
from contextlib import aclosing
from importlib.resources import files

import anyio
from fastapi import FastAPI, Request
from starlette.requests import ClientDisconnect
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from transformers import AsyncTextIteratorStreamer

from dnallm.data.chat import parse_answer
from dnallm.data.dna import RecordError
from dnallm.data.vcf import InputError
from dnallm.fusion.generate import context_length
from dnallm.serve.inputs import DNAInputError
from dnallm.serve.protocol import (
    APIError,
    ChatRequest,
    Completion,
    Limits,
    check_prompt_length,
    dna_error,
    explain_response,
    parse_explain_request,
    parse_request,
    sse,
    to_conversation,
    to_sampling,
)
from dnallm.serve.session import Conversation, ModelSession, Sampling
from dnallm.serve.slots import QueueFull, Slots, Ticket

log = logging.getLogger("dnallm.serve")
STATIC = {"app.js": "text/javascript", "style.css": "text/css"}
PUBLIC_PATHS = ("/health",)


def error_response(err: APIError, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


def presented_key(headers: Headers) -> str:
    """The key from ``Authorization: Bearer KEY``, ``Basic`` (the password; browsers) or ``X-API-Key``."""
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return credentials.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(credentials.strip(), validate=True).decode("utf-8").partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return ""
    return headers.get("x-api-key", "")


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def host_name(host_header: str) -> str:
    """The name of a ``Host`` header without its port: ``[::1]:8000`` -> ``::1``."""
    if host_header.startswith("["):
        return host_header[1:].partition("]")[0]
    return host_header.rpartition(":")[0] if host_header.count(":") == 1 else host_header


class Guard:
    """ASGI middleware: the ``Host`` header on the allow-list (a web page elsewhere cannot reach a
    local server through DNS rebinding), the API key on every route but ``/health``, body size
    from Content-Length."""

    def __init__(self, app, api_key: str | None, max_body_bytes: int, allowed_hosts: frozenset[str]):
        self.app = app
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        host = host_name(headers.get("host", "")).lower()
        if "*" not in self.allowed_hosts and host not in self.allowed_hosts:
            err = APIError(
                400,
                f"Host {host[:100]!r} is not served here; start the server with "
                f"--allowed-hosts {host[:100] or 'NAME'} to accept it",
                code="host_not_allowed",
            )
            return await error_response(err, {"Connection": "close"})(scope, receive, send)
        if self.api_key and scope["path"] not in PUBLIC_PATHS:
            if not hmac.compare_digest(presented_key(headers).encode(), self.api_key.encode()):
                return await self._unauthorized(scope["path"])(scope, receive, send)
        length = headers.get("content-length")
        if length is not None and not length.isdigit():
            err = APIError(400, f"Content-Length {length[:40]!r} is not a number", code="invalid_body")
            return await error_response(err, {"Connection": "close"})(scope, receive, send)
        if length is not None and int(length) > self.max_body_bytes:
            err = APIError(
                413,
                f"request body of {length} bytes exceeds the limit of {self.max_body_bytes} bytes",
                code="body_too_large",
            )
            if int(length) <= DRAIN_BYTES:
                await drain(receive)  # so that the client, still sending, reads the 413 (no reset)
            return await error_response(err, {"Connection": "close"})(scope, receive, send)
        await self.app(scope, receive, send)

    @staticmethod
    def _unauthorized(path: str) -> Response:
        err = APIError(
            401,
            "missing or wrong API key: send 'Authorization: Bearer KEY'",
            code="invalid_api_key",
            type_="authentication_error",
        )
        # The page asks the browser for the key (as the password of a login prompt); the API does not.
        challenge = "Bearer" if path.startswith("/v1/") else 'Basic realm="dnallm", charset="UTF-8"'
        return error_response(err, {"WWW-Authenticate": challenge})


# A refused body up to this size is read and dropped before the 413 goes out: a client closed on
# mid-send sees a connection reset, not the answer. Larger ones are cut off.
DRAIN_BYTES = 64 << 20
DRAIN_SECONDS = 10.0


async def drain(receive) -> None:
    """Read and drop what is left of a request body (``DRAIN_BYTES``, ``DRAIN_SECONDS`` at most)."""
    seen = 0
    with anyio.move_on_after(DRAIN_SECONDS):
        while seen <= DRAIN_BYTES:
            message = await receive()
            seen += len(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body", False):
                return


async def read_json(request: Request, limit: int, timeout_s: float):
    """The body as JSON; 415 unless sent as JSON, 413 past ``limit`` bytes (also without
    Content-Length), 408 when not all there within ``timeout_s``, 400 if malformed."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        # A cross-site form or text/plain POST (no CORS preflight) is never read as a request.
        raise APIError(
            415,
            f"Content-Type {media_type[:80] or '(none)'!r}: send the body as application/json",
            code="unsupported_media_type",
        )
    body, more = bytearray(), True
    try:
        with anyio.fail_after(timeout_s):
            while more:
                message = await request.receive()
                if message["type"] == "http.disconnect":
                    raise ClientDisconnect()
                body += message.get("body", b"")
                more = message.get("more_body", False)
                if len(body) > limit:
                    if more:
                        await drain(request.receive)  # the client reads the 413 rather than a reset
                    raise APIError(413, f"request body exceeds the limit of {limit} bytes", code="body_too_large")
    except ClientDisconnect:
        raise APIError(400, "client disconnected while sending the body", code="client_disconnected") from None
    except TimeoutError:
        raise APIError(408, f"request body not received within {timeout_s:g} s", code="body_timeout") from None
    try:
        return json.loads(body)
    except json.JSONDecodeError as e:
        raise APIError(
            400, f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}", code="invalid_json"
        ) from None
    except UnicodeDecodeError as e:
        raise APIError(
            400, f"malformed JSON: body is not UTF-8 ({e.reason} at byte {e.start})", code="invalid_json"
        ) from None
    except RecursionError:
        raise APIError(400, "malformed JSON: nested too deeply", code="invalid_json") from None


class Run:
    """One generation driven from the event loop; closing ``pieces`` early cancels it."""

    def __init__(self, session: ModelSession, conv: Conversation, sampling: Sampling, n_prompt: int, slots: Slots):
        self.session, self.conv, self.sampling, self.n_prompt, self.slots = session, conv, sampling, n_prompt, slots
        self.generation = None

    async def pieces(self):
        streamer = AsyncTextIteratorStreamer(self.session.tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.generation = self.session.start(self.conv, self.sampling, streamer)
        try:
            async with aclosing(self.generation.apieces()) as pieces:
                async for piece in pieces:
                    yield piece
        finally:
            self.slots.count(self.generation)  # the worker has stopped: apieces waits for it

    @property
    def finish_reason(self) -> str:
        return self.generation.finish_reason

    @property
    def usage(self) -> dict:
        return Completion.usage(self.n_prompt, len(self.generation.new_tokens))


async def stream_events(run: Run, completion: Completion, ticket: Ticket, include_usage: bool):
    try:
        await ticket.acquire()
        yield completion.chunk({"role": "assistant", "content": ""})
        text = []
        async with aclosing(run.pieces()) as pieces:
            async for piece in pieces:
                text.append(piece)
                yield completion.chunk({"content": piece})
        yield completion.chunk({}, run.finish_reason, prediction=parse_answer("".join(text)) or None)
        if include_usage:
            yield completion.usage_chunk(run.usage)
    except RuntimeError as e:
        log.exception("generation failed")
        yield sse({"error": {"message": str(e), "type": "server_error", "param": None, "code": "generation_failed"}})
    finally:
        ticket.release()
    yield "data: [DONE]\n\n"


async def complete(run: Run, completion: Completion, ticket: Ticket, request: Request) -> JSONResponse:
    try:
        await ticket.acquire()
        text = []
        async with aclosing(run.pieces()) as pieces:
            async for piece in pieces:
                text.append(piece)
                if await request.is_disconnected():
                    break  # aclosing closes pieces(), which cancels the generation
    except RuntimeError as e:
        log.exception("generation failed")
        raise APIError(500, str(e), code="generation_failed", type_="server_error") from None
    finally:
        ticket.release()
    return JSONResponse(completion.response("".join(text), run.finish_reason, run.usage))


def check_model(name: str, session: ModelSession) -> None:
    if name != session.name:
        raise APIError(
            404,
            f"model {name!r} not found; this server serves {session.name!r}",
            code="model_not_found",
            param="model",
        )


def reserve(slots: Slots) -> Ticket:
    """A place in the line for the model, or 429 when the line is full."""
    try:
        return slots.reserve()
    except QueueFull as e:
        raise APIError(429, str(e), code="queue_full", type_="rate_limit_error") from None


def create_app(
    session: ModelSession, limits: Limits, api_key: str | None = None, allowed_hosts=LOOPBACK_NAMES
) -> FastAPI:
    """``allowed_hosts``: names the ``Host`` header may carry (``*``: any)."""
    app = FastAPI(title="dnallm", docs_url=None, redoc_url=None, openapi_url=None)
    slots = Slots(limits.max_queue)
    started = int(time.time())
    app.state.slots = slots

    @app.exception_handler(APIError)
    async def _api_error(request: Request, err: APIError):
        return error_response(err)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(
            APIError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", code=code)
        )

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": session.name, **slots.stats()}

    def model_card() -> dict:
        return {"id": session.name, "object": "model", "created": started, "owned_by": "dnallm"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        check_model(model_id, session)
        return model_card()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        req: ChatRequest = parse_request(await read_json(request, limits.max_body_bytes, limits.body_timeout_s))
        check_model(req.model, session)
        conv = to_conversation(req, session, limits)
        sampling = to_sampling(req, session, limits)
        n_prompt = len(session.prompt_ids(conv))
        check_prompt_length(n_prompt, limits, sampling.max_new_tokens, context_length(session.model))
        ticket = reserve(slots)
        run, completion = Run(session, conv, sampling, n_prompt, slots), Completion(session.name)
        if not req.stream:
            return await complete(run, completion, ticket, request)
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return StreamingResponse(
            stream_events(run, completion, ticket, include_usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            background=BackgroundTask(ticket.release),  # if the stream never started
        )

    @app.post("/v1/explain")
    async def explain(request: Request):
        req = parse_explain_request(await read_json(request, limits.max_body_bytes, limits.body_timeout_s))
        if req.model is not None:
            check_model(req.model, session)
        try:
            dna = session.prepare_dna(req.dna.reference, req.dna.variant, limits.max_dna_length)
        except DNAInputError as e:
            raise dna_error(e) from None
        ticket = reserve(slots)
        try:
            await ticket.acquire()  # the model runs one request at a time, generation or attribution
            explanation = await anyio.to_thread.run_sync(
                lambda: session.explain(
                    dna,
                    req.question,
                    label=req.label,
                    method=req.method,
                    region=req.region,
                    max_new_tokens=limits.max_new_tokens,
                )
            )
        except (RecordError, InputError) as e:
            raise APIError(422, str(e), code="cannot_explain") from None
        finally:
            ticket.release()
        return explain_response(explanation)

    @app.get("/")
    async def page():
        return Response(static_text("index.html"), media_type="text/html; charset=utf-8")

    @app.get("/static/{name}")
    async def static(name: str):
        if name not in STATIC:
            raise APIError(404, f"no static file {name!r}", code="not_found")
        return Response(static_text(name), media_type=f"{STATIC[name]}; charset=utf-8")

    app.add_middleware(
        Guard,
        api_key=api_key,
        max_body_bytes=limits.max_body_bytes,
        allowed_hosts=frozenset(h.lower() for h in allowed_hosts),
    )
    return app


def static_text(name: str) -> str:
    return (files("dnallm.serve") / "static" / name).read_text(encoding="utf-8")


def server_config(app: FastAPI, limits: Limits, log_level: str = "info"):
    """uvicorn's settings: slow and idle connections bounded by ``GuardedH11`` (uvicorn itself
    times out only keep-alive connections, never a request's headers); the connection cap that
    answers 503 lies well above the idle cap, so idle connections go before anyone gets a 503."""
    import uvicorn

    return uvicorn.Config(
        app,
        log_level=log_level,
        http=guarded_h11(limits.header_timeout_s, limits.max_idle_connections),
        limit_concurrency=limits.max_queue + limits.max_idle_connections + 64,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=5,
    )


def run_server(app: FastAPI, sock, limits: Limits, log_level: str = "info") -> None:
    """Serve on ``sock``, bound before the model loaded (a port in use fails first)."""
    import uvicorn

    uvicorn.Server(server_config(app, limits, log_level)).run(sockets=[sock])


def guarded_h11(header_timeout_s: float, max_idle: int) -> type:
    """uvicorn's h11 protocol with two bounds on connections that hold no request in progress
    (fresh, between keep-alive requests, or sending headers a byte at a time): each is closed
    ``header_timeout_s`` after it became idle, and past ``max_idle`` of them the oldest goes."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    idle: dict = {}  # connection -> None, oldest first (one server's)

    class GuardedH11(H11Protocol):
        _timer = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._await_request()

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not None and not self.cycle.response_complete:
                self._stop_waiting()  # the headers are in: the app's own limits apply from here

        def on_response_complete(self) -> None:
            if not self.transport.is_closing():
                self._await_request()  # before super(): a pipelined request it starts ends the wait
            super().on_response_complete()

        def connection_lost(self, exc) -> None:
            self._stop_waiting()
            super().connection_lost(exc)

        def _await_request(self) -> None:
            self._stop_waiting()
            if len(idle) >= max_idle:
                next(iter(idle))._drop()
            idle[self] = None
            self._timer = self.loop.call_later(header_timeout_s, self._drop)

        def _stop_waiting(self) -> None:
            idle.pop(self, None)
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _drop(self) -> None:
            self._stop_waiting()
            if not self.transport.is_closing():
                self.transport.close()

    return GuardedH11
