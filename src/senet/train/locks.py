"""Advisory file locks (POSIX ``flock``) that keep two processes out of one run folder or experiment.

A lock lives as long as the process holding it: a killed process leaves no stale lock behind. Where
``fcntl`` does not exist (Windows) nothing is locked.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: no lock
    fcntl = None

__all__ = ["exclusive", "is_locked"]


@contextmanager
def exclusive(path: Path, busy: str) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing), recording this process's pid in it.

    If another process holds it, raise ``ValueError(busy)`` at once, with ``{holder}`` in ``busy``
    replaced by what the holder recorded (e.g. ``pid 1234``).
    """
    with open(path, "a+") as f:
        if fcntl is not None:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.seek(0)
                raise ValueError(busy.replace("{holder}", f.read().strip() or "another process")) from None
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()}")
            f.flush()
        yield


def is_locked(path: Path) -> bool:
    """Whether another process holds the lock on ``path`` now."""
    if fcntl is None or not path.is_file():
        return False
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False
