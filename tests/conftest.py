import os
from pathlib import Path

import pytest

# DeepSpeed on this machine's CPU; set before anything imports deepspeed.
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
SHARED_KEGG = REPO.parent / "shared" / "datasets" / "kegg"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Tiny Genos-shaped encoder and Qwen3, saved with save_pretrained."""
    from dnallm.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def shared_kegg() -> Path:
    if not (SHARED_KEGG / "test.jsonl").is_file():
        pytest.skip(f"real KEGG records not found at {SHARED_KEGG} (the shared/ folder sits beside the repository in CI)")
    return SHARED_KEGG


@pytest.fixture
def single_process_env(monkeypatch):
    """Environment of a one-process launch, on a port free at the time (other test runs may share the machine)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, value)
