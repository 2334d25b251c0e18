"""Greedy answers with the probability the model gave to the label it wrote."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from dnallm.data.chat import ANSWER_PATTERN, end_of_turn_id, parse_answer
from dnallm.fusion.processor import dna_inputs

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


@torch.no_grad()
def predict_batch(model, encoder, processor, examples: list[dict], *, max_new_tokens: int, encoder_batch_size: int, device: str) -> list[Prediction]:
    """Greedy replies for ``examples`` (``question``, ``ref_window``, ``var_window``) as one batch.

    The probability is read from the scores the decoder chose each token from, so it is
    the model's own probability of writing exactly this label (and then stopping).
    """
    tokenizer = processor.tokenizer
    batch = processor.collate([processor(ex, with_answer=False) for ex in examples], side="left")
    dna = dna_inputs(encoder, batch["dna"], encoder_batch_size) if encoder else {}
    chosen = ChosenTokenLogps()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
        tokens = model.generate(
            batch["input_ids"].to(device), batch["attention_mask"].to(device), **dna,
            max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, eos_token_id=end_of_turn_id(tokenizer),
            logits_processor=LogitsProcessorList([chosen]),
        )  # (batch, new_tokens): generation from embeddings returns only new tokens
    token_logp = chosen.result(tokens)  # (batch, new_tokens)
    return [prediction(tokenizer, t.tolist(), lp.tolist()) for t, lp in zip(tokens, token_logp)]
