"""Turn generated text into a label from the training label set.

A reply is parsed for the last ``Answer:`` (reasoning may come before it), then matched to a
known label ignoring case, whitespace, punctuation and markdown. Anything that matches no
known label is kept as written (lower-cased), so it is scored as wrong rather than guessed.
"""

from __future__ import annotations

import re
from pathlib import Path

from dnallm.data.chat import parse_answer
from dnallm.data.kegg import read_jsonl

_SPACE = re.compile(r"\s+")
_NON_WORD = re.compile(r"[^0-9a-z]+")
_DECORATION = "*_`\"' \t.:;,"


def normalise_label(text: str) -> str:
    """Lower-case, whitespace collapsed, markdown / quotes / trailing punctuation removed."""
    return _SPACE.sub(" ", text.lower()).strip(_DECORATION).strip()


def label_key(text: str) -> str:
    """Comparison key: letters and digits only, so "Parkinson's disease" == "parkinsons disease"."""
    return _NON_WORD.sub("", text.lower())


class LabelSet:
    """The labels a model was trained to answer with, and the mapping of text onto them."""

    def __init__(self, labels: list[str]):
        self.labels = sorted({normalise_label(x) for x in labels if normalise_label(x)})
        self._by_key = {label_key(x): x for x in self.labels}

    def __contains__(self, label: str) -> bool:
        return label in self.labels

    def __len__(self) -> int:
        return len(self.labels)

    def canonical(self, text: str) -> str:
        """The known label ``text`` names, else ``text`` normalised ('' stays '')."""
        norm = normalise_label(text)
        return self._by_key.get(label_key(norm), norm) if norm else ""

    def predicted_label(self, generated_text: str) -> str:
        """Label from a model reply; '' when the reply has no 'Answer:'."""
        return self.canonical(parse_answer(generated_text))

    @classmethod
    def from_jsonl(cls, *paths: str | Path) -> "LabelSet":
        return cls([str(rec.get("answer", "")) for path in paths for rec in read_jsonl(path)])
