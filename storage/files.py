"""Files that are either complete or absent: atomic replacement and content hashes.

Weights downloads, evaluation reports and training checkpoints all go through :func:`atomic_write`, so a crash or
a full disk at any moment leaves the previous file or the new one, never a truncated one.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_umask() -> int:
    """The process umask. Reading it means setting it, so this runs once, at import, before a server's threads
    exist: flipping it later in a threaded server would give another thread's new files mode 0666."""
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


UMASK = _read_umask()


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(handle)`` on a temporary file next to ``path``, fsync it, then rename it over ``path``.

    The temporary file is removed if ``write`` raises. The result gets ordinary permissions (0666 minus the
    umask read at import, :data:`UMASK`), not the 0600 that ``mkstemp`` creates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
