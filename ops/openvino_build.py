"""Build the OpenVINO custom op of MSDA (``ops/csrc/msda_openvino.cpp``) against the installed ``openvino`` wheel.

The wheel ships the C++ headers (``openvino/include``) and its libraries (``openvino/libs/libopenvino.so.<ver>``,
``libtbb.so.12``), so one ``g++`` call builds the op (~10 s) with no other package. The library goes into the same
persistent cache as the torch kernels (:func:`ops.build_cache.cache_roots`), in a folder named after a hash of the
kernel sources, the openvino version and the compiler flags, with the same ``BUILD_OK`` / ``BUILD_FAILED`` markers:
later processes load the finished build, and a failed one is not retried until ``python -m adaptiveclick.ops.build``
does.

``python -m adaptiveclick.ops.build`` builds it ahead of time where openvino is installed (``--openvino yes|no|auto``).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import threading
from pathlib import Path

from .build_cache import CSRC, FAILED_MARKER, BuildError, cache_roots, read_marker, writable_cache_root, write_marker

NAME = "adaptiveclick_msda_openvino"
SOURCE = "msda_openvino.cpp"
#: the shared kernel headers the op is compiled from (its key tracks them)
HEADERS = ("msda_types.h", "msda_cpu_isa.h", "msda_cpu_kernel.h")
CFLAGS = (
    "-std=c++17",
    "-O3",
    "-fPIC",
    "-shared",
    "-Wno-psabi",
    # what the wheel's OpenVINOConfig.cmake gives its targets
    "-DOV_THREAD=OV_THREAD_TBB_ADAPTIVE",
    "-D_GLIBCXX_USE_CXX11_ABI=1",
)
LIBRARY = f"lib{NAME}.so"

_lock = threading.Lock()
_library: Path | None = None


def openvino_version() -> str:
    """The installed openvino's version (ImportError without it)."""
    import openvino

    return openvino.__version__


def openvino_dir() -> Path:
    """The installed ``openvino`` package folder (holding ``include/`` and ``libs/``)."""
    import openvino

    return Path(openvino.__file__).resolve().parent


def link_flags(ov_dir: Path) -> list[str]:
    """Link against the wheel's versioned libraries (it ships no unversioned ``libopenvino.so``)."""
    libs = ov_dir / "libs"
    core = sorted(libs.glob("libopenvino.so.*"))
    tbb = sorted(libs.glob("libtbb.so.*"))
    if not core or not tbb:
        raise BuildError(f"no libopenvino.so.* / libtbb.so.* in {libs}: is openvino installed from its wheel?")
    return [f"-L{libs}", f"-l:{core[0].name}", f"-l:{tbb[0].name}", f"-Wl,-rpath,{libs}"]


def compiler() -> str:
    return os.environ.get("CXX") or "c++"


def compile_command(output: Path, ov_dir: Path) -> list[str]:
    include = ov_dir / "include"
    if not (include / "openvino" / "op" / "op.hpp").is_file():
        raise BuildError(f"the openvino headers are missing ({include}/openvino/op/op.hpp)")
    return [compiler(), *CFLAGS, f"-I{include}", f"-I{CSRC}", str(CSRC / SOURCE), "-o", str(output)] + link_flags(
        ov_dir
    )


def build_key() -> str:
    """Hash of what makes a build reusable: the op and kernel sources, openvino's version, flags and platform."""
    digest = hashlib.sha256()
    for name in (SOURCE, *HEADERS):
        digest.update(name.encode() + b"\0" + (CSRC / name).read_bytes())
    digest.update(repr((openvino_version(), CFLAGS, compiler(), platform.machine())).encode())
    return digest.hexdigest()[:16]


def build_name() -> str:
    return f"{NAME}-{build_key()}"


def _compile(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    output = folder / LIBRARY
    tmp = folder / f".{LIBRARY}.{os.getpid()}"
    command = compile_command(tmp, openvino_dir())
    if shutil.which(command[0]) is None:
        error = BuildError(f"no C++ compiler ({command[0]}; set CXX) to build the OpenVINO MSDA op")
    else:
        result = subprocess.run(command, capture_output=True, text=True)
        error = None
        if result.returncode != 0:
            error = BuildError(
                f"building {NAME} failed ({' '.join(command)}):\n{result.stderr[-4000:] or result.stdout[-4000:]}"
            )
    if error is not None:
        tmp.unlink(missing_ok=True)
        (folder / FAILED_MARKER).write_text(str(error))
        raise error
    tmp.replace(output)
    (folder / FAILED_MARKER).unlink(missing_ok=True)
    write_marker(folder, output, [])
    return output


def library(jit: bool = True, retry_failed: bool = False) -> Path:
    """The built op library (building it first if needed); :class:`ops.build_cache.BuildError` with the reason when it
    can be neither found nor built, ImportError without openvino. ``jit=False`` only looks for a finished build."""
    global _library
    with _lock:
        if _library is not None:
            return _library
        name = build_name()
        for root in cache_roots():
            found = read_marker(root / name)
            if found:
                _library = found[0]
                return _library
        if not jit:
            raise BuildError(
                f"no finished build {name} in {[str(r) for r in cache_roots()]}; run python -m adaptiveclick.ops.build"
            )
        folder = writable_cache_root() / name
        failed = folder / FAILED_MARKER
        if failed.is_file() and not retry_failed:
            raise BuildError(
                f"an earlier build failed (delete {failed} or run `python -m adaptiveclick.ops.build` to retry): "
                f"{failed.read_text()}"
            )
        _library = _compile(folder)
        return _library
