"""The OpenAI chat-completions schema, and how a request becomes a ``Conversation``.

DNA arrives in one of three ways, so that any OpenAI client can send it unchanged:

- tagged blocks in one user message: ``<reference>ACGT...</reference><variant>ACGT...</variant>``;
- content parts of one user message, as chat records hold them: ``{"type": "dna", "sequence":
  "ACGT...", "pair": "reference"}`` then the variant's, among ``{"type": "text"}`` parts;
- an extra top-level field: ``"dna": {"reference": "...", "variant": "..."}``
  (``extra_body={"dna": ...}`` in the ``openai`` Python client).

Errors are ``APIError``s, rendered as OpenAI's ``{"error": {message, type, param, code}}``.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dnallm.data.chat import parse_answer
from dnallm.data.messages import PAIR_ROLES
from dnallm.serve.inputs import DNAInputError, split_tagged
from dnallm.serve.session import Conversation, ModelSession, Sampling


@dataclass
class Limits:
    max_body_bytes: int = 1 << 20
    max_dna_length: int = 100_000  # bp per sequence, before windowing
    max_new_tokens: int = 512  # also the default when a request gives no max_tokens
    max_prompt_tokens: int = 8192
    max_queue: int = 8  # requests waiting while one generates
    header_timeout_s: float = 10.0  # a connection must send a request's headers within this
    body_timeout_s: float = 30.0  # ... and its body within this
    max_idle_connections: int = 64  # connections without a request in progress; the oldest goes past it


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str,
        param: str | None = None,
        type_: str = "invalid_request_error",
        extra: dict | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.type = status, message, code, param, type_
        self.extra = extra or {}

    def body(self) -> dict:
        return {
            "error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code, **self.extra}
        }


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class DNAPart(BaseModel):
    """A DNA content part, as chat records have them (``dnallm.data.messages``)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["dna"]
    sequence: str
    pair: Literal["reference", "variant"] | None = None
    name: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[Annotated[TextPart | DNAPart, Field(discriminator="type")]]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    def dna_parts(self) -> list[DNAPart]:
        return [] if isinstance(self.content, str) else [p for p in self.content if isinstance(p, DNAPart)]


class DNAField(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reference: str
    variant: str


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[Message] = Field(min_length=1, max_length=256)
    # strict: "5" is not a number of tokens; NaN and infinities are no temperature.
    max_tokens: int | None = Field(default=None, ge=1, strict=True)
    max_completion_tokens: int | None = Field(default=None, ge=1, strict=True)
    temperature: float | None = Field(default=None, ge=0, le=2, strict=True, allow_inf_nan=False)
    top_p: float | None = Field(default=None, gt=0, le=1, strict=True, allow_inf_nan=False)
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    logit_bias: dict[str, float] | None = None
    dna: DNAField | None = None


EXPLAIN_MAX_REGION = 64  # bases per explain request: ISM of 64 bases is 384 mutated windows


class ExplainRequest(BaseModel):
    """``POST /v1/explain``: per-base importance of the answer around the variant (the page's button)."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    dna: DNAField
    question: str = Field(min_length=1, max_length=20_000)
    label: str | None = Field(default=None, min_length=1, max_length=500)  # None: the model's own answer
    method: Literal["ism", "gradient"] = "ism"
    region: int = Field(default=32, ge=1, le=EXPLAIN_MAX_REGION, strict=True)  # bases centred on the variant


def parse_explain_request(body) -> ExplainRequest:
    return _validated(ExplainRequest, body)


def explain_response(e) -> dict:
    """An ``Explanation`` as JSON: the region's bases and importance per window (1-based positions)."""
    return {
        "object": "explanation",
        "label": e.label,
        "label_logp": e.label_logp,
        "method": e.method,
        "region": [e.region[0] + 1, e.region[1]],
        "centre": len(e.variant) // 2 + 1,
        "windows": [
            {"name": name, "bases": e.window_bases(w), "importance": [round(float(v), 6) for v in values]}
            for w, (name, values) in enumerate(zip(("reference", "variant"), e.importance))
        ],
    }


# Fields a client may send that this server cannot honour: refused rather than ignored.
UNSUPPORTED = ("tools", "functions", "stop", "logprobs", "top_logprobs", "response_format")


def _validated(schema: type[BaseModel], body):
    """``body`` checked against ``schema``; the first problem as an ``APIError`` naming the field."""
    if not isinstance(body, dict):
        raise APIError(400, f"request body must be a JSON object, got {type(body).__name__}", code="invalid_body")
    check_text(body)
    try:
        return schema.model_validate(body)
    except ValidationError as e:
        err = e.errors()[0]
        param = ".".join(str(p) for p in err["loc"])
        raise APIError(400, f"{param or 'body'}: {err['msg']}", code="invalid_value", param=param or None) from None


def parse_request(body) -> ChatRequest:
    req = _validated(ChatRequest, body)
    for name in UNSUPPORTED:
        if (req.model_extra or {}).get(name):
            raise APIError(400, f"'{name}' is not supported by this server", code="unsupported_parameter", param=name)
    if req.n != 1:
        raise APIError(
            400,
            f"n={req.n}: this server returns one choice per request (n=1)",
            code="unsupported_parameter",
            param="n",
        )
    return req


def check_text(body) -> None:
    """Every string of the body is text the tokenizer can take: JSON may carry a lone UTF-16
    surrogate (``"\\ud800"``), which is no Unicode character and cannot be encoded. Walked
    without recursion: JSON nested as deep as the parser allows must not exhaust the stack."""
    pending = [(body, "")]
    while pending:
        value, path = pending.pop()
        if isinstance(value, str):
            _check_string(value, path)
        elif isinstance(value, dict):
            for key, item in value.items():
                _check_string(key, path)
                pending.append((item, f"{path}.{key}" if path else str(key)))
        elif isinstance(value, list):
            pending.extend((item, f"{path}.{i}") for i, item in enumerate(value))


def _check_string(text: str, path: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise APIError(
            400,
            f"{path or 'body'}: character {e.start} is a lone surrogate (U+{ord(text[e.start]):04X}), "
            "not Unicode text",
            code="invalid_text",
            param=path or None,
        ) from None


def dna_error(e: DNAInputError, status: int = 422) -> APIError:
    extra = {"position": e.position} if e.position is not None else {}
    param = f"dna.{e.field}" if e.field else "dna"
    return APIError(status, str(e), code=e.code, param=param, extra=extra)


def _check_reserved(i: int, text: str, reserved: list[str]) -> None:
    for token in reserved:
        if token in text:
            raise APIError(
                400,
                f"messages.{i}: contains the reserved token {token!r}",
                code="reserved_token",
                param=f"messages.{i}.content",
            )


def to_conversation(req: ChatRequest, session: ModelSession, limits: Limits) -> Conversation:
    """Messages -> system prompt, turns, and the DNA pair with the turn that carries it."""
    system, turns, found = [], [], []  # found: (turn index, reference, variant)
    reserved = session.reserved_tokens
    for i, msg in enumerate(req.messages):
        text = msg.text()
        _check_reserved(i, text, reserved)
        if msg.role in ("system", "developer"):
            if turns:
                raise APIError(
                    400,
                    f"messages.{i}: system messages must come before the conversation",
                    code="invalid_value",
                    param=f"messages.{i}.role",
                )
            system.append(text)
            continue
        parts = msg.dna_parts()
        if parts and msg.role != "user":
            raise APIError(
                400, f"messages.{i}: DNA parts belong in user messages", code="invalid_value", param=f"messages.{i}"
            )
        if msg.role == "user":
            try:
                text, ref, var = split_tagged(text)
            except DNAInputError as e:
                raise dna_error(e, 400) from None
            if parts and ref is not None:
                raise APIError(
                    400,
                    f"messages.{i}: DNA given both as tagged blocks and as DNA parts; use one",
                    code="duplicate_dna",
                    param=f"messages.{i}.content",
                )
            if parts:
                ref, var = _dna_pair(parts, i)
            if ref is not None:
                found.append((len(turns), ref, var))
        expected = "user" if len(turns) % 2 == 0 else "assistant"
        if msg.role != expected:
            raise APIError(
                400,
                f"messages.{i}: expected a {expected} message (turns alternate, starting with the user)",
                code="invalid_value",
                param=f"messages.{i}.role",
            )
        turns.append({"role": msg.role, "content": text})
    if not turns or turns[-1]["role"] != "user":
        raise APIError(400, "the last message must be from the user", code="invalid_value", param="messages")
    conv = Conversation(turns, system_prompt="\n\n".join(system) or None)
    _attach_dna(conv, req, found, session, limits)
    return conv


def _dna_pair(parts: list[DNAPart], i: int) -> tuple[str, str]:
    """A user message's DNA parts as the (reference, variant) pair this server answers about."""
    marks = [p.pair for p in parts]
    if marks != list(PAIR_ROLES):  # the chat records' rule (dnallm.data.messages)
        raise APIError(
            400,
            f"messages.{i}.content: DNA parts are read as one reference/variant pair: two parts marked "
            f'"pair": "reference" then "variant" (got {len(parts)} marked {marks})',
            code="invalid_value",
            param=f"messages.{i}.content",
        )
    return parts[0].sequence, parts[1].sequence


def _attach_dna(conv: Conversation, req: ChatRequest, found: list, session: ModelSession, limits: Limits) -> None:
    if len(found) > 1:
        raise APIError(
            400,
            "DNA blocks appear in more than one message; send one reference/variant pair per conversation",
            code="duplicate_dna",
            param="messages",
        )
    if found and req.dna is not None:
        raise APIError(
            400, "DNA given both as tagged blocks and in the 'dna' field; use one", code="duplicate_dna", param="dna"
        )
    if req.dna is not None:
        found = [(0, req.dna.reference, req.dna.variant)]
    if not found:
        if session.uses_dna:
            raise APIError(
                422,
                "this model reads DNA: add <reference>...</reference><variant>...</variant> to a user message, "
                "or a 'dna': {'reference': ..., 'variant': ...} field",
                code="dna_required",
                param="dna",
            )
        return
    if not session.uses_dna:
        raise APIError(
            422,
            "this checkpoint is a text-only baseline and does not read DNA; leave the DNA out",
            code="dna_not_supported",
            param="dna",
        )
    turn, ref, var = found[0]
    try:
        conv.dna = session.prepare_dna(ref, var, limits.max_dna_length)
    except DNAInputError as e:
        raise dna_error(e) from None
    conv.dna_turn = turn


def to_sampling(req: ChatRequest, session: ModelSession, limits: Limits) -> Sampling:
    max_new = req.max_completion_tokens or req.max_tokens or limits.max_new_tokens
    if max_new > limits.max_new_tokens:
        param = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
        raise APIError(
            400,
            f"{param}={max_new} exceeds this server's limit of {limits.max_new_tokens}",
            code="max_tokens_exceeded",
            param=param,
        )
    return Sampling(
        max_new_tokens=max_new,
        temperature=req.temperature or 0.0,
        top_p=req.top_p or 1.0,
        logit_bias=_logit_bias(req.logit_bias or {}, len(session.tokenizer)),
    )


def _logit_bias(raw: dict[str, float], vocab_size: int) -> dict[int, float]:
    bias = {}
    for key, value in raw.items():
        if not key.isdigit() or int(key) >= vocab_size:
            raise APIError(
                400,
                f"logit_bias: {key!r} is not a token id below {vocab_size}",
                code="invalid_value",
                param="logit_bias",
            )
        if not -100 <= value <= 100:
            raise APIError(
                400, f"logit_bias[{key}]={value} is outside [-100, 100]", code="invalid_value", param="logit_bias"
            )
        bias[int(key)] = float(value)
    return bias


def check_prompt_length(n_prompt: int, limits: Limits, max_new_tokens: int = 0, context: int | None = None) -> None:
    """The prompt within the server's limit, and with room for the reply in the LLM's ``context``."""
    if n_prompt > limits.max_prompt_tokens:
        raise APIError(
            400,
            f"the prompt is {n_prompt} tokens, over this server's limit of {limits.max_prompt_tokens}",
            code="context_length_exceeded",
            param="messages",
        )
    if context is not None and n_prompt + max_new_tokens > context:
        raise APIError(
            400,
            f"the prompt is {n_prompt} tokens, which with max_tokens={max_new_tokens} passes the model's "
            f"context of {context}",
            code="context_length_exceeded",
            param="messages",
        )


class Completion:
    """Builds the response objects of one request: the whole reply, or its stream of chunks."""

    def __init__(self, model: str):
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model

    def _head(self, obj: str) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    @staticmethod
    def usage(n_prompt: int, n_completion: int) -> dict:
        return {"prompt_tokens": n_prompt, "completion_tokens": n_completion, "total_tokens": n_prompt + n_completion}

    def response(self, text: str, finish_reason: str, usage: dict) -> dict:
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": finish_reason,
            "logprobs": None,
        }
        # ``prediction``: the disease after the reply's last "Answer:", as ``dnallm eval`` parses it.
        return {
            **self._head("chat.completion"),
            "choices": [choice],
            "usage": usage,
            "prediction": parse_answer(text) or None,
        }

    def chunk(self, delta: dict, finish_reason: str | None = None, **extra) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        return sse({**self._head("chat.completion.chunk"), "choices": [choice], **extra})

    def usage_chunk(self, usage: dict) -> str:
        return sse({**self._head("chat.completion.chunk"), "choices": [], "usage": usage})


def sse(obj) -> str:
    return f"data: {json.dumps(obj)}\n\n"
