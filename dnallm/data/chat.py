"""Chat prompts with DNA placeholder blocks, tokenized with the loss on the answer only.

The user turn carries one ``<|dna_start|><|dna_pad|>...<|dna_end|>`` block per sequence
(reference first, then variant), then, for models with a variant summary, a short block of
summary positions; each ``<|dna_pad|>`` is later replaced by one projected DNA embedding
(see ``dnallm.fusion``).
"""

from __future__ import annotations

import re

DNA_START, DNA_PAD, DNA_END = "<|dna_start|>", "<|dna_pad|>", "<|dna_end|>"
DNA_TOKENS = (DNA_START, DNA_PAD, DNA_END)
IGNORE_INDEX = -100

DEFAULT_SYSTEM_PROMPT = (
    "You are an expert in human genetics. You are given a reference DNA sequence and the "
    "same locus carrying a variant, and a question about the variant. "
    "Finish your reply with a line 'Answer: <disease>'."
)


def dna_block(n_positions: int) -> str:
    return DNA_START + DNA_PAD * n_positions + DNA_END


def user_message(question: str, n_ref: int, n_var: int, n_summary: int = 0) -> str:
    """The user turn: both DNA blocks, the variant summary block if any, then the question.
    ``n_ref = n_var = 0`` gives a text-only turn."""
    if n_ref == 0 and n_var == 0:
        return question
    summary = f"\nVariant summary: {dna_block(n_summary)}" if n_summary else ""
    return f"Reference sequence: {dna_block(n_ref)}\nVariant sequence: {dna_block(n_var)}{summary}\n\n{question}"


def answer_text(answer: str, reasoning: str = "") -> str:
    """Assistant reply: optional reasoning, then ``Answer: <disease>``."""
    reasoning = reasoning.strip()
    return f"{reasoning}\n\nAnswer: {answer}" if reasoning else f"Answer: {answer}"


# The label: text after an "Answer:" marker (the last one counts), case-insensitive.
ANSWER_PATTERN = re.compile(r"answer\s*:\s*(.+)", re.IGNORECASE)


def split_answer(text: str) -> tuple[str, str] | None:
    """(reasoning, label) of a reply ``[reasoning] Answer: <label>``, the label as written (its
    first line after the last marker); None without a marker or a label."""
    markers = list(ANSWER_PATTERN.finditer(text))
    if not markers:
        return None
    label = markers[-1].group(1).strip().splitlines()[0].strip() if markers[-1].group(1).strip() else ""
    return (text[: markers[-1].start()].strip(), label) if label else None


def parse_answer(text: str) -> str:
    """The label after the last 'Answer:' in ``text`` (lower-cased, trimmed); '' if none."""
    split = split_answer(text)
    return split[1].strip(".").strip().lower() if split else ""


def prompt_ids(tokenizer, system_prompt: str, user: str) -> list[int]:
    """Token ids of system + user turns and the assistant header (thinking disabled)."""
    messages = [{"role": "system", "content": system_prompt}, {"role": "user", "content": user}]
    ids = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, enable_thinking=False, return_dict=False
    )
    return list(ids)


def encode_example(tokenizer, system_prompt: str, user: str, reply: str | None) -> dict:
    """``input_ids`` and ``labels`` for one example; labels are ``IGNORE_INDEX`` outside the reply.

    The reply ends with the chat end-of-turn token so that the model learns to stop.
    """
    prompt = prompt_ids(tokenizer, system_prompt, user)
    if reply is None:
        return {"input_ids": prompt, "labels": [IGNORE_INDEX] * len(prompt)}
    reply_ids = tokenizer(reply, add_special_tokens=False)["input_ids"] + [end_of_turn_id(tokenizer)]
    return {"input_ids": prompt + reply_ids, "labels": [IGNORE_INDEX] * len(prompt) + reply_ids}


def end_of_turn_id(tokenizer) -> int:
    tok_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if tok_id is None or tok_id == tokenizer.unk_token_id:
        tok_id = tokenizer.eos_token_id
    if tok_id is None:
        raise ValueError("tokenizer has neither <|im_end|> nor an eos token to end the assistant turn")
    return tok_id


def pad_batch(rows: list[dict], pad_id: int, side: str = "right") -> dict:
    """Pad ``input_ids``/``labels`` to the longest row; ``side='left'`` for generation. -> long tensors"""
    import torch  # here: the recipe schema (dnallm.config) reads this module's prompt without torch

    longest = max(len(r["input_ids"]) for r in rows)
    ids, labels, mask = [], [], []
    for r in rows:
        n_pad = longest - len(r["input_ids"])
        pad = [pad_id] * n_pad
        lab_pad = [IGNORE_INDEX] * n_pad
        row_labels = r.get("labels", [IGNORE_INDEX] * len(r["input_ids"]))  # a prompt to generate from has none
        if side == "left":
            ids.append(pad + r["input_ids"])
            labels.append(lab_pad + row_labels)
            mask.append([0] * n_pad + [1] * len(r["input_ids"]))
        else:
            ids.append(r["input_ids"] + pad)
            labels.append(row_labels + lab_pad)
            mask.append([1] * len(r["input_ids"]) + [0] * n_pad)
    return {
        "input_ids": torch.tensor(ids, dtype=torch.long),
        "labels": torch.tensor(labels, dtype=torch.long),
        "attention_mask": torch.tensor(mask, dtype=torch.long),
    }
