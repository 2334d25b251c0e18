"""Chat records: the multimodal chat layout (OpenAI / Hugging Face content parts) with DNA parts.

A JSONL record is ``{"messages": [{"role": ..., "content": str | [part, ...]}, ...]}``; a part is
``{"type": "text", "text": ...}`` or ``{"type": "dna", "sequence": "ACGT...", "name": ...,
"pair": "reference" | "variant"}``. Roles: an optional ``system`` turn first, then ``user`` and
``assistant`` turns in turn, starting with ``user``.

Read here (``read_jsonl`` calls ``variant_fields``): a conversation of one user turn holding a
reference/variant pair (its two DNA parts marked ``"pair"``) and then the question as text, and
one assistant turn ``[reasoning] Answer: <label>``. It becomes the KEGG record the rest of the
project reads (the prompt lays out the pair as for KEGG records); its system turn, if any,
replaces the recipe's system prompt for it. Other shapes (one sequence, several, several turns)
are refused with one line until the prompt layout reads them.
"""

from __future__ import annotations

from dnallm.data import chat
from dnallm.data.dna import RecordError, clean_sequence

ROLES = ("system", "user", "assistant")
PART_TYPES = ("text", "dna")
PAIR_ROLES = ("reference", "variant")
# The fields a chat record's conversation gives (a record's own keys of these names are not read).
KEGG_FIELDS = ("question", "reference_sequence", "variant_sequence", "answer", "reasoning", "system")


def is_chat_record(rec: dict) -> bool:
    return "messages" in rec


def check_messages(rec: dict, where: str) -> list[dict]:
    """The record's turns, each ``{"role", "parts"}`` with its content as parts (a string is one
    text part) and its DNA upper-cased; a bad turn or part raises one line naming the record and
    where in it (``messages[1].content[2].sequence``) and what to write instead."""
    messages = rec.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RecordError(f"{where}: 'messages' must be a non-empty list of turns ({{'role': ..., 'content': ...}})")
    turns = []
    for i, message in enumerate(messages):
        at = f"{where}: messages[{i}]"
        if not isinstance(message, dict):
            raise RecordError(f"{at} must be an object with 'role' and 'content', got {type(message).__name__}")
        role = message.get("role")
        if role not in ROLES:
            raise RecordError(f"{at}.role is {role!r}; use one of {', '.join(ROLES)}")
        turns.append({"role": role, "parts": _parts(message.get("content"), at)})
    _check_order([t["role"] for t in turns], where)
    return turns


def _parts(content, at: str) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list) or not content:
        raise RecordError(f"{at}.content must be a string or a non-empty list of parts")
    parts = []
    for j, part in enumerate(content):
        here = f"{at}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in PART_TYPES:
            raise RecordError(
                f"{here}: a part of type {kind!r}; a part is {{'type': 'text', 'text': ...}} or "
                "{'type': 'dna', 'sequence': 'ACGT...'}"
            )
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise RecordError(f"{here}.text must be a string")
            parts.append({"type": "text", "text": part["text"]})
            continue
        pair = part.get("pair")
        if pair is not None and pair not in PAIR_ROLES:
            raise RecordError(f"{here}.pair is {pair!r}; mark a pair's parts 'reference' and 'variant'")
        sequence = clean_sequence(part.get("sequence"), where=here, field="sequence")
        if not sequence:
            raise RecordError(f"{here}.sequence is empty")
        parts.append({"type": "dna", "sequence": sequence, "name": part.get("name"), "pair": pair})
    return parts


def _check_order(roles: list[str], where: str) -> None:
    turns = roles[1:] if roles[0] == "system" else roles
    if "system" in turns:
        raise RecordError(f"{where}: messages[{roles.index('system', 1)}]: a system turn comes first or not at all")
    for i, role in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            at = i + (len(roles) - len(turns))
            raise RecordError(
                f"{where}: messages[{at}] is {'an' if role == 'assistant' else 'a'} {role} turn where "
                f"{'an' if expected == 'assistant' else 'a'} {expected} turn belongs; "
                "after the system turn, user and assistant take turns, the user first"
            )
    if not turns:
        raise RecordError(f"{where}: no user turn")


def variant_fields(rec: dict, where: str) -> dict:
    """A chat record about a reference/variant pair -> the KEGG fields (``question``,
    ``reference_sequence``, ``variant_sequence``, ``answer``, ``reasoning``, ``system``), the
    record's other keys kept. Other conversations raise one line saying what this version reads."""
    turns = check_messages(rec, where)
    system = turns[0] if turns[0]["role"] == "system" else None
    dialogue = turns[1:] if system else turns
    users = [t for t in dialogue if t["role"] == "user"]
    dna = [p for t in users for p in t["parts"] if p["type"] == "dna"]
    if len(users) == 1 and len(dna) == 2 and [p["pair"] for p in dna] == list(PAIR_ROLES)[::-1]:
        raise RecordError(f"{where}: the variant part comes before the reference part; give the reference first")
    if len(users) != 1 or len(dialogue) > 2 or len(dna) != 2 or [p["pair"] for p in dna] != list(PAIR_ROLES):
        raise RecordError(
            f"{where}: a conversation of {len(users)} user turn(s) with {len(dna)} DNA part(s); chat records are "
            'read as one user turn holding a reference/variant pair (two DNA parts marked "pair": '
            '"reference" then "variant") and the question, and one assistant turn "Answer: <label>"'
        )
    if system and any(p["type"] != "text" for p in system["parts"]):
        raise RecordError(f"{where}: messages[0]: a system turn holds text only")
    at = f"{where}: messages[{1 if system else 0}]"
    parts = users[0]["parts"]
    last_dna = max(i for i, p in enumerate(parts) if p["type"] == "dna")
    if any(p["type"] == "text" and p["text"].strip() for p in parts[:last_dna]):
        raise RecordError(
            f"{at}: text before the DNA parts; write the pair first and the question after it "
            "(the prompt labels the two sequences itself)"
        )
    question = "".join(p["text"] for p in parts[last_dna + 1 :]).strip()
    if not question:
        raise RecordError(f"{at} holds no question: put it as text after the pair")
    fields = {k: v for k, v in rec.items() if k != "messages" and k not in KEGG_FIELDS}
    fields.update(
        question=question,
        reference_sequence=dna[0]["sequence"],
        variant_sequence=dna[1]["sequence"],
        system="".join(p["text"] for p in system["parts"]).strip() if system else "",
    )
    if len(dialogue) == 2:
        fields["reasoning"], fields["answer"] = _answer(dialogue[1]["parts"], f"{where}: messages[{len(turns) - 1}]")
    return fields


def _answer(parts: list[dict], at: str) -> tuple[str, str]:
    """(reasoning, label) of an assistant turn ``[reasoning] Answer: <label>`` (``chat.split_answer``)."""
    if any(p["type"] != "text" for p in parts):
        raise RecordError(f"{at}: an assistant turn holds text only")
    text = "".join(p["text"] for p in parts).strip()
    split = chat.split_answer(text)
    if split is None:
        raise RecordError(f"{at}: the assistant turn has no 'Answer: <label>' ({text[:60]!r}); end it with one")
    return split


def from_variant_fields(rec: dict, system_prompt: str = "") -> dict:
    """A KEGG record as a chat record, the pair's parts marked: the inverse of ``variant_fields``."""
    user = [
        {"type": "dna", "sequence": rec["reference_sequence"], "pair": "reference"},
        {"type": "dna", "sequence": rec["variant_sequence"], "pair": "variant"},
        {"type": "text", "text": rec["question"]},
    ]
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": user})
    if rec.get("answer"):
        messages.append({"role": "assistant", "content": chat.answer_text(rec["answer"], rec.get("reasoning") or "")})
    return {"messages": messages}
