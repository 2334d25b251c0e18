"""Greedy answers with the probability the model gave to the label it wrote."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dnallm.data.chat import ANSWER_PATTERN, end_of_turn_id, parse_answer
from dnallm.fusion.generate import Sampling, generate


@dataclass
class Prediction:
    label: str  # parsed as ``parse_answer`` does; '' when the reply has no 'Answer:' line
    probability: float | None  # of the tokens after 'Answer:', end of turn included; None without a label
    reply: str


def label_start(tokenizer, tokens: list[int]) -> int | None:
    """Index of the first token whose text reaches past the last 'Answer:' marker."""
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    matches = list(ANSWER_PATTERN.finditer(text))  # the label starts after the last marker's spaces
    if not matches:
        return None
    start = matches[-1].start(1)
    for k in range(len(tokens)):
        if len(tokenizer.decode(tokens[: k + 1], skip_special_tokens=True)) > start:
            return k
    return None


def reply_length(tokens: list[int], eos_id: int) -> int:
    """Tokens up to and including the first end of turn (the rest is padding)."""
    return tokens.index(eos_id) + 1 if eos_id in tokens else len(tokens)


def prediction(tokenizer, tokens: list[int], token_logp: list[float]) -> Prediction:
    n = reply_length(tokens, end_of_turn_id(tokenizer))
    tokens, token_logp = tokens[:n], token_logp[:n]
    reply = tokenizer.decode(tokens, skip_special_tokens=True)
    label = parse_answer(reply)
    start = label_start(tokenizer, tokens) if label else None
    probability = math.exp(sum(token_logp[start:])) if start is not None else None
    return Prediction(label, probability, reply)


@torch.no_grad()
def predict_batch(
    model, encoder, processor, examples: list[dict], *, max_new_tokens: int, encoder_batch_size: int, device: str
) -> list[Prediction]:
    """Greedy replies for ``examples`` (``question``, ``ref_window``, ``var_window``) as one batch.

    The probability is read from the scores the decoder chose each token from, so it is
    the model's own probability of writing exactly this label (and then stopping).
    """
    rows = [processor(ex, with_answer=False) for ex in examples]
    replies = generate(
        model,
        processor,
        encoder,
        rows,
        Sampling(max_new_tokens=max_new_tokens),
        device=device,
        encoder_batch_size=encoder_batch_size,
        logps=True,
    )
    return [prediction(processor.tokenizer, t.tolist(), lp.tolist()) for t, lp in zip(replies.tokens, replies.logps)]
