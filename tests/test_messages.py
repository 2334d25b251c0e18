"""Chat records (``{"messages": [...]}`` with DNA content parts) about a variant pair: read as the
KEGG records they hold, the same prompts token for token, the same training numbers; a record's
own system turn in its prompt; bad records as one line naming the record and where in it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_recipes import tiny_kegg_recipe

from dnallm.data.dna import RecordError
from dnallm.data.kegg import examples_from_records, load_examples, read_jsonl, write_jsonl
from dnallm.data.messages import from_variant_fields
from dnallm.data.synthetic import planted_records


@pytest.fixture(scope="module")
def both(tmp_path_factory) -> dict[str, Path]:
    """The same planted records as KEGG JSONL and as chat JSONL."""
    root = tmp_path_factory.mktemp("chat")
    records = planted_records(48, n_classes=4, length=4001, seed=3)
    for i, rec in enumerate(records):
        if i % 3 == 0:
            rec["reasoning"] = f"The variant sits in motif {i % 4}."
    write_jsonl(root / "kegg.jsonl", records)
    write_jsonl(root / "chat.jsonl", [from_variant_fields(rec) for rec in records])
    return {"kegg": root / "kegg.jsonl", "chat": root / "chat.jsonl", "root": root}


def test_a_chat_record_reads_as_the_kegg_record_it_holds(both):
    kegg, chat = load_examples(both["kegg"], 32), load_examples(both["chat"], 32)
    columns = ("question", "answer", "reasoning", "ref_window", "var_window", "system")
    for column in columns:
        assert chat[column] == kegg[column], column
    assert read_jsonl(both["chat"])[0]["answer"] == read_jsonl(both["kegg"])[0]["answer"]


def _train_losses(run: Path) -> list[float]:
    [checkpoint] = sorted(run.glob("checkpoint-*"))
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return [h["loss"] for h in state["history"] if "loss" in h]


def test_training_on_chat_records_gives_the_kegg_numbers(tiny_models, both):
    from dnallm.train.finetune import train

    brief = ("train.max_steps=6", "train.log_every=1", "train.save_every=0", "data.dna_window=32")
    losses = {}
    for name in ("kegg", "chat"):
        run = both["root"] / f"run-{name}"
        train(tiny_kegg_recipe(tiny_models, run, both[name], *brief))
        losses[name] = _train_losses(run)
    assert len(losses["chat"]) == 6 and losses["chat"] == losses["kegg"]


def test_a_chat_records_system_turn_is_its_prompts(tiny_models, both):
    from transformers import AutoTokenizer

    from dnallm.fusion.processor import DNAChatProcessor

    tokenizer = AutoTokenizer.from_pretrained(tiny_models["qwen3"])
    processor = DNAChatProcessor(tokenizer, system_prompt="The recipe's prompt.")
    rec = read_jsonl(both["kegg"])[0]
    own = from_variant_fields(rec, system_prompt="You are a clinical geneticist.")
    [plain, chat] = examples_from_records([rec, own], 32, need_dna=False)
    assert chat["system"] == "You are a clinical geneticist." and plain["system"] == ""
    text = {name: tokenizer.decode(processor(ex)["input_ids"]) for name, ex in (("plain", plain), ("chat", chat))}
    assert "You are a clinical geneticist." in text["chat"] and "The recipe's prompt." not in text["chat"]
    assert "The recipe's prompt." in text["plain"]
    assert text["chat"].replace("You are a clinical geneticist.", "The recipe's prompt.") == text["plain"]


PAIR = [
    {"type": "dna", "sequence": "ACGTACGTAC" * 4 + "A" + "ACGTACGTAC" * 4, "pair": "reference"},
    {"type": "dna", "sequence": "ACGTACGTAC" * 4 + "G" + "ACGTACGTAC" * 4, "pair": "variant"},
    {"type": "text", "text": "Which disease?"},
]


def _chat(*messages) -> dict:
    return {"messages": list(messages)}


USER = {"role": "user", "content": PAIR}
REPLY = {"role": "assistant", "content": "Answer: Parkinson disease"}


@pytest.mark.parametrize(
    "record, says",
    [
        (
            _chat({"role": "user", "content": [{**PAIR[0], "sequence": "ACGU"}, *PAIR[1:]]}, REPLY),
            "messages[0].content[0]: field 'sequence' has invalid character 'U' at position 3",
        ),
        (
            _chat({"role": "user", "content": [{"type": "image_url", "url": "x"}, *PAIR]}, REPLY),
            "messages[0].content[0]: a part of type 'image_url'",
        ),
        (_chat(USER), "no assistant turn to learn from"),
        (_chat(REPLY, USER), "messages[0] is an assistant turn where a user turn belongs"),
        (_chat(USER, REPLY, {"role": "system", "content": "late"}), "a system turn comes first or not at all"),
        (_chat({"role": "doctor", "content": "hi"}), "messages[0].role is 'doctor'"),
        (
            _chat({"role": "user", "content": [PAIR[0], PAIR[0], PAIR[1], PAIR[2]]}, REPLY),
            "1 user turn(s) with 3 DNA part(s)",
        ),
        (_chat(USER, REPLY, USER, REPLY), "2 user turn(s) with 4 DNA part(s)"),
        (
            _chat({"role": "user", "content": [{"type": "text", "text": "Look:"}, *PAIR]}, REPLY),
            "text before the DNA parts",
        ),
        (_chat(USER, {"role": "assistant", "content": "Parkinson disease"}), "has no 'Answer: <label>'"),
        ({"messages": []}, "'messages' must be a non-empty list"),
        (_chat({"role": "user", "content": [PAIR[1], PAIR[0], PAIR[2]]}, REPLY), "the variant part comes before"),
        ({**_chat(USER), "answer": "Parkinson disease"}, "no assistant turn to learn from"),
    ],
)
def test_a_bad_chat_record_is_one_line_naming_it(record, says):
    with pytest.raises(RecordError) as caught:
        examples_from_records([record], 32)
    message = str(caught.value)
    assert message.startswith("record 0: ") and says in message and "\n" not in message, message


def test_the_cli_names_the_file_line_and_part(both, tmp_path, capsys):
    from dnallm.cli import main

    lines = both["chat"].read_text().splitlines()
    bad = json.loads(lines[1])
    bad["messages"][0]["content"][1]["sequence"] = "ACGTXACGT"
    (tmp_path / "bad.jsonl").write_text("\n".join([lines[0], json.dumps(bad), *lines[2:]]) + "\n")
    assert main(["split", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"dnallm split: error: {tmp_path / 'bad.jsonl'}:2: messages[0].content[1]: field 'sequence' has invalid "
        "character 'X' at position 4 (0-based); allowed: A, C, G, T, N (any case)"
    )
    assert not (tmp_path / "out").exists()
