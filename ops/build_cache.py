"""The build cache both compiled parts of ``ops`` share: where builds live, and the markers that say how a build ended.

A build folder (named after a hash of what went into it) ends with one of two markers: ``BUILD_OK`` names the library
(and, for CUDA, the GPU architectures it holds), written last and atomically, so a reader sees no marker or a
complete one; ``BUILD_FAILED`` holds the error, so later processes fall back at once instead of recompiling. The
torch kernels (:mod:`ops.build`) and the OpenVINO custom op (:mod:`ops.openvino_build`) both use it.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from adaptiveclick.storage.paths import cache_dir

CSRC = Path(__file__).resolve().parent / "csrc"
MARKER = "BUILD_OK"
FAILED_MARKER = "BUILD_FAILED"  # holds the error, so that every new process does not repeat a failing compile


class BuildError(RuntimeError):
    """A compiled MSDA kernel could not be built or loaded."""


def cache_roots() -> list[Path]:
    """Where builds are looked for, in order: ``$ADAPTIVECLICK_CACHE/torch_extensions`` (default
    ``~/.cache/adaptiveclick/torch_extensions``), then a per-user temporary folder (used when the first is not
    writable, e.g. a read-only image layer at run time), then :func:`installed_root`."""
    return [
        cache_dir() / "torch_extensions",
        Path(tempfile.gettempdir()) / f"adaptiveclick-torch-extensions-{os.getuid()}",
        installed_root(),
    ]


def installed_root() -> Path:
    """Builds shipped with the Python environment, ``<sys.prefix>/share/adaptiveclick/torch_extensions``. The
    Docker image builds its kernels there (``ADAPTIVECLICK_CACHE=<sys.prefix>/share/adaptiveclick python -m
    adaptiveclick.ops.build``), so a volume mounted over the run-time cache (downloaded weights) does not hide them."""
    return Path(sys.prefix) / "share" / "adaptiveclick" / "torch_extensions"


def writable_cache_root() -> Path:
    """The first of :func:`cache_roots` that can be written to (where a new build goes)."""
    for root in cache_roots():
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(root, os.W_OK):
            return root
    raise BuildError(f"no writable build cache among {[str(r) for r in cache_roots()]}")


def read_marker(folder: Path) -> tuple[Path, list[str]] | None:
    """``(library, GPU architectures)`` of the finished build in ``folder``, or None (no marker, or its library is
    gone)."""
    marker = folder / MARKER
    if not marker.is_file():
        return None
    lines = marker.read_text().split("\n")
    library = folder / lines[0].strip()
    archs = [a for a in lines[1].replace(" ", ";").split(";") if a] if len(lines) > 1 and lines[1].strip() else []
    return (library, archs) if library.is_file() else None
