"""``ops.build``: cache location and keys, CUDA toolkit and architecture handling, loading a finished build in a
fresh process, and the ahead-of-time command building the CUDA kernel with nvcc (compile and link, no GPU needed)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from adaptiveclick.ops import build, build_cache
from adaptiveclick.storage.paths import CACHE_ENV

REPO = Path(__file__).resolve().parents[2]


def test_cache_roots_follow_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "c"))
    assert build.cache_roots()[0] == tmp_path / "c" / "torch_extensions"
    assert build.writable_cache_root() == tmp_path / "c" / "torch_extensions"
    monkeypatch.delenv(CACHE_ENV)
    assert build.cache_roots()[0] == Path.home() / ".cache" / "adaptiveclick" / "torch_extensions"


def test_unusable_cache_falls_back_to_a_temporary_folder(monkeypatch, tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("")  # the cache folder cannot be created below a file (whoever runs the tests)
    monkeypatch.setenv(CACHE_ENV, str(blocked / "cache"))
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    assert build.writable_cache_root() == build.cache_roots()[1]
    assert build.cache_roots()[1].parent == tmp_path / "tmp" and build.cache_roots()[1].is_dir()


def test_a_temporary_folder_that_is_not_this_users_own_is_never_used(monkeypatch, tmp_path):
    """/tmp is shared: a folder planted at the predictable name (or made readable by others) is skipped."""
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setenv(CACHE_ENV, str(blocked / "cache"))
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
    planted = build_cache.temp_root()
    planted.mkdir(parents=True, mode=0o777)
    os.chmod(planted, 0o777)
    assert planted not in build.cache_roots()
    assert build.writable_cache_root() != planted  # the installed root, or none (then BuildError) - never it
    os.chmod(planted, 0o700)
    assert planted in build.cache_roots() and build.writable_cache_root() == planted
    planted.rmdir()
    planted.symlink_to(tmp_path, target_is_directory=True)  # a link to somewhere else
    assert planted not in build.cache_roots()


def test_markers_name_a_plain_file_whose_sha256_was_recorded(tmp_path):
    folder = tmp_path / "adaptiveclick_msda_cpu-0123456789abcdef"
    folder.mkdir()
    library = folder / "lib.so"
    library.write_bytes(b"\x7fELF built")
    build_cache.write_marker(folder, library, ["8.0"])
    assert build_cache.read_marker(folder) == (library, ["8.0"])
    library.write_bytes(b"\x7fELF swapped afterwards")  # changed since it was built: not loaded
    assert build_cache.read_marker(folder) is None
    outside = tmp_path / "evil.so"
    outside.write_bytes(b"x")
    digest = build_cache.sha256_of(outside)
    for name in ("../evil.so", str(outside), "sub/lib.so", ".."):
        (folder / build_cache.MARKER).write_text(f"{name}\n\nsha256={digest}\n")
        assert build_cache.read_marker(folder) is None, name
    (folder / build_cache.MARKER).write_text("lib.so\n\n")  # an old marker without a sha256
    assert build_cache.read_marker(folder) is None
    with pytest.raises(build_cache.BuildError):
        build_cache.write_marker(folder, outside, [])


def test_build_key_tracks_the_sources(monkeypatch, tmp_path):
    copy = tmp_path / "csrc"
    shutil.copytree(build.CSRC, copy)
    monkeypatch.setattr(build, "CSRC", copy)
    key = build.build_key("cpu")
    assert key == build.build_key("cpu") and key != build.build_key("cuda")
    (copy / "msda_checks.h").write_text((copy / "msda_checks.h").read_text() + "\n// changed\n")
    assert build.build_key("cpu") != key  # a header change rebuilds too
    assert build.build_name("cpu").startswith("adaptiveclick_msda_cpu-")


@pytest.mark.parametrize(
    "archs, flags",
    [
        ("8.0", ["-gencode=arch=compute_80,code=sm_80"]),
        (
            "8.6;9.0+PTX",
            [
                "-gencode=arch=compute_86,code=sm_86",
                "-gencode=arch=compute_90,code=sm_90",
                "-gencode=arch=compute_90,code=compute_90",
            ],
        ),
        ("7.5 12.0", ["-gencode=arch=compute_75,code=sm_75", "-gencode=arch=compute_120,code=sm_120"]),
    ],
)
def test_arch_flags(archs, flags):
    assert build.arch_flags(build.parse_archs(archs)) == flags


@pytest.mark.parametrize("bad", ["", "ampere", "8.x"])
def test_bad_arch_lists_are_clear_errors(bad):
    with pytest.raises(build.BuildError, match="architecture"):
        build.arch_flags(build.parse_archs(bad))


def test_archs_cover():
    assert build.archs_cover(["8.0", "9.0"], (9, 0))
    assert not build.archs_cover(["8.0", "8.6"], (8, 9))  # SASS does not run on another minor version
    assert build.archs_cover(["8.0", "8.6+PTX"], (9, 0))  # PTX is compiled for newer devices at load time
    assert not build.archs_cover(["9.0+PTX"], (8, 0))


def test_device_archs_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    assert build.device_archs() == build.parse_archs(build.DEFAULT_CUDA_ARCHS)
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.9")
    assert build.device_archs() == ["8.9"]


def test_cuda_home_skips_wrapper_scripts(monkeypatch, tmp_path):
    """A directory with bin/nvcc but no CUDA headers (a wrapper on PATH) is not a toolkit."""
    wrapper, toolkit = tmp_path / "wrapper", tmp_path / "toolkit"
    (wrapper / "bin").mkdir(parents=True)
    (wrapper / "bin" / "nvcc").write_text("#!/bin/sh\n")
    for sub in ("bin/nvcc", "include/cuda_runtime.h"):
        (toolkit / sub).parent.mkdir(parents=True, exist_ok=True)
        (toolkit / sub).write_text("")
    monkeypatch.setenv("CUDA_HOME", str(wrapper))
    monkeypatch.setenv("CUDA_PATH", str(toolkit))
    assert build.cuda_home() == toolkit


def test_prune_keeps_only_current_builds(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    root = build.writable_cache_root()
    keep = [root / build.build_name("cpu"), root / build.build_name("cuda") / "80", root / "unrelated"]
    stale = [root / "adaptiveclick_msda_cpu-0123456789abcdef", root / "adaptiveclick_msda_cuda-0123456789abcdef"]
    for folder in keep + stale:
        folder.mkdir(parents=True)
    assert sorted(build.prune()) == sorted(stale)
    assert all(folder.is_dir() for folder in keep) and not any(folder.exists() for folder in stale)


def test_unknown_kind():
    with pytest.raises(ValueError, match="unknown extension kind 'rocm'"):
        build.load("rocm")


def path_without(tool: str, shim: Path) -> str:
    """PATH with ``tool`` removed: folders holding it are replaced by ``shim``, holding links to everything else
    in them (the situation of a venv that was not activated, where pip's ninja is not on PATH)."""
    shim.mkdir(exist_ok=True)
    folders = []
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if not folder or not (Path(folder) / tool).exists():
            folders.append(folder)
            continue
        for entry in Path(folder).iterdir():
            if entry.name != tool and not (shim / entry.name).exists():
                (shim / entry.name).symlink_to(entry)
        folders.append(str(shim))
    return os.pathsep.join(dict.fromkeys(folders))


def run_python(args: list[str], env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_a_fresh_process_loads_the_finished_build_without_compiling(tmp_path):
    """After one build, new processes only load the library: no compiler involved (CXX is broken here)."""
    build.load("cpu")  # the suite's shared build, in the default cache
    env = {**os.environ, "CXX": "/bin/false", "PATH": "/nonexistent"}
    proc = run_python(
        [
            "-c",
            "from adaptiveclick.ops import build; import torch; print(build.load('cpu', jit=False)); "
            "print(torch.ops.adaptiveclick_msda_cpu.instruction_sets())",
        ],
        env,
    )
    assert proc.returncode == 0, proc.stderr
    assert build.build_name("cpu") in proc.stdout and "baseline" in proc.stdout


@pytest.mark.parametrize("cap, expected", [("avx2", "avx2"), ("all", None)])
def test_the_cpu_kernel_honours_the_isa_cap(cap, expected):
    """Under ADAPTIVECLICK_MAX_CPU_ISA=avx2 the kernel takes its AVX2 path even on AVX-512 silicon; uncapped it takes
    the widest this CPU has (the first of its list)."""
    build.load("cpu")
    env = {**os.environ, "ADAPTIVECLICK_MAX_CPU_ISA": cap}
    code = (
        "from adaptiveclick.ops import build; import torch; build.load('cpu', jit=False); "
        "cpu = torch.ops.adaptiveclick_msda_cpu; print(cpu.instruction_set(), cpu.instruction_sets()[0])"
    )
    proc = run_python(["-c", code], env)
    assert proc.returncode == 0, proc.stderr
    chosen, widest = proc.stdout.split()
    if expected is None or widest == "baseline":  # a CPU without AVX2 has only the baseline path
        assert chosen == widest
    else:
        assert chosen == expected


def test_no_finished_build_without_jit(tmp_path):
    env = {**os.environ, CACHE_ENV: str(tmp_path / "empty"), "TMPDIR": str(tmp_path)}
    proc = run_python(["-c", "from adaptiveclick.ops import build; build.load('cpu', jit=False)"], env)
    assert proc.returncode != 0
    assert (
        "no finished build adaptiveclick_msda_cpu-" in proc.stderr
        and "python -m adaptiveclick.ops.build" in proc.stderr
    )


@pytest.mark.skipif(torch.version.cuda is None, reason="torch is not a CUDA build")
def test_ahead_of_time_command_builds_the_cuda_kernel(tmp_path):
    """`python -m adaptiveclick.ops.build` compiles msda_cuda.cu with nvcc and links it; no GPU needed (one
    architecture here to keep CI short; the Docker build uses the default list). ninja is kept off PATH, as in a
    venv that was never activated: the build must find pip's ninja by itself."""
    if build.cuda_home() is None:
        pytest.skip("no CUDA toolkit (nvcc) on this machine")
    path = path_without("ninja", tmp_path / "bin")
    assert shutil.which("ninja", path=path) is None
    env = {**os.environ, CACHE_ENV: str(tmp_path / "cache"), "PATH": path}
    proc = run_python(["-m", "adaptiveclick.ops.build", "--cpu", "no", "--cuda", "yes", "--cuda-arch", "8.0"], env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    library = Path(proc.stdout.split("cuda: ", 1)[1].split()[0])
    assert library.is_file() and library.parent.name == "80"
    assert (library.parent / build_cache.MARKER).read_text().split("\n")[1] == "8.0"


def test_ahead_of_time_command_reports_failures(tmp_path):
    env = {**os.environ, CACHE_ENV: str(tmp_path / "cache"), "CXX": "/bin/false", "TMPDIR": str(tmp_path)}
    proc = run_python(["-m", "adaptiveclick.ops.build", "--cuda", "no"], env, timeout=120)
    assert proc.returncode == 1
    assert "cpu: FAILED: building adaptiveclick_msda_cpu" in proc.stderr
