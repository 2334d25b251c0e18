"""Rewards for the reinforcement stage: named functions of one sampled reply.

A reward takes a ``Reply`` and returns a float. The recipe names them in ``grpo.rewards``
(weights in ``grpo.reward_weights``); a name is either built in (see ``REWARDS``) or
``module:function`` for a function of your own, importable from where ``dnallm`` runs::

    # my_rewards.py
    def short_answer(reply) -> float:
        return 1.0 if len(reply.text) < 200 else 0.0

    grpo.rewards=[correct_label,my_rewards:short_answer]

Labels are read exactly as ``dnallm eval`` reads them: the text after the last ``Answer:``,
matched to the training label set (case, spacing, punctuation and markdown ignored).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from dnallm.config import GRPOConfig, RecipeError
from dnallm.data.labels import LabelSet


@dataclass
class Reply:
    text: str  # the decoded reply, special tokens dropped
    n_tokens: int  # up to and including the end of turn
    finished: bool  # ended its turn within grpo.max_new_tokens
    answer: str  # the prompt's ground-truth answer
    labels: LabelSet  # the training label set
    config: GRPOConfig  # for knobs such as length_target


RewardFn = Callable[[Reply], float]
REWARDS: dict[str, RewardFn] = {}


def register_reward(name: str):
    """Decorator: make a reward available to recipes under ``name``."""

    def add(fn: RewardFn) -> RewardFn:
        REWARDS[name] = fn
        return fn

    return add


@register_reward("correct_label")
def correct_label(reply: Reply) -> float:
    """1 when the reply's label is the ground truth, as ``dnallm eval`` scores it; else 0."""
    predicted = reply.labels.predicted_label(reply.text)
    return float(bool(predicted) and predicted == reply.labels.canonical(reply.answer))


@register_reward("answer_format")
def answer_format(reply: Reply) -> float:
    """1 for a finished reply whose 'Answer:' names a training label; 0.5 for an 'Answer:'
    with an unknown label or a reply cut off at max_new_tokens; 0 without 'Answer:'."""
    predicted = reply.labels.predicted_label(reply.text)
    if not predicted:
        return 0.0
    return 1.0 if reply.finished and predicted in reply.labels else 0.5


@register_reward("length")
def length(reply: Reply) -> float:
    """1 up to ``grpo.length_target`` tokens, falling linearly to 0 at twice the target."""
    target = reply.config.length_target
    return max(0.0, min(1.0, 2.0 - reply.n_tokens / target))


def resolve_reward(name: str) -> RewardFn:
    if name in REWARDS:
        return REWARDS[name]
    if ":" not in name:
        raise RecipeError(
            f"grpo.rewards: unknown reward {name!r}; built in: {', '.join(sorted(REWARDS))}, or give module:function"
        )
    module_name, fn_name = name.split(":", 1)
    try:
        fn = getattr(importlib.import_module(module_name), fn_name)
    except (ImportError, AttributeError) as e:
        raise RecipeError(
            f"grpo.rewards: cannot load {name!r} ({e}); the module must be importable from where dnallm runs"
        ) from None
    if not callable(fn):
        raise RecipeError(f"grpo.rewards: {name!r} is not a function")
    return fn


class Rewards:
    """The recipe's weighted rewards; ``score`` gives each reply's total and every part."""

    def __init__(self, config: GRPOConfig):
        names = list(config.rewards)
        if not names:
            raise RecipeError(
                "grpo.rewards is empty: name at least one reward, e.g. grpo.rewards=[correct_label,answer_format]"
            )
        weights = [float(w) for w in config.reward_weights] or [1.0] * len(names)
        if len(weights) != len(names):
            raise RecipeError(
                f"grpo.reward_weights has {len(weights)} values for {len(names)} rewards ({', '.join(names)})"
            )
        if "length" in names and config.length_target <= 0:
            raise RecipeError(
                "grpo.rewards includes length but grpo.length_target is 0: set it to a token count, e.g. grpo.length_target=256"
            )
        self.config = config
        self.parts = [(name, resolve_reward(name), w) for name, w in zip(names, weights)]

    def score(self, replies: list[Reply]) -> tuple[list[float], dict[str, list[float]]]:
        parts = {name: [float(fn(r)) for r in replies] for name, fn, _ in self.parts}
        totals = [sum(w * parts[name][i] for name, _, w in self.parts) for i in range(len(replies))]
        return totals, parts
