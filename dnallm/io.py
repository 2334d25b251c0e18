"""File writes: atomic (a reader never sees a half-written file), and checked before any work."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


class OutputPathError(ValueError):
    """An output that would overwrite one of the command's inputs, or that cannot be created."""


def check_outputs(files=(), *, dirs=(), inputs=()) -> None:
    """Refuse, before any work, outputs that name an input or cannot be written.

    ``files`` and ``dirs`` are the paths a command will write, ``inputs`` those it reads
    (``None`` entries are ignored). Paths are compared after resolving relative parts and
    links, so ``--out ./x.vcf`` or a link to ``x.vcf`` is the input ``x.vcf``.
    """
    files, dirs = [Path(p) for p in files if p], [Path(p) for p in dirs if p]
    inputs = [Path(p) for p in inputs if p]
    outputs = [*dirs, *files]
    for i, out in enumerate(outputs):
        for src in inputs:
            if _same_path(out, src):
                raise OutputPathError(f"output {out} is the input {src}{_resolved_note(out, src)}; write the output to another path")
        for other in outputs[:i]:
            if _same_path(out, other):
                raise OutputPathError(f"outputs {other} and {out} are the same file{_resolved_note(out, other)}; give them different paths")
    for d in dirs:
        if d.exists() and not d.is_dir():
            raise OutputPathError(f"output folder {d} is an existing file; name a folder (or a new path)")
    for f in files:
        if f.is_dir():
            raise OutputPathError(f"output {f} is an existing folder; name a file")
    for out in outputs:
        _check_creatable(out)


def _same_path(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def _resolved_note(a: Path, b: Path) -> str:
    return "" if a == b else f" (both are {b.resolve()})"


def _check_creatable(path: Path) -> None:
    """The nearest existing folder at or above ``path`` is a folder we may write in."""
    ancestor = path if path.is_dir() else path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputPathError(f"cannot create {path}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputPathError(f"cannot create {path}: folder {ancestor} is not writable")


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


def file_figures():
    """pyplot for figures written to files: the Agg backend, except inside a notebook,
    whose inline backend is left alone so its own figures still show."""
    import matplotlib

    if "inline" not in matplotlib.get_backend():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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
