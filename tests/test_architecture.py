"""The floors of ARCHITECTURE.md: no package imports a higher floor (at module level or inside a function), the
bottom floors import no torch, and the command line builds its parser without importing what it does not run."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# lowest first; a package may import its own floor and those below it. backend, finetune and annotate share a
# level and never import each other; deploy/ (thin entry points) and benchmarks/ stand above everything.
FLOORS: list[tuple[str, ...]] = [
    ("storage",),
    ("labelstudio",),
    ("ops",),
    ("model",),
    ("evaluation",),
    ("finetune", "backend", "annotate"),
    ("benchmarks", "deploy", "cli"),
]
LEVEL = {package: level for level, floor in enumerate(FLOORS) for package in floor}
NO_TORCH = ("storage", "labelstudio")


def package_files(package: str) -> list[Path]:
    if (REPO / f"{package}.py").is_file():
        return [REPO / f"{package}.py"]
    return sorted((REPO / package).rglob("*.py"))


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """``(top-level package, line)`` of every absolute import in a file, wherever it stands."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {(alias.name.split(".")[0], node.lineno) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.module.split(".")[0], node.lineno))
    return found


def violations(package: str) -> list[str]:
    own = LEVEL[package]
    problems = []
    for path in package_files(package):
        for imported, line in imported_packages(path):
            if imported not in LEVEL or imported == package:
                continue
            if LEVEL[imported] > own or (LEVEL[imported] == own and package != "cli"):
                problems.append(
                    f"{path.relative_to(REPO)}:{line} imports {imported} (floor {LEVEL[imported]}, "
                    f"{package} is on floor {own})"
                )
    return problems


@pytest.mark.parametrize("package", sorted(LEVEL))
def test_no_package_imports_a_higher_floor(package):
    assert violations(package) == []


def test_the_check_sees_a_violation(tmp_path, monkeypatch):
    """A lower floor importing a higher one, even lazily inside a function, is caught."""
    fake = tmp_path / "storage"
    fake.mkdir()
    (fake / "bad.py").write_text("def f():\n    from backend.app import create_app\n    return create_app\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert violations("storage") == ["storage/bad.py:2 imports backend (floor 5, storage is on floor 0)"]


def test_every_package_is_on_a_floor():
    packages = {p.name for p in REPO.iterdir() if (p / "__init__.py").is_file() and p.name != "tests"}
    assert packages <= set(LEVEL), packages - set(LEVEL)


@pytest.mark.parametrize("package", NO_TORCH)
def test_bottom_floors_import_no_torch(package):
    assert not {
        (name, line)
        for path in package_files(package)
        for name, line in imported_packages(path)
        if name in ("torch", "model", "ops")
    }
    modules = [f"{package}.{p.stem}" for p in (REPO / package).glob("*.py") if p.stem != "__init__"]
    code = (
        f"import sys; import {', '.join(modules)}; "
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:3]"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["serve", "--help"],
        ["evaluate", "--help"],
        ["finetune", "--help"],
        ["annotate", "--help"],
        ["benchmark", "--help"],
    ],
)
def test_help_imports_no_torch(argv):
    """``adaptiveclick --help`` and ``adaptiveclick CMD --help`` build their parser without torch (the figures
    of how fast that is come from the closing note's measurement, not from a timed test)."""
    code = (
        "import runpy, sys; sys.argv = ['adaptiveclick', *sys.argv[1:]]\n"
        "try:\n    runpy.run_module('cli', run_name='__main__')\n"
        "except SystemExit as exit:\n    assert exit.code in (0, None), exit.code\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'matplotlib', 'flask', 'scipy'})\n"
        "assert not heavy, heavy"
    )
    result = subprocess.run([sys.executable, "-c", code, *argv], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage: adaptiveclick" in result.stdout
