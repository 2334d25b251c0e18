"""Atomic file and directory writes: a reader never sees a half-written file."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def save_tensors(tensors: dict, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """``safetensors`` file written whole under a temporary name, with a new file's usual permissions."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def new_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_directory(path: str | Path):
    """Yield a temporary sibling directory; on success it is renamed to ``path``.

    An existing ``path`` is replaced only after the new one is complete, so a crash
    leaves either the old directory or none, never a partial one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    tmp.chmod(0o755)
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def atomic_open(path: str | Path, mode: str = "w"):
    """Open a temporary sibling of ``path`` for streaming writes; renamed to ``path`` on success.

    For outputs too large to build in memory first (``atomic_write_text``); ``mode`` is
    ``"w"`` (text, UTF-8) or ``"wb"``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, new_file_mode())  # mkstemp makes 0600; give the output a new file's usual permissions
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_figure(fig, path: str | Path, **savefig_kwargs) -> None:
    """A matplotlib figure written whole (PNG unless ``format`` says otherwise), then closed."""
    import matplotlib.pyplot as plt

    savefig_kwargs.setdefault("format", Path(path).suffix.lstrip(".") or "png")
    savefig_kwargs.setdefault("dpi", 120)
    try:
        with atomic_open(path, "wb") as f:
            fig.savefig(f, **savefig_kwargs)
    finally:
        plt.close(fig)
