"""`dnallm chat` and `dnallm serve` as a user runs them: subprocesses, piped input, curl."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from dnallm.serve.commands import _is_loopback
from dnallm.serve.session import Conversation, Sampling
from serve_helpers import tagged

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "DS_ACCELERATOR": "cpu"}


def expected_reply(session, rec, max_new_tokens):
    dna = session.prepare_dna(rec["reference_sequence"], rec["variant_sequence"], 10_000)
    return session.reply(
        Conversation([{"role": "user", "content": rec["question"]}], dna), Sampling(max_new_tokens=max_new_tokens)
    )


def test_chat_command_line(checkpoint, planted_files, session, test_records):
    """`dnallm chat` as a user runs it, with questions piped in."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "DS_ACCELERATOR": "cpu"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dnallm",
            "chat",
            str(checkpoint),
            "--jsonl",
            str(planted_files["test"]),
            "--record",
            "2",
            "--max-new-tokens",
            "16",
            "--device",
            "cpu",
        ],
        input=test_records[2]["question"] + "\n/quit\n",
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    expected = expected_reply(session, test_records[2], 16)
    assert f"model> {expected}\n" in result.stdout


def test_chat_command_line_names_bad_dna_before_loading(checkpoint, planted_files):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dnallm",
            "chat",
            str(checkpoint),
            "--jsonl",
            str(planted_files["test"]),
            "--record",
            "99",
        ],
        input="",
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
        cwd=REPO,
    )
    assert result.returncode == 2
    named = f"dnallm chat: error: {planted_files['test']}: record index 99 out of range (file has 8 records"
    assert named in result.stderr
    assert "Traceback" not in result.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_serve_command_with_curl(checkpoint, session, test_records, tmp_path):
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dnallm",
            "serve",
            str(checkpoint),
            "--port",
            str(port),
            "--device",
            "cpu",
            "--max-new-tokens",
            "16",
            "--model-name",
            "tiny",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**ENV, "DNALLM_API_KEY": "k1"},
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            try:
                health = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5))
                break
            except OSError:
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.2)
        assert health["model"] == "tiny"
        rec = test_records[3]
        body = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": tagged(rec)}]})
        out = subprocess.run(
            [
                "curl",
                "-sS",
                f"http://127.0.0.1:{port}/v1/chat/completions",
                "-H",
                "Authorization: Bearer k1",
                "-H",
                "Content-Type: application/json",
                "-d",
                body,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        assert json.loads(out)["choices"][0]["message"]["content"] == expected_reply(session, rec, 16)
        denied = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{port}/v1/models"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        assert denied == "401"  # the key came from DNALLM_API_KEY
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    assert f"on http://127.0.0.1:{port}/" in (tmp_path / "serve.log").read_text()


def test_only_loopback_counts_as_private():
    assert _is_loopback("127.0.0.1") and _is_loopback("localhost") and _is_loopback("::1")
    assert not _is_loopback("0.0.0.0") and not _is_loopback("192.168.1.4")
