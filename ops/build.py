"""Build and load the compiled MSDA kernels (``ops/csrc``): just in time on first use, or ahead of time.

Ahead of time (the Dockerfile runs this once at image build time)::

    python -m adaptiveclick.ops.build                 # CPU kernel, plus the CUDA kernel when nvcc is found
    python -m adaptiveclick.ops.build --cuda yes --cuda-arch "8.0;8.6;8.9;9.0+PTX"
    python -m adaptiveclick.ops.build --prune         # also delete builds left behind by older sources/torch versions
    python -m adaptiveclick.ops.build --openvino yes  # and fail unless the OpenVINO custom op builds too

Both ways write to one persistent cache, ``$ADAPTIVECLICK_CACHE/torch_extensions`` (default
``~/.cache/adaptiveclick/torch_extensions``; this user's private 0700 folder in the temporary directory if that is
not writable), in a folder named after a hash of the sources, the torch/CUDA/Python versions and the compiler flags.
A finished build leaves a ``BUILD_OK`` marker naming the library and its sha256; later processes load it directly
with ``torch.ops.load_library`` (no compiler needed) once its bytes match, and a changed source or torch version
simply builds into a new folder (:mod:`ops.build_cache`). A failed build leaves
``BUILD_FAILED`` with the error, so later processes fall back at once instead of recompiling;
``python -m adaptiveclick.ops.build`` retries it and prints the whole compiler log.

The OpenVINO custom op of MSDA (``ops/csrc/msda_openvino.cpp``, built by :mod:`ops.openvino_build` with the same
cache and markers) is built too where openvino is installed (``--openvino auto|yes|no``).

Two torch extensions, two operator namespaces:

* ``adaptiveclick_msda_cpu`` (C++ with OpenMP through ATen's thread pool; needs a C++ compiler, never nvcc);
* ``adaptiveclick_msda_cuda`` (needs nvcc; at run time it is only built when CUDA is usable, because
  :mod:`ops.dispatch` only asks for it for CUDA tensors). Its folder holds one sub-folder per set of GPU
  architectures, so an image built for several architectures is reused wherever one of them fits the device.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import os
import platform
import shutil
import sys
import threading
from pathlib import Path

import torch

from .build_cache import (
    CSRC,
    FAILED_MARKER,
    BuildError,
    cache_roots,
    read_marker,
    writable_cache_root,
    write_marker,
)
from .cpu_features import has_avx512

log = logging.getLogger(__name__)

KINDS = ("cpu", "cuda")
EXTENSION_NAMES = {"cpu": "adaptiveclick_msda_cpu", "cuda": "adaptiveclick_msda_cuda"}
SOURCES = {"cpu": ["msda_cpu.cpp"], "cuda": ["msda_cuda.cu"]}
OTHER_LIBRARY_SOURCES = ("msda_openvino.cpp",)  # built by ops.openvino_build
# Architectures for a build on a machine without a GPU (a Docker build): the data-centre and workstation GPUs
# CUDA 13 supports, with PTX of the newest for anything later.
DEFAULT_CUDA_ARCHS = "7.5;8.0;8.6;8.9;9.0;10.0;12.0+PTX"

_lock = threading.Lock()
_loaded: dict[str, Path] = {}


def _cpp_extension():
    """``torch.utils.cpp_extension``, imported without its CUDA_HOME warning (noise on machines without a GPU)."""
    cpp_logger = logging.getLogger("torch.utils.cpp_extension")
    level = cpp_logger.level
    cpp_logger.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
    finally:
        cpp_logger.setLevel(level)
    return cpp_extension


def cuda_home() -> Path | None:
    """The CUDA toolkit holding ``bin/nvcc`` and ``include/cuda_runtime.h``.

    torch guesses from ``which nvcc``, which is wrong when ``nvcc`` on PATH is a wrapper script (as
    ``/usr/local/bin/nvcc`` is on the dev machines), so check the usual places ourselves.
    """
    candidates = [
        os.environ.get("CUDA_HOME"),
        os.environ.get("CUDA_PATH"),
        _cpp_extension().CUDA_HOME,
        "/usr/local/cuda",
    ]
    for candidate in candidates:
        if (
            candidate
            and (Path(candidate) / "bin" / "nvcc").exists()
            and (Path(candidate) / "include" / "cuda_runtime.h").exists()
        ):
            return Path(candidate)
    return None


def compiler_flags(kind: str) -> tuple[list[str], list[str], list[str]]:
    """``(cflags, cuda_cflags, ldflags)`` for one extension, architectures excepted."""
    cflags = ["-O3", "-Wno-psabi"]
    ldflags: list[str] = []
    if kind == "cpu" and sys.platform.startswith("linux"):
        # at::parallel_for's OpenMP pragmas are compiled into our code; libgomp resolves to torch's own copy.
        cflags.append("-fopenmp")
        ldflags.append("-fopenmp")
    cuda_cflags = ["-O3"] if kind == "cuda" else []
    return cflags, cuda_cflags, ldflags


def source_files(kind: str) -> list[Path]:
    return [CSRC / name for name in SOURCES[kind]]


def build_key(kind: str) -> str:
    """Hash of everything that makes a build reusable: all of csrc/, versions, platform and flags."""
    digest = hashlib.sha256()
    for path in sorted(CSRC.iterdir()):
        # the OpenVINO op is not part of these libraries (ops.openvino_build keys its own build)
        if path.suffix in {".h", ".cpp", ".cu", ".cuh"} and path.name not in OTHER_LIBRARY_SOURCES:
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    digest.update(
        repr(
            (
                kind,
                torch.__version__,
                torch.version.cuda,
                sys.version_info[:2],
                platform.machine(),
                compiler_flags(kind),
            )
        ).encode()
    )
    return digest.hexdigest()[:16]


def build_name(kind: str) -> str:
    """Folder name of a build: the extension name and :func:`build_key`."""
    return f"{EXTENSION_NAMES[kind]}-{build_key(kind)}"


def parse_archs(arch_list: str) -> list[str]:
    archs = [a for a in arch_list.replace(" ", ";").split(";") if a]
    if not archs:
        raise BuildError(f"empty CUDA architecture list {arch_list!r}")
    return archs


def arch_flags(archs: list[str]) -> list[str]:
    flags = []
    for arch in archs:
        number = arch.split("+")[0].replace(".", "")
        if not number.isdigit():
            raise BuildError(f"bad CUDA architecture {arch!r} (expected e.g. 8.0 or 9.0+PTX)")
        flags.append(f"-gencode=arch=compute_{number},code=sm_{number}")
        if arch.endswith("+PTX"):
            flags.append(f"-gencode=arch=compute_{number},code=compute_{number}")
    return flags


def device_archs() -> list[str]:
    """Architectures of the visible GPUs (newest with PTX); the default list when none is visible."""
    if os.environ.get("TORCH_CUDA_ARCH_LIST"):
        return parse_archs(os.environ["TORCH_CUDA_ARCH_LIST"])
    if not torch.cuda.is_available():
        return parse_archs(DEFAULT_CUDA_ARCHS)
    caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
    return [f"{major}.{minor}" for major, minor in caps[:-1]] + [f"{caps[-1][0]}.{caps[-1][1]}+PTX"]


def archs_cover(archs: list[str], capability: tuple[int, int]) -> bool:
    """Whether a build for ``archs`` runs on a device of ``capability`` (exact SASS, or older PTX to JIT)."""
    for arch in archs:
        major, minor = (int(x) for x in arch.split("+")[0].split("."))
        if (major, minor) == capability or (arch.endswith("+PTX") and (major, minor) <= capability):
            return True
    return False


def is_loaded(kind: str) -> bool:
    """Whether the ``kind`` extension is already loaded into this process."""
    return kind in _loaded


@contextlib.contextmanager
def _build_environment(kind: str):
    """ninja on PATH (a venv's ninja is not, unless activated) and torch pointed at the right CUDA toolkit."""
    cpp_extension = _cpp_extension()
    saved_path, saved_home = os.environ.get("PATH", ""), cpp_extension.CUDA_HOME
    if shutil.which("ninja") is None:
        dirs = [str(Path(sys.executable).parent)]
        with contextlib.suppress(ImportError):
            import ninja

            dirs.insert(0, ninja.BIN_DIR)
        os.environ["PATH"] = os.pathsep.join(dirs + [saved_path])
    if kind == "cuda":
        home = cuda_home()
        if home is None:
            raise BuildError("no CUDA toolkit found (set CUDA_HOME to the folder holding bin/nvcc)")
        cpp_extension.CUDA_HOME = str(home)  # read by cpp_extension when it writes the ninja file
    try:
        yield
    finally:
        os.environ["PATH"] = saved_path
        cpp_extension.CUDA_HOME = saved_home


def _compile(kind: str, folder: Path, archs: list[str], verbose: bool) -> Path:
    cpp_extension = _cpp_extension()
    cflags, cuda_cflags, ldflags = compiler_flags(kind)
    folder.mkdir(parents=True, exist_ok=True)
    with _build_environment(kind):
        try:
            library = cpp_extension.load(
                name=EXTENSION_NAMES[kind],
                sources=[str(p) for p in source_files(kind)],
                extra_cflags=cflags,
                extra_cuda_cflags=cuda_cflags + arch_flags(archs),
                extra_ldflags=ldflags,
                extra_include_paths=[str(CSRC)],
                build_directory=str(folder),
                with_cuda=kind == "cuda",
                is_python_module=False,
                verbose=verbose,
            )
        except Exception as exc:  # compiler errors arrive as RuntimeError, a missing tool as OSError, ...
            error = (
                exc
                if isinstance(exc, BuildError)
                else BuildError(f"building {EXTENSION_NAMES[kind]} in {folder} failed: {exc}")
            )
            with contextlib.suppress(OSError):
                (folder / FAILED_MARKER).write_text(str(error))
            raise error from exc
    (folder / FAILED_MARKER).unlink(missing_ok=True)
    library = Path(library)
    write_marker(folder, library, archs)
    return library


def _find_build(name: str, tag: str, capability: tuple[int, int] | None) -> Path | None:
    """A finished build: the exact folder first, then (CUDA) another architecture set that runs on the device."""
    for root in cache_roots():
        found = read_marker(root / name / tag if tag else root / name)
        if found:
            return found[0]
    if tag and capability is not None:
        for root in cache_roots():
            for folder in sorted(root.glob(f"{name}/*")):
                found = read_marker(folder)
                if found and archs_cover(found[1], capability):
                    return found[0]
    return None


def load(
    kind: str, *, jit: bool = True, archs: list[str] | None = None, retry_failed: bool = False, verbose: bool = False
) -> Path:
    """Load the ``kind`` extension into this process (building it first if needed); returns the library path.

    Raises :class:`BuildError` with the reason when it can be neither loaded nor built. ``jit=False`` only loads
    a finished build. A build that failed before is not retried (its error is raised again) unless
    ``retry_failed``, as ``python -m adaptiveclick.ops.build`` does. For ``cuda``, ``archs`` defaults to the
    visible GPUs' architectures.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown extension kind {kind!r}; expected one of {KINDS}")
    with _lock:
        if kind in _loaded:
            return _loaded[kind]
        name = build_name(kind)
        wanted = (archs or device_archs()) if kind == "cuda" else []
        # CUDA builds get one sub-folder per architecture set.
        tag = "-".join(a.replace(".", "").replace("+PTX", "ptx") for a in wanted)
        capability = torch.cuda.get_device_capability() if kind == "cuda" and torch.cuda.is_available() else None
        library = _find_build(name, tag, capability)
        if library is None:
            if not jit:
                raise BuildError(
                    f"no finished build {name} in {[str(r) for r in cache_roots()]}; "
                    "run `python -m adaptiveclick.ops.build`"
                )
            folder = writable_cache_root() / name
            folder = folder / tag if tag else folder
            failed = folder / FAILED_MARKER
            if failed.is_file() and not retry_failed:
                raise BuildError(
                    f"an earlier build failed (delete {failed} or run `python -m adaptiveclick.ops.build` to retry): "
                    f"{failed.read_text()}"
                )
            log.info("building %s in %s (once; later runs reuse it)", EXTENSION_NAMES[kind], folder)
            library = _compile(kind, folder, wanted, verbose)
        else:
            try:
                torch.ops.load_library(str(library))
            except Exception as exc:
                raise BuildError(f"loading {library} failed: {exc}") from exc
        if kind == "cpu":
            _honour_isa_cap()
        _loaded[kind] = library
        return library


def _honour_isa_cap() -> None:
    """The CPU kernel picks its widest instruction set from the silicon; under ``ADAPTIVECLICK_MAX_CPU_ISA`` below
    AVX-512 it takes the AVX2 path instead, like the rest of the project (see :mod:`ops.cpu_features`)."""
    cpu_ops = torch.ops.adaptiveclick_msda_cpu
    if cpu_ops.instruction_set() == "avx512" and not has_avx512():
        cpu_ops.select_instruction_set("avx2")


def prune() -> list[Path]:
    """Delete builds of other sources or versions (a changed key leaves the old folder behind); returns them."""
    current = {build_name(kind) for kind in KINDS}
    try:
        from . import openvino_build

        current.add(openvino_build.build_name())
    except ImportError:  # no openvino here: its builds are kept (they may serve another environment)
        current |= {f.name for root in cache_roots() for f in root.glob("adaptiveclick_msda_openvino-*")}
    removed = []
    for root in cache_roots():
        for folder in sorted(root.glob("adaptiveclick_msda_*-*")):
            if folder.is_dir() and folder.name not in current:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
    return removed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adaptiveclick.ops.build", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", choices=("yes", "no"), default="yes", help="build the CPU kernel (default yes)")
    parser.add_argument(
        "--cuda",
        choices=("auto", "yes", "no"),
        default="auto",
        help="build the CUDA kernel: auto (when nvcc is found), yes (fail without it) or no",
    )
    parser.add_argument(
        "--cuda-arch",
        default=None,
        help=f"CUDA architectures, e.g. '8.0;9.0+PTX' (default: $TORCH_CUDA_ARCH_LIST, the visible "
        f"GPUs, or {DEFAULT_CUDA_ARCHS!r} without a GPU)",
    )
    parser.add_argument(
        "--openvino",
        choices=("auto", "yes", "no"),
        default="auto",
        help="build the OpenVINO custom op of MSDA: auto (when openvino is installed), yes (fail without it) or no",
    )
    parser.add_argument("--verbose", action="store_true", help="show the compiler commands")
    parser.add_argument("--prune", action="store_true", help="first delete builds of other sources/versions")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if args.prune:
        for folder in prune():
            print(f"removed {folder}")
    kinds = ["cpu"] if args.cpu == "yes" else []
    if args.cuda == "yes" or (args.cuda == "auto" and torch.version.cuda and cuda_home() is not None):
        kinds.append("cuda")
    elif args.cuda == "auto":
        print("cuda: skipped (no CUDA build of torch or no nvcc; set CUDA_HOME to build it)")
    status = 0
    for kind in kinds:
        archs = parse_archs(args.cuda_arch) if kind == "cuda" and args.cuda_arch else None
        try:
            library = load(kind, archs=archs, retry_failed=True, verbose=args.verbose)
        except BuildError as exc:
            print(f"{kind}: FAILED: {exc}", file=sys.stderr)
            status = 1
            continue
        extra = ""
        if kind == "cpu":
            extra = f" (instruction sets: {', '.join(torch.ops.adaptiveclick_msda_cpu.instruction_sets())})"
        print(f"{kind}: {library}{extra}")
    if args.openvino != "no":
        status = max(status, _build_openvino(required=args.openvino == "yes"))
    return status


def _build_openvino(required: bool) -> int:
    try:
        from . import openvino_build

        library = openvino_build.library(retry_failed=True)
    except ImportError:
        print("openvino: skipped (not installed; pip install '.[openvino]')", file=sys.stderr if required else None)
        return 1 if required else 0
    except BuildError as exc:
        print(f"openvino: FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"openvino: {library}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
