"""File modes for outputs written under a temporary name and renamed into place."""

from __future__ import annotations

import os


def usual_file_mode() -> int:
    """The mode ``open(path, "w")`` would give a new file: 0o666 less the umask.

    ``tempfile.mkstemp`` creates 0o600 files; outputs other people read (bigWigs, plots)
    get the usual mode before they are renamed into place.
    """
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
