"""The floors of ARCHITECTURE.md: no part imports a higher floor (at module level or inside a function), the
bottom floors import no torch, no import circle joins two files, everything is imported through the one
``adaptiveclick`` package, and the command line builds its parser without importing what it does not run."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROOT_PACKAGE = "adaptiveclick"

# lowest first; a part may import its own floor and those below it. backend, finetune and annotate share a
# level and never import each other; deploy/ (thin entry points), benchmarks/ and the command line stand above.
FLOORS: list[tuple[str, ...]] = [
    ("storage",),
    ("labelstudio",),
    ("ops",),
    ("model",),
    ("evaluation",),
    ("finetune", "backend", "annotate"),
    ("benchmarks", "deploy", "cli"),
]
LEVEL = {part: level for level, floor in enumerate(FLOORS) for part in floor}
NO_TORCH = ("storage", "labelstudio")
# the top-level folders that install as adaptiveclick.<part> (deploy/ is not installed; cli is adaptiveclick/cli.py)
PARTS = sorted(set(LEVEL) - {"deploy", "cli"})


def part_files(part: str) -> list[Path]:
    if part == "cli":
        return [REPO / ROOT_PACKAGE / "cli.py"]
    return sorted((REPO / part).rglob("*.py"))


def module_name(path: Path) -> str:
    """The dotted name a file is imported as (``backend/app.py`` -> ``adaptiveclick.backend.app``)."""
    relative = path.relative_to(REPO).with_suffix("")
    parts = list(relative.parts)
    if parts[0] != ROOT_PACKAGE:
        parts.insert(0, ROOT_PACKAGE)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> set[tuple[str, int]]:
    """``(dotted module, line)`` of every import in a file, wherever it stands (functions, TYPE_CHECKING), relative
    ones resolved; ``from package import name`` counts ``package.name`` when that is a module of ours."""
    own = module_name(path)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {(alias.name, node.lineno) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add((module, node.lineno))
            for alias in node.names:
                if source_of(f"{module}.{alias.name}") is not None:
                    found.add((f"{module}.{alias.name}", node.lineno))
    return found


def source_of(module: str) -> Path | None:
    """The file of one of our modules, or None for anything else."""
    parts = module.split(".")
    if parts[0] != ROOT_PACKAGE or len(parts) < 2:
        return None
    base = REPO.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def part_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != ROOT_PACKAGE or len(parts) < 2:
        return None
    return parts[1] if parts[1] in LEVEL else None


def violations(part: str) -> list[str]:
    own = LEVEL[part]
    problems = []
    for path in part_files(part):
        for module, line in imported_modules(path):
            imported = part_of(module)
            if imported is None or imported == part:
                continue
            if LEVEL[imported] > own or (LEVEL[imported] == own and part != "cli"):
                problems.append(
                    f"{path.relative_to(REPO)}:{line} imports {imported} (floor {LEVEL[imported]}, "
                    f"{part} is on floor {own})"
                )
    return problems


@pytest.mark.parametrize("part", sorted(LEVEL))
def test_no_part_imports_a_higher_floor(part):
    assert violations(part) == []


def test_the_check_sees_a_violation(tmp_path, monkeypatch):
    """A lower floor importing a higher one, even lazily inside a function or relatively, is caught."""
    fake = tmp_path / "storage"
    fake.mkdir()
    (fake / "bad.py").write_text(
        "def f():\n"
        "    from adaptiveclick.backend.app import create_app\n"
        "    from ..model import x\n"
        "    return create_app, x\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert sorted(violations("storage")) == [
        "storage/bad.py:2 imports backend (floor 5, storage is on floor 0)",
        "storage/bad.py:3 imports model (floor 3, storage is on floor 0)",
    ]


def every_python_file() -> list[Path]:
    files = [p for part in PARTS for p in part_files(part)] + part_files("cli")
    return files + sorted((REPO / "deploy").rglob("*.py")) + sorted((REPO / "tests").rglob("*.py"))


def test_everything_is_imported_through_the_one_package():
    """``import model`` would be another copy of our code (or someone else's ``model``): every import of a part
    goes through ``adaptiveclick``, in the code, the deploy entry points and the tests."""
    bare = [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for path in every_python_file()
        for module, line in imported_modules(path)
        if module.split(".")[0] in (*PARTS, "cli")
    ]
    assert bare == []


def test_the_package_links_every_part_and_nothing_else():
    """adaptiveclick/<part> is a link to the top-level folder, so a checkout imports what a wheel installs."""
    folders = {
        p.name for p in REPO.iterdir() if (p / "__init__.py").is_file() and p.name not in ("tests", ROOT_PACKAGE)
    }
    assert folders == set(PARTS)
    linked = {p.name: os.readlink(p) for p in (REPO / ROOT_PACKAGE).iterdir() if p.is_symlink()}
    assert linked == {part: f"../{part}" for part in PARTS}


def import_graph() -> dict[str, set[str]]:
    """Our module -> our modules it imports (a package's own ``__init__`` is not counted as imported by its
    submodules: Python runs it first, but that is not an edge of the design)."""
    graph: dict[str, set[str]] = {}
    for path in [p for part in PARTS for p in part_files(part)] + part_files("cli"):
        name = module_name(path)
        graph[name] = {
            module
            for module, _ in imported_modules(path)
            if source_of(module) is not None and module != name and not name.startswith(module + ".")
        }
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_no_import_circle_joins_two_files():
    assert cycles(import_graph()) == []


def test_the_circle_check_sees_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]


@pytest.mark.parametrize("part", NO_TORCH)
def test_bottom_floors_import_no_torch(part):
    assert not {
        (module, line)
        for path in part_files(part)
        for module, line in imported_modules(path)
        if module.split(".")[0] == "torch" or part_of(module) in ("model", "ops")
    }
    modules = [module_name(p) for p in (REPO / part).glob("*.py") if p.stem != "__init__"]
    code = (
        f"import sys; import {', '.join(modules)}; "
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:3]"
    )
    # in pytest's folder: the checkout under `make test`, outside it under `make test-wheel` (the installed wheel)
    subprocess.run([sys.executable, "-c", code], check=True)


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
        "try:\n    runpy.run_module('adaptiveclick', run_name='__main__')\n"
        "except SystemExit as exit:\n    assert exit.code in (0, None), exit.code\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'matplotlib', 'flask', 'scipy'})\n"
        "assert not heavy, heavy"
    )
    result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage: adaptiveclick" in result.stdout
