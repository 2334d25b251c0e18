"""Fixtures for the serving tests: a briefly trained tiny KEGG checkpoint, and live servers."""

import socket
import threading
import time
from pathlib import Path

import pytest

from dnallm.data.kegg import read_jsonl, write_jsonl
from dnallm.data.synthetic import planted_records

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
API_KEY = "test-key-0123"


@pytest.fixture(scope="session")
def planted_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("planted")
    write_jsonl(root / "train.jsonl", planted_records(64, n_classes=4, length=4001, seed=0))
    write_jsonl(root / "test.jsonl", planted_records(8, n_classes=4, length=4001, seed=1))
    return {"train": root / "train.jsonl", "test": root / "test.jsonl"}


@pytest.fixture(scope="session")
def test_records(planted_files) -> list[dict]:
    return read_jsonl(planted_files["test"])


@pytest.fixture(scope="session")
def checkpoint(tiny_models, planted_files, tmp_path_factory) -> Path:
    """30 quick steps: enough for replies of the form 'Answer: <disease>', not for right ones."""
    from dnallm.config import load_recipe
    from dnallm.train.finetune import train

    out = tmp_path_factory.mktemp("run")
    recipe = load_recipe(
        Path(__file__).resolve().parents[2] / "recipes" / "kegg" / "tiny.yaml",
        [
            f"output_dir={out}",
            f"encoder.name_or_path={tiny_models['genos']}",
            f"llm.name_or_path={tiny_models['qwen3']}",
            f"data.train={planted_files['train']}",
            "data.val=",
            "data.dna_window=32",
            "train.max_steps=30",
            "train.lr=6e-3",
            "train.warmup_ratio=0",
            "train.save_every=0",
        ],
    )
    return train(recipe)


@pytest.fixture(scope="session")
def session(checkpoint):
    from dnallm.serve.session import ModelSession

    return ModelSession.load(checkpoint, device="cpu")


class LiveServer:
    """A real uvicorn server on a free 127.0.0.1 port, in a background thread."""

    def __init__(self, app, api_key: str | None = None, limits=None):
        """``limits``: serve with ``dnallm serve``'s own connection settings (``server_config``)."""
        import uvicorn

        from dnallm.serve.server import server_config

        self.api_key = api_key
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = app
        if limits:
            config = server_config(app, limits, "warning")
        else:
            config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.fixture(scope="session")
def limits():
    from dnallm.serve.protocol import Limits

    return Limits(
        max_body_bytes=64 * 1024, max_dna_length=8001, max_new_tokens=3000, max_prompt_tokens=2048, max_queue=1
    )


@pytest.fixture(scope="session")
def server(session, limits):
    """The API and page behind an API key."""
    from dnallm.serve.server import create_app

    live = LiveServer(create_app(session, limits, api_key=API_KEY), API_KEY)
    yield live
    live.stop()
