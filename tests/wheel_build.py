"""The project's wheel, built from a clean copy of the checkout: used by ``tests/unit/test_wheel.py`` (the wheel's
contents) and by the wheel tier (``make test-wheel``, ``.ci/test-wheel``), which installs it into a new venv.

The copy holds the files git knows (tracked, and untracked ones that are not ignored) as they are in the working
tree, links kept as links; so no ``build/`` or ``*.egg-info`` left by an earlier build can slip into the wheel.

As a script: ``python tests/wheel_build.py OUT_DIR`` builds the wheel into ``OUT_DIR`` with pip (an isolated build
environment, as ``pip install .`` makes) and prints its path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def checkout_files() -> list[str]:
    """The checkout's files as git lists them (tracked, and untracked but not ignored), those deleted excepted."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    names = sorted({name for name in listed.split("\0") if name})
    return [name for name in names if (REPO / name).is_symlink() or (REPO / name).is_file()]


def export_checkout(dest: Path) -> Path:
    """Copy :func:`checkout_files` into ``dest`` (links as links); returns ``dest``."""
    for name in checkout_files():
        source, target = REPO / name, dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            os.symlink(os.readlink(source), target)
        else:
            shutil.copy2(source, target)
    return dest


def build_wheel_in_process_env(source: Path, out_dir: Path) -> tuple[Path, str]:
    """Build with the backend pyproject.toml declares, from this interpreter's packages (no isolated environment,
    no download: seconds). Returns the wheel and everything the backend printed (its warnings included)."""
    code = "import sys, setuptools.build_meta as backend; print(backend.build_wheel(sys.argv[1]))"
    result = subprocess.run(
        [sys.executable, "-W", "default", "-c", code, str(out_dir)],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = result.stdout + result.stderr
    if result.returncode != 0:
        raise RuntimeError(f"the wheel build failed ({result.returncode}):\n{log[-4000:]}")
    return out_dir / result.stdout.strip().splitlines()[-1], log


def build_wheel_with_pip(source: Path, out_dir: Path) -> Path:
    """``pip wheel --no-deps``: pip makes an isolated build environment with the declared requirements."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out_dir), str(source)],
        check=True,
        timeout=600,
    )
    (wheel,) = out_dir.glob("*.whl")
    return wheel


def main(argv: list[str]) -> int:
    out_dir = Path(argv[0]).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    source = out_dir / "source"
    if source.exists():
        shutil.rmtree(source)
    wheel = build_wheel_with_pip(export_checkout(source), out_dir)
    shutil.rmtree(source)
    print(wheel)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
