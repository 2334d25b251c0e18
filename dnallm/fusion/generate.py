"""The one way a fusion model writes replies: a batch of prompts in; tokens, the log-probability
of each chosen token and whether each reply was cut at ``max_new_tokens`` out.

Evaluation, annotation, the Python API, the terminal chat, the HTTP server and GRPO's
sampling all call ``generate``; a faster engine would plug in here. ``ReplyStream`` runs it
for one prompt in a worker thread, its text streamed as it comes and cancellable: the chat,
the API's ``stream=True`` and the server read replies through it. Prompts are the
processor's rows (``processor(example, with_answer=False)``, or token ids a chat template
made, with their DNA sequences); the frozen encoder runs once per batch (or the DNA
inputs come ready, as a conversation's cached pair does). Replies end at the end of the
assistant turn, as training taught.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable, Iterator

import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from dnallm.data.chat import end_of_turn_id
from dnallm.data.dna import RecordError
from dnallm.fusion.processor import dna_inputs
from dnallm.hub import autocast


@dataclass
class Sampling:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0: greedy, as in evaluation
    top_p: float = 1.0
    logit_bias: dict[int, float] = field(default_factory=dict)  # token id -> added logit


@dataclass
class Replies:
    """``n`` replies per prompt, rows ordered prompt by prompt."""

    prompt_ids: torch.Tensor  # (prompts, prompt_tokens) left-padded, on the model's device
    prompt_mask: torch.Tensor  # (prompts, prompt_tokens)
    tokens: torch.Tensor  # (rows, new_tokens) only the new tokens, padded after the end of turn
    reply_mask: torch.Tensor  # (rows, new_tokens) True up to and including the first end of turn
    logps: torch.Tensor | None  # (rows, new_tokens) log p of each chosen token (when asked), fp32
    texts: list[str]
    ended: list[bool]  # ended the turn within max_new_tokens
    cut: list[bool]  # stopped at max_new_tokens before ending the turn (not cancelled)
    dna: dict  # the model's DNA keyword arguments the prompts were read with (one entry per sequence)


class ChosenTokenLogps(LogitsProcessor):
    """The log-probability of each generated token under the scores it was chosen from.

    Generation's ``output_scores`` keeps every step's (batch, vocabulary) scores until the
    end: batch 8 x 1,024 new tokens x 151,936 words is 5 GB. This processor, last in the list
    so it sees the scores the token is chosen from, keeps one step: at each step the token
    chosen at the previous one is the last of ``input_ids``.
    """

    def __init__(self):
        self.previous: torch.Tensor | None = None  # (batch, vocab) log-softmax of the last step
        self.logps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.previous is not None:
            self.logps.append(self.previous.gather(-1, input_ids[:, -1:]).squeeze(-1))
        self.previous = scores.float().log_softmax(-1)
        return scores

    def result(self, tokens: torch.Tensor) -> torch.Tensor:
        """(batch, new tokens) for the generated ``tokens``: the last step read from them."""
        if self.previous is not None and len(self.logps) < tokens.shape[1]:
            self.logps.append(self.previous.gather(-1, tokens[:, len(self.logps)][:, None]).squeeze(-1))
            self.previous = None
        return torch.stack(self.logps, 1)


class LogitBias(LogitsProcessor):
    def __init__(self, bias: dict[int, float]):
        self.ids = torch.tensor(list(bias), dtype=torch.long)
        self.values = torch.tensor(list(bias.values()), dtype=torch.float32)

    def __call__(self, input_ids, scores: torch.Tensor) -> torch.Tensor:
        # scores: (batch, vocab)
        scores = scores.clone()
        scores[:, self.ids.to(scores.device)] += self.values.to(scores.device, scores.dtype)
        return scores


class StopOnEvent(StoppingCriteria):
    """Ends generation after the current token once ``event`` is set (cancel, disconnect)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def _generate_kwargs(sampling: Sampling, chosen: ChosenTokenLogps | None, stop: threading.Event | None) -> dict:
    kwargs = {}
    if sampling.temperature > 0:
        # top_k=0: no top-k cut (transformers' default keeps 50): sample from what was asked
        kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
    processors = [LogitBias(sampling.logit_bias)] if sampling.logit_bias else []
    processors += [chosen] if chosen is not None else []  # last: it reads the scores the token is chosen from
    if processors:
        kwargs["logits_processor"] = LogitsProcessorList(processors)
    if stop is not None:
        kwargs["stopping_criteria"] = StoppingCriteriaList([StopOnEvent(stop)])
    return kwargs


@torch.no_grad()
def context_length(model) -> int | None:
    """The most positions the model's LLM reads (prompt and reply together); None if it says none."""
    return getattr(model.llm.config, "max_position_embeddings", None)


def check_context(model, rows: list[dict], max_new_tokens: int, where: list[str] | None = None) -> None:
    """Every prompt of ``rows`` with room for ``max_new_tokens`` in the LLM's context, before any
    generation, or a ``RecordError`` naming the first that has not (``where``: the rows' names)."""
    limit = context_length(model)
    if limit is None:
        return
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        if n + max_new_tokens > limit:
            name = where[i] if where else f"prompt {i}"
            raise RecordError(
                f"{name}: the prompt is {n:,} tokens, which with {max_new_tokens:,} new tokens passes the LLM's "
                f"context of {limit:,}: shorten the question"
            )


def generate(
    model,
    processor,
    dna_source,
    rows: list[dict],
    sampling: Sampling,
    *,
    device: str,
    encoder_batch_size: int = 8,
    n: int = 1,
    logps: bool = False,
    dna: dict | None = None,
    streamer=None,
    stop: threading.Event | None = None,
) -> Replies:
    """Replies to ``rows`` (each ``input_ids`` and its ``dna`` sequences, in placeholder order).

    ``n``: replies per prompt (sampled, for GRPO's groups). ``logps``: also the log-probability
    of each chosen token, read from the scores it was chosen from. ``dna``: the model's DNA
    keyword arguments when the caller has them already (``dna_inputs``). ``streamer``
    receives the text as it is generated (batch of one); setting ``stop`` ends generation
    after the current token.
    """
    check_context(model, rows, sampling.max_new_tokens)
    tokenizer = processor.tokenizer
    end = end_of_turn_id(tokenizer)
    batch = processor.collate(rows, side="left")
    if dna is None:
        dna = dna_inputs(dna_source, batch["dna"], encoder_batch_size) if dna_source is not None else {}
    chosen = ChosenTokenLogps() if logps else None
    prompt_ids, prompt_mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    with autocast(device):
        tokens = model.generate(
            prompt_ids,
            prompt_mask,
            **dna,
            max_new_tokens=sampling.max_new_tokens,
            num_return_sequences=n,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=end,
            streamer=streamer,
            **_generate_kwargs(sampling, chosen, stop),
        )  # (rows, new_tokens): generation from embeddings returns only the new tokens
    is_end = tokens == end
    reply_mask = (is_end.cumsum(1) - is_end.long()) == 0  # up to and including the first end of turn
    ended = is_end.any(1).tolist()
    return Replies(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        tokens=tokens,
        reply_mask=reply_mask,
        logps=chosen.result(tokens) if chosen is not None else None,
        texts=[tokenizer.decode(t[m], skip_special_tokens=True) for t, m in zip(tokens, reply_mask)],
        ended=ended,
        cut=[not e and tokens.shape[1] >= sampling.max_new_tokens for e in ended],
        dna=dna,
    )


class ReplyStream:
    """One ``generate`` call in a worker thread, its text arriving through ``streamer`` as it is
    generated: transformers' ``TextIteratorStreamer``, or ``AsyncTextIteratorStreamer`` for an
    event loop.

    ``run(stop)`` is the call (``generate(..., streamer=streamer, stop=stop)``, one prompt).
    Read the text with ``pieces()`` (blocking) or ``apieces()`` (async). Leaving either early,
    or ``cancel()``, ends generation after the current token; both wait for the worker before
    they end, and raise what it raised.
    """

    def __init__(self, run: Callable[[threading.Event], Replies], streamer):
        self.stop = threading.Event()
        self.new_tokens: list[int] = []
        self.cut = False  # stopped at max_new_tokens before ending the turn
        self.error: BaseException | None = None
        self.streamer = streamer
        self._thread = threading.Thread(target=self._work, args=(run,), name="dnallm-generate", daemon=True)
        self._thread.start()

    def _work(self, run) -> None:
        try:
            replies = run(self.stop)
            self.new_tokens, self.cut = replies.tokens[0].tolist(), replies.cut[0]
        except BaseException as e:  # handed to the reader; the thread must not die silently
            self.error = e
            self.streamer.end()  # wake the reader: generate() did not get to end the stream

    def pieces(self) -> Iterator[str]:
        """The text as it is generated; closing the iterator early cancels."""
        finished = False
        try:
            for piece in self.streamer:
                if piece:
                    yield piece
            finished = True
        finally:
            self._finish(finished)
        self.raise_error()

    async def apieces(self) -> AsyncIterator[str]:
        """``pieces`` for an event loop (``AsyncTextIteratorStreamer``): waiting for the worker
        to stop is shielded from cancellation, so whoever holds the model holds it until then."""
        import anyio

        finished = False
        try:
            async for piece in self.streamer:
                if piece:
                    yield piece
            finished = True
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._finish, finished)
        self.raise_error()

    def _finish(self, finished: bool) -> None:
        if not finished:
            self.cancel()
        self.join()

    def cancel(self) -> None:
        self.stop.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    @property
    def cancelled(self) -> bool:
        return self.stop.is_set()

    def raise_error(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"generation failed: {self.error}") from self.error

    @property
    def finish_reason(self) -> str:
        """OpenAI's vocabulary: 'length' when cut at max_new_tokens, else 'stop'."""
        return "length" if self.cut else "stop"
