"""A crash-safe log of finished batches, so that a long annotation run can resume.

JSON lines: the first holds a fingerprint of the run (inputs, checkpoint, options); each
next line holds one finished batch and is flushed to disk before the next batch starts.
A crash can only leave the last line incomplete, and that line is dropped on resume.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


class ProgressMismatch(ValueError):
    """The progress file belongs to a run with other inputs or options."""


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class ProgressLog:
    def __init__(self, path: str | Path, fingerprint: dict):
        self.path = Path(path)
        self.fingerprint = json.loads(json.dumps(fingerprint))  # as it reads back from disk
        self._started = False  # True once the file holds this run's fingerprint

    def load(self) -> dict[int, list]:
        """Finished batches by index. A log without any (none yet, or only the fingerprint
        of a run that stopped before its first batch) is started afresh with the first
        batch, so a run that fails before finishing one leaves no file behind."""
        found, batches = self._read()
        if not batches:
            return {}
        self._check_fingerprint(found)
        self._started = True
        return batches

    def _read(self) -> tuple[dict, dict[int, list]]:
        """(fingerprint, batches) on disk; drops a last line that a crash cut short."""
        if not self.path.is_file():
            return {}, {}
        data = self.path.read_bytes()
        fingerprint, batches, offset = {}, {}, 0
        for number, line in enumerate(data.splitlines(keepends=True), start=1):
            entry = self._parse(line)
            if entry is None:
                if offset + len(line) < len(data):
                    raise ProgressMismatch(
                        f"{self.path}:{number}: corrupt line in the middle of the progress file; delete it to start over"
                    )
                with self.path.open("r+b") as f:
                    f.truncate(offset)
                break
            if number == 1:
                fingerprint = entry.get("fingerprint", {})
            else:
                batches[entry["batch"]] = entry["rows"]
            offset += len(line)
        return fingerprint, batches

    def append(self, batch: int, rows: list) -> None:
        if not self._started:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._write_line({"fingerprint": self.fingerprint}, mode="w")
            self._started = True
        self._write_line({"batch": batch, "rows": rows})

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def _write_line(self, entry: dict, mode: str = "a") -> None:
        with self.path.open(mode, encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())

    @staticmethod
    def _parse(line: bytes) -> dict | None:
        if not line.endswith(b"\n"):
            return None
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            return None

    def _check_fingerprint(self, found: dict) -> None:
        differ = sorted(k for k in set(found) | set(self.fingerprint) if found.get(k) != self.fingerprint.get(k))
        if differ:
            details = "; ".join(f"{k}: {found.get(k)!r} then, {self.fingerprint.get(k)!r} now" for k in differ)
            raise ProgressMismatch(
                f"{self.path} was written by a run with other inputs or options ({details}); rerun with the "
                f"same ones to resume, or delete {self.path} to start over"
            )
