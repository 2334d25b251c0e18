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
from dnallm.serve.inputs import DNAInputError
from dnallm.serve.protocol import (
    APIError, ChatRequest, Completion, Limits, check_prompt_length, dna_error, explain_response, parse_explain_request,
    parse_request, sse, to_conversation, to_sampling,
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


class Guard:
    """ASGI middleware: API key on every route but ``/health``; body size from Content-Length."""

    def __init__(self, app, api_key: str | None, max_body_bytes: int):
        self.app = app
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        if self.api_key and scope["path"] not in PUBLIC_PATHS:
            if not hmac.compare_digest(presented_key(headers).encode(), self.api_key.encode()):
                return await self._unauthorized(scope["path"])(scope, receive, send)
        length = headers.get("content-length")
        if length is not None and not length.isdigit():
            err = APIError(400, f"Content-Length {length[:40]!r} is not a number", code="invalid_body")
            return await error_response(err, {"Connection": "close"})(scope, receive, send)
        if length is not None and int(length) > self.max_body_bytes:
            err = APIError(413, f"request body of {length} bytes exceeds the limit of {self.max_body_bytes} bytes", code="body_too_large")
            return await error_response(err, {"Connection": "close"})(scope, receive, send)
        await self.app(scope, receive, send)

    @staticmethod
    def _unauthorized(path: str) -> Response:
        err = APIError(401, "missing or wrong API key: send 'Authorization: Bearer KEY'", code="invalid_api_key", type_="authentication_error")
        # The page asks the browser for the key (as the password of a login prompt); the API does not.
        challenge = "Bearer" if path.startswith("/v1/") else 'Basic realm="dnallm", charset="UTF-8"'
        return error_response(err, {"WWW-Authenticate": challenge})


async def read_json(request: Request, limit: int):
    """The body as JSON; 413 past ``limit`` bytes (also without Content-Length), 400 if malformed."""
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise APIError(413, f"request body exceeds the limit of {limit} bytes", code="body_too_large")
    except ClientDisconnect:
        raise APIError(400, "client disconnected while sending the body", code="client_disconnected") from None
    try:
        return json.loads(body)
    except json.JSONDecodeError as e:
        raise APIError(400, f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}", code="invalid_json") from None
    except UnicodeDecodeError as e:
        raise APIError(400, f"malformed JSON: body is not UTF-8 ({e.reason} at byte {e.start})", code="invalid_json") from None
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
        finished = False
        try:
            async for piece in streamer:
                if piece:
                    yield piece
            finished = True
        finally:
            if not finished:
                self.generation.cancel()
            # Hold the slot until the worker has really stopped, even while being cancelled.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.generation.join)
            self.slots.count(self.generation)
        self.generation.raise_error()

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
        raise APIError(404, f"model {name!r} not found; this server serves {session.name!r}", code="model_not_found",
                       param="model")


def reserve(slots: Slots) -> Ticket:
    """A place in the line for the model, or 429 when the line is full."""
    try:
        return slots.reserve()
    except QueueFull as e:
        raise APIError(429, str(e), code="queue_full", type_="rate_limit_error") from None


def create_app(session: ModelSession, limits: Limits, api_key: str | None = None) -> FastAPI:
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
        return error_response(APIError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", code=code))

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
        req: ChatRequest = parse_request(await read_json(request, limits.max_body_bytes))
        check_model(req.model, session)
        conv = to_conversation(req, session, limits)
        sampling = to_sampling(req, session, limits)
        n_prompt = len(session.prompt_ids(conv))
        check_prompt_length(n_prompt, limits)
        ticket = reserve(slots)
        run, completion = Run(session, conv, sampling, n_prompt, slots), Completion(session.name)
        if not req.stream:
            return await complete(run, completion, ticket, request)
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return StreamingResponse(
            stream_events(run, completion, ticket, include_usage), media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            background=BackgroundTask(ticket.release),  # if the stream never started
        )

    @app.post("/v1/explain")
    async def explain(request: Request):
        req = parse_explain_request(await read_json(request, limits.max_body_bytes))
        if req.model is not None:
            check_model(req.model, session)
        try:
            dna = session.prepare_dna(req.dna.reference, req.dna.variant, limits.max_dna_length)
        except DNAInputError as e:
            raise dna_error(e) from None
        ticket = reserve(slots)
        try:
            await ticket.acquire()  # the model runs one request at a time, generation or attribution
            explanation = await anyio.to_thread.run_sync(lambda: session.explain(
                dna, req.question, label=req.label, method=req.method, region=req.region,
                max_new_tokens=limits.max_new_tokens))
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

    app.add_middleware(Guard, api_key=api_key, max_body_bytes=limits.max_body_bytes)
    return app


def static_text(name: str) -> str:
    return (files("dnallm.serve") / "static" / name).read_text(encoding="utf-8")


def run_server(app: FastAPI, host: str, port: int, limits: Limits, log_level: str = "info") -> None:
    import uvicorn

    # Connections past this get 503 from uvicorn before reaching the app.
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, limit_concurrency=limits.max_queue + 64,
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(config).run()
