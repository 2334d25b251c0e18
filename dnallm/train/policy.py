"""The pieces of GRPO: sample a group of replies per prompt, score them against each other,
and the clipped policy-gradient loss with a KL penalty to the reference policy.

The reference policy is the same model with its LoRA adapters switched off (peft's
``disable_adapter``), so no second copy of the LLM is kept in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dnallm.fusion.generate import Sampling, generate


@dataclass
class Rollout:
    """G sampled replies for each of B prompts, rows ordered prompt by prompt (B*G rows)."""

    input_ids: torch.Tensor  # (B*G, P+T) left-padded prompt, then the reply
    attention_mask: torch.Tensor  # (B*G, P+T)
    reply_mask: torch.Tensor  # (B*G, T) 1 on reply tokens up to and including the end of turn
    dna: dict  # the model's DNA keyword arguments (B*G*k rows: each prompt's k sequences, repeated for its G replies)
    texts: list[str]
    finished: list[bool]  # ended the turn within max_new_tokens

    @property
    def reply_ids(self) -> torch.Tensor:
        return self.input_ids[:, -self.reply_mask.shape[1] :]


@torch.no_grad()
def sample_replies(
    model,
    encoder,
    processor,
    examples: list[dict],
    *,
    group_size: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    encoder_batch_size: int,
    device: str,
) -> Rollout:
    """Sample ``group_size`` replies per example with the KV cache (``dnallm.fusion.generate``).

    The frozen encoder runs once per prompt (or its embeddings come from the cache);
    generation repeats the prompt's embeddings for the G replies.
    """
    rows = [processor(ex, with_answer=False) for ex in examples]
    sampling = Sampling(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
    replies = generate(
        model, processor, encoder, rows, sampling, device=device, encoder_batch_size=encoder_batch_size, n=group_size
    )  # tokens: (B*G, T)
    k = sum(len(row["dna"]) for row in rows) // len(rows)  # sequences per prompt
    dna = {
        key: t.unflatten(0, (len(rows), k)).repeat_interleave(group_size, 0).flatten(0, 1)
        for key, t in replies.dna.items()
    }
    prompt_ids = replies.prompt_ids.repeat_interleave(group_size, 0)
    prompt_mask = replies.prompt_mask.repeat_interleave(group_size, 0)
    return Rollout(
        input_ids=torch.cat([prompt_ids, replies.tokens], 1),
        attention_mask=torch.cat([prompt_mask, replies.reply_mask.long()], 1),
        reply_mask=replies.reply_mask.float(),
        dna=dna,
        texts=replies.texts,
        finished=replies.ended,
    )


def reply_logps(forward, rollout: Rollout) -> torch.Tensor:
    """Log-probability of each reply token under ``forward`` (the engine, or the model). (B*G, T)"""
    n_reply = rollout.reply_mask.shape[1]
    score_mask = torch.zeros_like(rollout.attention_mask)
    score_mask[:, -n_reply:] = rollout.reply_mask.bool()
    # The LM head runs on the reply tokens only, in chunks: no (B*G, P+T, vocab) logits.
    logps = forward(
        input_ids=rollout.input_ids,
        attention_mask=rollout.attention_mask,
        **rollout.dna,
        score_mask=score_mask,
    ).token_logps
    return logps[:, -n_reply:]


@torch.no_grad()
def reference_logps(model, rollout: Rollout) -> torch.Tensor:
    """Reply log-probabilities under the reference policy: the model with its LoRA switched off."""
    with model.llm.disable_adapter():
        return reply_logps(model, rollout)


def group_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True) -> torch.Tensor:
    """Each reply's reward against its group's mean (and std): (B*G,) -> (B*G,)."""
    groups = rewards.view(-1, group_size)
    centred = groups - groups.mean(1, keepdim=True)
    if scale:
        centred = centred / (groups.std(1, keepdim=True) + 1e-4)
    return centred.flatten()


def policy_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    reply_mask: torch.Tensor,
    *,
    clip_low: float,
    clip_high: float,
    ref_logps: torch.Tensor | None = None,
    kl_beta: float = 0.0,
    n_tokens: float | None = None,
) -> tuple[torch.Tensor, dict]:
    """Clipped surrogate + ``kl_beta`` * KL(policy || reference), summed over reply tokens and
    divided by ``n_tokens`` (default: this batch's reply tokens), so every token weighs the same
    whatever the length of its reply. Per-token tensors are (B*G, T); ``advantages`` (B*G,)."""
    ratio = torch.exp(logps - old_logps)
    adv = advantages[:, None]
    per_token = -torch.min(ratio * adv, ratio.clamp(1 - clip_low, 1 + clip_high) * adv)
    n = reply_mask.sum().clamp(min=1) if n_tokens is None else n_tokens
    stats = {
        "clip_fraction": float(
            ((ratio - ratio.clamp(1 - clip_low, 1 + clip_high)).abs() > 0).float().mul(reply_mask).sum()
            / reply_mask.sum().clamp(min=1)
        )
    }
    if ref_logps is not None:
        delta = ref_logps - logps
        kl = torch.exp(delta) - delta - 1  # k3 estimator: unbiased, never negative
        per_token = per_token + kl_beta * kl
        stats["kl"] = float((kl.detach() * reply_mask).sum() / reply_mask.sum().clamp(min=1))
    return (per_token * reply_mask).sum() / n, stats
