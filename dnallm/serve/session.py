"""A trained checkpoint loaded once, answering conversations with streamed text.

The terminal chat and the HTTP server share this: they build a ``Conversation`` (turns,
an optional DNA pair and the turn that carries it), and ``ModelSession.start`` runs the
one generation path (``dnallm.fusion.generate``) as a ``ReplyStream``: in a worker thread
that feeds a transformers text streamer, cancellable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from transformers import TextIteratorStreamer

from dnallm.data import chat
from dnallm.eval.explain import Explainer, Explanation, explain_examples
from dnallm.fusion import DNAFusionLM
from dnallm.fusion.generate import ReplyStream, Sampling, generate
from dnallm.fusion.processor import dna_inputs
from dnallm.serve.inputs import DNAPair, prepare_pair

__all__ = ["Conversation", "ModelSession", "ReplyStream", "Sampling"]


@dataclass
class Conversation:
    """Alternating user/assistant turns ending with a user turn; DNA blocks go into ``dna_turn``."""

    turns: list[dict]
    dna: DNAPair | None = None
    dna_turn: int = 0  # index into ``turns`` of the user turn that carries the DNA blocks
    system_prompt: str | None = None  # None: the prompt the checkpoint was trained with


class ModelSession:
    def __init__(self, recipe, encoder, model, processor, device: str, name: str | None = None):
        self.recipe = recipe
        self.encoder = encoder
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.device = device
        self.name = name or recipe.run_name
        self._dna_cache: dict[DNAPair, dict] = {}  # pair -> the model's DNA keyword arguments

    @classmethod
    def load(
        cls,
        checkpoint: str | Path,
        *,
        device: str | None = None,
        overrides=(),
        name: str | None = None,
        trust_remote_code: bool = False,
    ) -> "ModelSession":
        loaded = DNAFusionLM.from_pretrained(checkpoint, device, overrides, trust_remote_code=trust_remote_code)
        return cls(loaded.recipe, loaded.dna_source, loaded.model, loaded.processor, loaded.device, name)

    @property
    def uses_dna(self) -> bool:
        return self.processor.uses_dna

    @property
    def window(self) -> int:
        return self.recipe.data.dna_window

    @property
    def eos_id(self) -> int:
        return chat.end_of_turn_id(self.tokenizer)

    @property
    def reserved_tokens(self) -> list[str]:
        """Special tokens a user must not type: they would forge turns or DNA slots."""
        return sorted(set(self.tokenizer.all_special_tokens) | set(chat.DNA_TOKENS))

    def prepare_dna(self, reference: str, variant: str, max_length: int) -> DNAPair:
        return prepare_pair(reference, variant, window=self.window, max_length=max_length)

    def prompt_ids(self, conv: Conversation) -> list[int]:
        """Chat-template token ids, with one ``<|dna_pad|>`` per projected DNA position."""
        messages = [{"role": "system", "content": conv.system_prompt or self.processor.system_prompt}]
        for i, turn in enumerate(conv.turns):
            content = turn["content"]
            if conv.dna is not None and i == conv.dna_turn:
                content = self.processor.user_turn(content, conv.dna.reference, conv.dna.variant)
            messages.append({"role": turn["role"], "content": content})
        ids = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, enable_thinking=False, return_dict=False
        )
        return list(ids)

    def explain(
        self,
        dna: DNAPair,
        question: str,
        *,
        label: str | None = None,
        method: str | None = None,
        region: int | str | None = None,
        batch_size: int = 64,
        max_new_tokens: int = 256,
        progress: bool = False,
    ) -> Explanation:
        """Which bases of ``dna``'s windows move the answer's label (``dnallm.eval.explain``);
        ``label=None``: the model's own greedy answer."""
        example = {
            "question": question,
            "answer": label or "",
            "ref_window": dna.reference,
            "var_window": dna.variant,
            "where": "input",
        }
        explainer = Explainer(
            self.model,
            self.encoder,
            self.processor,
            device=self.device,
            encoder_batch_size=self.recipe.encoder.batch_size,
        )
        return explain_examples(
            explainer,
            [example],
            labels=[label],
            region=region,
            method=method,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            progress=progress,
        )[0]

    def _dna_features(self, dna: DNAPair | None):
        if dna is None:
            return {}
        if dna not in self._dna_cache:
            # A conversation re-sends the same pair every turn: keep the last few encodings.
            if len(self._dna_cache) >= 4:
                self._dna_cache.pop(next(iter(self._dna_cache)))
            self._dna_cache[dna] = dna_inputs(
                self.encoder, [dna.reference, dna.variant], self.recipe.encoder.batch_size
            )
        return self._dna_cache[dna]  # the model's DNA keyword arguments

    def start(self, conv: Conversation, sampling: Sampling, streamer) -> ReplyStream:
        """Start generating in a worker thread; ``streamer`` (sync or async) receives the text."""
        rows = [{"input_ids": self.prompt_ids(conv), "dna": []}]  # the DNA comes encoded (_dna_features)

        def run(stop):  # in the worker: encoding the DNA too stays off the caller's thread
            return generate(
                self.model,
                self.processor,
                self.encoder,
                rows,
                sampling,
                device=self.device,
                dna=self._dna_features(conv.dna),
                streamer=streamer,
                stop=stop,
            )

        return ReplyStream(run, streamer)

    def text_streamer(self, timeout: float | None = None) -> TextIteratorStreamer:
        return TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=timeout)

    def stream(self, conv: Conversation, sampling: Sampling) -> Iterator[str]:
        """Text pieces as they are generated (blocking); generation starts at the first read.
        Closing the iterator cancels."""
        yield from self.start(conv, sampling, self.text_streamer()).pieces()

    def reply(self, conv: Conversation, sampling: Sampling) -> str:
        return "".join(self.stream(conv, sampling))
