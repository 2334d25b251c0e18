"""File writes: atomic (a reader never sees a half-written file), checked before any work,
one run at a time per output folder, and a full or read-only disk told in one line."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path

# Write failures that are the disk's or the folder's, not the program's: told as one line.
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
LOCK_NAME = ".dnallm.lock"


class OutputPathError(ValueError):
    """An output that would overwrite one of the command's inputs, or that cannot be created."""


def check_outputs(files=(), *, dirs=(), inputs=()) -> None:
    """Refuse, before any work, outputs that name an input or cannot be written.

    ``files`` and ``dirs`` are the paths a command will write, ``inputs`` those it reads
    (``None`` entries are ignored). Paths are compared after resolving relative parts and
    links, so ``--out ./x.vcf`` or a link to ``x.vcf`` is the input ``x.vcf``. An input's
    index (``x.fa.fai``, ``x.vcf.gz.tbi``, ...) is an input too, and an input folder (a
    checkpoint) covers every file in it. A link that names nothing is refused.
    """
    files, dirs = [Path(p) for p in files if p], [Path(p) for p in dirs if p]
    inputs = [Path(p) for p in inputs if p]
    inputs += [index for src in inputs for index in _indexes_of(src)]
    outputs = [*dirs, *files]
    for out in outputs:
        _check_link(out)
    for i, out in enumerate(outputs):
        for src in inputs:
            if _same_path(out, src):
                raise OutputPathError(
                    f"output {out} is the input {src}{_resolved_note(out, src)}; write the output to another path"
                )
            if src.is_dir() and out.resolve().is_relative_to(src.resolve()):
                raise OutputPathError(
                    f"output {out} is inside the input folder {src}; write the output to another path"
                )
        for other in outputs[:i]:
            if _same_path(out, other):
                raise OutputPathError(
                    f"outputs {other} and {out} are the same file{_resolved_note(out, other)}; give them different paths"
                )
    for d in dirs:
        if d.exists() and not d.is_dir():
            raise OutputPathError(f"output folder {d} is an existing file; name a folder (or a new path)")
    for f in files:
        if f.is_dir():
            raise OutputPathError(f"output {f} is an existing folder; name a file")
    for out in outputs:
        _check_creatable(out)


INDEX_SUFFIXES = (".fai", ".gzi", ".tbi", ".csi")


def _indexes_of(path: Path) -> list[Path]:
    """The index files htslib / pyfaidx read beside ``path`` (absent ones too: they may be built)."""
    return [path.with_name(path.name + suffix) for suffix in INDEX_SUFFIXES] if not path.is_dir() else []


def check_fresh(paths, *, overwrite: bool) -> None:
    """Generators (``make-tiny``, ``planted``): refuse to replace what exists unless told
    ``--overwrite``; checkpoints may name those models and data by absolute path."""
    existing = [Path(p) for p in paths if Path(p).exists() or Path(p).is_symlink()]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise OutputPathError(f"{existing[0]} exists{more}; pass --overwrite to replace it, or choose another --out")


def _check_link(path: Path) -> None:
    """A link is followed to what it names; one that names nothing (dangling) is refused:
    writing through it would create a file somewhere the user did not name."""
    if path.is_symlink() and not path.exists():
        raise OutputPathError(
            f"output {path} is a link to {os.readlink(path)}, which does not exist; "
            "remove the link or name another path"
        )


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


# ---- one run per output ------------------------------------------------------------------


@contextmanager
def exclusive_output(output: str | Path, what: str = "output folder", *, folder: bool = True):
    """Hold an exclusive lock on ``output`` while inside: a folder (created if absent), or with
    ``folder=False`` a file (say a progress log), locked through a hidden file beside it.

    A second holder stops at once with one line naming the first one's PID and host. The
    lock is an ``fcntl`` lock: the kernel drops it when the process ends, however it ends,
    so a killed run never blocks the next one. The lock file goes when the holder is done.
    """
    output = Path(output)
    path = output / LOCK_NAME if folder else output.with_name(f".{output.name}.lock")
    created = [p for p in [path.parent, *path.parent.parents] if not p.exists()]  # deepest first
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _take_lock(path, f"{what} {output}")
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        yield
    finally:
        path.unlink(missing_ok=True)  # before closing, while still held: no one else can hold this inode
        os.close(fd)
        _remove_if_empty(created)  # a run that failed before writing leaves no folder behind


def _remove_if_empty(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty: the run wrote there
            return


def _take_lock(path: Path, named: str) -> int:
    """A descriptor of ``path`` holding its exclusive lock (retrying if a releasing holder unlinked it)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise OutputPathError(
                f"{named} is in use by another run ({holder}); wait for it to end, or write to another folder"
            ) from None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder unlinked the file between our open and lock: lock the new one


def _read_holder(fd: int) -> str:
    pid, _, host = os.pread(fd, 256, 0).decode(errors="replace").strip().partition(" ")
    return f"PID {pid} on {host}" if pid else "PID unknown"


# ---- disk errors ---------------------------------------------------------------------------


def disk_error_message(error: OSError) -> str | None:
    """One line for a write that failed because of the disk (full, read-only, not ours), naming
    the path and the space left there; None for any other error."""
    if error.errno not in DISK_ERRNOS:
        return None
    path = Path(error.filename) if error.filename else None
    reason = error.strerror or os.strerror(error.errno)
    return (
        f"{path or 'a file'}: {reason} ({_free_space(path)}); free space, or fix the folder's permissions or "
        "mount, and run again (an interrupted run resumes from its last complete checkpoint or shard)"
    )


def _free_space(path: Path | None) -> str:
    folder = path
    while folder is not None and not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder or ".").free
    except OSError:
        return "free space unknown"
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if free < 1024 or unit == "GiB":
            return f"{free:.0f} {unit} free there" if unit == "bytes" else f"{free:.1f} {unit} free there"
        free /= 1024


def reserve_space(fd: int, length: int, path: str | Path) -> None:
    """Allocate disk blocks for the first ``length`` bytes of the open file ``fd``, its size unchanged.

    For writers in C that cannot report a full disk (libBigWig): writes inside the reserved
    range can no longer fail for space, and a disk without room raises ENOSPC (naming
    ``path``) here, before the writer runs. Where the filesystem cannot allocate ahead
    (not Linux, some network or FUSE mounts) the free space is checked instead, which a
    concurrent writer can still beat. ``release_space`` gives back what was not used.
    """
    code = _fallocate_keep_size(fd, length)
    if code in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
        allocated = os.fstat(fd).st_blocks * 512
        code = errno.ENOSPC if shutil.disk_usage(Path(path).parent).free < length - allocated else 0
    if code:
        raise OSError(code, os.strerror(code), str(path))


def release_space(path: str | Path) -> None:
    """Free blocks reserved past the end of ``path`` (truncating to its own size does, on ext4, xfs and tmpfs)."""
    os.truncate(path, os.stat(path).st_size)


def _fallocate_keep_size(fd: int, length: int) -> int:
    """``fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, length)``: 0, or the errno it failed with."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fallocate = libc.fallocate
    except (OSError, AttributeError):  # no fallocate (not Linux)
        return errno.ENOSYS
    fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
    keep_size = 1  # FALLOC_FL_KEEP_SIZE, linux/falloc.h
    return 0 if fallocate(fd, keep_size, 0, length) == 0 else ctypes.get_errno()


@contextmanager
def disk_errors_named(tmp: str | Path, path: str | Path):
    """Inside, a disk error on the temporary ``tmp`` is raised as one on the output ``path``."""
    try:
        yield
    except BaseException as e:
        _raise_as_output_error(e, tmp, Path(path))
        raise


def _raise_as_output_error(error: BaseException, tmp: Path | str, path: Path) -> None:
    converted = _as_output_error(error, tmp, path)
    if converted is not None:
        raise converted from error


def _as_output_error(error: BaseException, tmp: Path | str, path: Path) -> OSError | None:
    """A disk error raised on a temporary file (or inside a temporary folder), re-raised as one on
    ``path``: the user knows the output's name, not the temporary one's."""
    if isinstance(error, OSError) and error.errno in DISK_ERRNOS:
        inside_tmp = error.filename and str(error.filename).startswith(str(tmp))
        name = str(error.filename).replace(str(tmp), str(path), 1) if inside_tmp else str(path)
        return OSError(error.errno, error.strerror, name)
    # safetensors' Rust I/O errors: "... Read-only file system (os error 30) at path ..."
    code = re.search(r"\(os error (\d+)\)", str(error)) if type(error).__name__ == "SafetensorError" else None
    if code and int(code.group(1)) in DISK_ERRNOS:
        return OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(path))
    return None


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
    except BaseException as e:
        _discard(tmp)
        _raise_as_output_error(e, tmp, path)
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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    except OSError as e:
        _raise_as_output_error(e, path, path)
        raise
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
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_as_output_error(e, tmp, path)
        raise


@contextmanager
def atomic_open(path: str | Path, mode: str = "w"):
    """Open a temporary sibling of ``path`` for streaming writes; renamed to ``path`` on success.

    For outputs too large to build in memory first (``atomic_write_text``); ``mode`` is
    ``"w"`` (text, UTF-8) or ``"wb"``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        _raise_as_output_error(e, path, path)
        raise
    try:
        os.chmod(tmp, new_file_mode())  # mkstemp makes 0600; give the output a new file's usual permissions
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        _discard(Path(tmp))
        _raise_as_output_error(e, tmp, path)
        raise


def _discard(tmp: Path) -> None:
    """Remove a temporary file; a failure here (a read-only disk refuses even that) must not hide
    the error being raised."""
    try:
        tmp.unlink(missing_ok=True)
    except OSError:
        pass


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
