"""The build cache both compiled parts of ``ops`` share: where builds live, and the markers that say how a build ended.

A build folder (named after a hash of what went into it) ends with one of two markers: ``BUILD_OK`` names the library
(a plain file name in the folder), the GPU architectures it holds (CUDA) and the library's sha256, written last and
atomically, so a reader sees no marker or a complete one; ``BUILD_FAILED`` holds the error, so later processes fall
back at once instead of recompiling. A library is loaded only when its bytes still match the sha256 its marker
recorded at build time (:func:`read_marker`), and a marker naming anything but a file of its own folder is ignored.
The torch kernels (:mod:`ops.build`) and the OpenVINO custom op (:mod:`ops.openvino_build`) both use it.

Where (:func:`cache_roots`): ``$ADAPTIVECLICK_CACHE/torch_extensions``, then a per-user folder in the temporary
directory that must be this user's own with mode 0700 (a folder another user planted there first is never read
or written), then the builds shipped with the environment (:func:`installed_root`).
"""

from __future__ import annotations

import logging
import os
import stat
import sys
import tempfile
from pathlib import Path

from adaptiveclick.storage.files import sha256_of
from adaptiveclick.storage.paths import cache_dir

logger = logging.getLogger(__name__)

CSRC = Path(__file__).resolve().parent / "csrc"
MARKER = "BUILD_OK"
FAILED_MARKER = "BUILD_FAILED"  # holds the error, so that every new process does not repeat a failing compile


class BuildError(RuntimeError):
    """A compiled MSDA kernel could not be built or loaded."""


def cache_roots() -> list[Path]:
    """Where builds are looked for, in order: ``$ADAPTIVECLICK_CACHE/torch_extensions`` (default
    ``~/.cache/adaptiveclick/torch_extensions``), then a per-user temporary folder (used when the first is not
    writable, e.g. a read-only image layer at run time) unless it exists and is not this user's private folder,
    then :func:`installed_root`."""
    temporary = temp_root()
    roots = [cache_dir() / "torch_extensions"]
    if not temporary.exists() or is_private(temporary):
        roots.append(temporary)
    return roots + [installed_root()]


def temp_root() -> Path:
    """The per-user folder in the temporary directory (shared by every user of the machine: see
    :func:`is_private`)."""
    return Path(tempfile.gettempdir()) / f"adaptiveclick-torch-extensions-{os.getuid()}"


def is_private(folder: Path) -> bool:
    """``folder`` is a real folder (not a link) of this user that nobody else may write or read (mode 0700), so a
    library in it was put there by this user."""
    try:
        info = os.lstat(folder)
    except OSError:
        return False
    private = stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o077
    if not private:
        logger.warning(
            "a build folder in the temporary directory is not this user's private folder: not used",
            extra={"folder": str(folder), "uid": info.st_uid, "mode": oct(stat.S_IMODE(info.st_mode))},
        )
    return private


def installed_root() -> Path:
    """Builds shipped with the Python environment, ``<sys.prefix>/share/adaptiveclick/torch_extensions``. The
    Docker image builds its kernels there (``ADAPTIVECLICK_CACHE=<sys.prefix>/share/adaptiveclick python -m
    adaptiveclick.ops.build``), so a volume mounted over the run-time cache (downloaded weights) does not hide them."""
    return Path(sys.prefix) / "share" / "adaptiveclick" / "torch_extensions"


def writable_cache_root() -> Path:
    """The first of :func:`cache_roots` that can be written to (where a new build goes)."""
    temporary = temp_root()
    for root in cache_roots():
        try:
            if root == temporary:
                root.mkdir(mode=0o700, parents=True, exist_ok=True)
                if not is_private(root):  # someone else's folder appeared meanwhile
                    continue
            else:
                root.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(root, os.W_OK):
            return root
    raise BuildError(f"no writable build cache among {[str(r) for r in cache_roots()]}")


def is_plain_name(name: str) -> bool:
    """A file name of the folder itself: no separator, no ``..``, no control character."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and name.isprintable()


def write_marker(folder: Path, library: Path, archs: list[str]) -> None:
    """Write ``BUILD_OK`` for ``library`` (in ``folder``) atomically: its name, the GPU architectures, its sha256."""
    if library.parent != folder or not is_plain_name(library.name):
        raise BuildError(f"a build's library must lie in its folder {folder}, got {library}")
    tmp = folder / f"{MARKER}.{os.getpid()}"
    tmp.write_text(f"{library.name}\n{';'.join(archs)}\nsha256={sha256_of(library)}\n")
    tmp.replace(folder / MARKER)  # atomic: readers see no marker or a complete one


def read_marker(folder: Path) -> tuple[Path, list[str]] | None:
    """``(library, GPU architectures)`` of the finished build in ``folder``, or None: no marker, a marker naming
    anything but a plain file of the folder, no sha256 recorded, or a library whose bytes no longer match it (then
    the build is made again)."""
    marker = folder / MARKER
    if not marker.is_file():
        return None
    lines = marker.read_text().split("\n")
    name = lines[0].strip()
    recorded = lines[2].strip().removeprefix("sha256=") if len(lines) > 2 and lines[2].startswith("sha256=") else ""
    if not is_plain_name(name) or len(recorded) != 64:
        logger.warning("a build marker names no plain library or no sha256: ignored", extra={"marker": str(marker)})
        return None
    library = folder / name
    if not library.is_file():
        return None
    if sha256_of(library) != recorded:
        logger.warning(
            "a built library does not match the sha256 recorded when it was built: not loaded",
            extra={"library": str(library)},
        )
        return None
    archs = [a for a in lines[1].replace(" ", ";").split(";") if a] if len(lines) > 1 and lines[1].strip() else []
    return library, archs
