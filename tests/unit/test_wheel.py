"""The wheel as ``pip install`` gets it: one top-level package, every module and data file of the checkout's parts,
no link, and a build without deprecation warnings (the licence as an SPDX string, ``license-files``).

The wheel is built once per session from a clean copy of the checkout (``tests/wheel_build.py``) with the build
backend of this environment, in a few seconds; ``make test-wheel`` installs such a wheel and runs the tests on it.
"""

from __future__ import annotations

import stat
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from wheel_build import REPO, build_wheel_in_process_env, checkout_files, export_checkout

ROOT_PACKAGE = "adaptiveclick"
# what setuptools says when a project's licence metadata is of the kind that stops working (a TOML table, licence
# classifiers) or a build setting is deprecated
DEPRECATION_MARKERS = ("SetuptoolsDeprecationWarning", "DeprecationWarning", "License classifiers", "license table")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, str]:
    work = tmp_path_factory.mktemp("wheel")
    return build_wheel_in_process_env(export_checkout(work / "source"), work)


@pytest.fixture(scope="module")
def names(built) -> list[str]:
    with zipfile.ZipFile(built[0]) as wheel:
        return wheel.namelist()


def installed_parts() -> list[str]:
    """The top-level folders linked into adaptiveclick/ (each installs as adaptiveclick.<part>)."""
    return sorted(p.name for p in (REPO / ROOT_PACKAGE).iterdir() if p.is_symlink())


def test_the_top_level_holds_only_the_package_and_its_metadata(built, names):
    wheel, _ = built
    name, version = wheel.name.split("-")[:2]
    assert {n.split("/")[0] for n in names} == {ROOT_PACKAGE, f"{name}-{version}.dist-info"}
    top_level = [n for n in names if n.endswith(".dist-info/top_level.txt")]
    if top_level:  # setuptools writes it; it lists what `import` finds at the top
        with zipfile.ZipFile(wheel) as archive:
            assert archive.read(top_level[0]).decode().split() == [ROOT_PACKAGE]


def test_every_module_and_data_file_of_the_parts_is_inside(names):
    """Each part's .py files, the MSDA kernel sources (built from the installed package) and the recommended
    label config: a file missing here would only show where the wheel is installed."""
    parts = installed_parts()
    assert {"ops", "labelstudio", "model", "backend"} <= set(parts)
    expected = {
        f"{ROOT_PACKAGE}/{name}"
        for name in checkout_files()
        if name.split("/")[0] in parts and name.endswith(".py") and "/tests/" not in name
    }
    expected |= {f"{ROOT_PACKAGE}/{n}" for n in ("__init__.py", "__main__.py", "cli.py")}
    csrc = sorted(p.name for p in (REPO / "ops" / "csrc").iterdir())
    assert {"msda_cpu.cpp", "msda_cuda.cu", "msda_openvino.cpp"} <= set(csrc)
    expected |= {f"{ROOT_PACKAGE}/ops/csrc/{name}" for name in csrc}
    expected.add(f"{ROOT_PACKAGE}/labelstudio/label_config.xml")
    assert sorted(expected - set(names)) == []


def test_nothing_else_slips_in(names):
    """No byte code, no tests, no checkout-only folders (deploy/, docs/, tests/), no build leftovers."""
    strays = [
        n
        for n in names
        if "__pycache__" in n
        or n.endswith((".pyc", ".so"))
        or n.split("/")[1:2] in (["deploy"], ["docs"], ["tests"], ["build"], ["adaptiveclick"])
    ]
    assert strays == []


def test_no_link_made_it_in(built):
    """adaptiveclick/<part> are links in the checkout; in the wheel every entry is a file or a folder."""
    with zipfile.ZipFile(built[0]) as wheel:
        links = [i.filename for i in wheel.infolist() if stat.S_ISLNK(i.external_attr >> 16)]
        assert links == []
        for part in installed_parts():
            assert f"{ROOT_PACKAGE}/{part}/__init__.py" in wheel.namelist()


def test_metadata_says_the_licence_and_the_ranges(built, names):
    """An SPDX licence expression with its file (metadata 2.4), the supported Pythons and the torch range."""
    (metadata_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    with zipfile.ZipFile(built[0]) as wheel:
        metadata = Parser().parsestr(wheel.read(metadata_name).decode())
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in wheel.namelist())
    assert metadata["License-Expression"] == "MIT"
    assert metadata["License-File"] == "LICENSE"
    assert [c for c in metadata.get_all("Classifier", []) if c.startswith("License ::")] == []
    python = SpecifierSet(metadata["Requires-Python"])
    assert all(v in python for v in ("3.10", "3.11", "3.12", "3.13")) and "3.9" not in python
    (torch,) = [r for r in metadata.get_all("Requires-Dist") if r.split()[0].startswith("torch")]
    torch_range = SpecifierSet(torch.removeprefix("torch").split(";")[0].strip())
    assert all(v in torch_range for v in ("2.13.0", "2.14.1")) and "2.12.1" not in torch_range


def test_the_build_warns_of_nothing_deprecated(built):
    _, log = built
    assert [line for line in log.splitlines() if any(m in line for m in DEPRECATION_MARKERS)] == []
