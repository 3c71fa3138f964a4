"""storage.lines: model lines per project, pins, and which version serves a project (locally and on S3)."""

from __future__ import annotations

import json

import pytest

from adaptiveclick.storage.lines import LineState, Pin, RegistryState, VersionRef, find_version, pin, read_state
from adaptiveclick.storage.registry import BASE_LINE, RegistryError, open_registry, project_line


@pytest.fixture(params=["local", "s3"])
def registry(request, tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTIVECLICK_CACHE", str(tmp_path / "cache"))
    if request.param == "local":
        return open_registry(tmp_path / "registry")
    return open_registry(f"s3://{request.getfixturevalue('s3_bucket')}/models")


@pytest.fixture()
def weights(tmp_path):
    def make(content: bytes):
        path = tmp_path / f"w-{len(content)}-{abs(hash(content))}.pth"
        path.write_bytes(content)
        return path

    return make


def test_project_lines_live_beside_the_base_line(registry, weights):
    base = registry.publish(weights(b"base one"), "b1")
    line = registry.line(project_line(7))
    own = line.publish(weights(b"project seven"), "p1", parent="b1", parent_line=BASE_LINE)
    assert base.line == BASE_LINE and own.line == "project-7" and own.parent_line == BASE_LINE
    assert [v.version for v in registry.list_versions()] == ["b1"]  # the base line lists only its own
    assert [v.version for v in line.list_versions()] == ["p1"] and line.current() == own
    assert registry.project_lines() == [7]
    assert line.fetch_weights("p1").read_bytes() == b"project seven"
    with pytest.raises(RegistryError):
        line.read_version("b1")  # versions belong to one line
    with pytest.raises(ValueError):
        registry.line("../escape")


def test_a_registry_from_before_lines_is_the_base_line(tmp_path, weights):
    root = tmp_path / "old"
    old = open_registry(root)
    old.publish(weights(b"legacy"), "v1")
    (root / "notes").mkdir()  # unrelated folders are not lines
    state = read_state(open_registry(root))
    assert state == RegistryState(LineState("v1", None), {})
    assert state.served_for(3) == (VersionRef(BASE_LINE, "v1"), "the base line")


def test_served_for_takes_pin_then_own_line_then_base(registry, weights):
    assert read_state(registry).served_for(1) == (None, "no registry version: the configured predictor")
    registry.publish(weights(b"b1"), "b1")
    registry.publish(weights(b"b2x"), "b2")
    registry.line(project_line(1)).publish(weights(b"p1"), "p1")
    state = read_state(registry)
    assert state.served_for(1)[0] == VersionRef("project-1", "p1")
    assert state.served_for(2)[0] == VersionRef(BASE_LINE, "b2")  # no line of its own
    assert state.served_for(None)[0] == VersionRef(BASE_LINE, "b2")

    assert pin(registry, None, "b1", "api") == VersionRef(BASE_LINE, "b1")
    state = read_state(registry)
    assert state.served_for(2) == (VersionRef(BASE_LINE, "b1"), "base line pinned (api)")
    assert state.served_for(1)[0] == VersionRef("project-1", "p1")  # its own line wins over the base pin

    assert pin(registry, 1, "base/b2", "extra_params") == VersionRef(BASE_LINE, "b2")
    state = read_state(registry)
    assert state.served_for(1) == (VersionRef(BASE_LINE, "b2"), "pinned (extra_params)")
    assert state.projects[1].pin.source == "extra_params" and state.projects[1].current == "p1"

    assert pin(registry, 1, None, "api") is None and pin(registry, None, None, "api") is None
    state = read_state(registry)
    assert state.served_for(1)[0] == VersionRef("project-1", "p1") and state.served_for(2)[0].version == "b2"


def test_find_version_prefers_the_projects_line(registry, weights):
    registry.publish(weights(b"shared"), "same")
    registry.line(project_line(4)).publish(weights(b"own"), "same")
    assert find_version(registry, "same", 4) == VersionRef("project-4", "same")
    assert find_version(registry, "base/same", 4) == VersionRef(BASE_LINE, "same")
    assert find_version(registry, "same", 5) == VersionRef(BASE_LINE, "same")
    assert find_version(registry, "same") == VersionRef(BASE_LINE, "same")
    with pytest.raises(RegistryError, match="no version 'nope' in the project-4 or base line"):
        find_version(registry, "nope", 4)
    with pytest.raises(ValueError):
        find_version(registry, "bad name!", 4)
    with pytest.raises(RegistryError):
        pin(registry, 4, "nope", "api")
    assert read_state(registry).projects[4].pin is None  # a failed pin writes nothing


def test_a_pin_records_where_and_when(registry, weights):
    registry.publish(weights(b"x"), "v1")
    pin(registry, 9, "v1", "api")
    record = registry.line(project_line(9)).pin_record()
    assert record["version"] == "v1" and record["line"] == BASE_LINE and record["source"] == "api"
    assert record["pinned_at"].endswith("Z") or "+00:00" in record["pinned_at"]
    assert read_state(registry).projects[9] == LineState(
        None, Pin(VersionRef(BASE_LINE, "v1"), "api", record["pinned_at"])
    )


def test_a_broken_pin_or_pointer_is_reported(tmp_path, weights):
    registry = open_registry(tmp_path / "r")
    registry.publish(weights(b"x"), "v1")
    (tmp_path / "r" / "project-2").mkdir()
    (tmp_path / "r" / "project-2" / "pin.json").write_text(json.dumps({"version": "v1"}))  # no line
    with pytest.raises(RegistryError, match="pin"):
        read_state(registry)
    (tmp_path / "r" / "project-2" / "pin.json").write_text("{")
    with pytest.raises(RegistryError):
        read_state(registry)
    (tmp_path / "r" / "project-2" / "pin.json").write_text(json.dumps({"version": "v1", "line": "../../etc"}))
    with pytest.raises(RegistryError, match="not a pin record"):
        read_state(registry)


def test_names_are_matched_whole():
    """``re.match`` with ``$`` takes a trailing newline: names are full matches."""
    import pytest

    from adaptiveclick.storage.registry import PROJECT_LINE, check_version_name

    assert check_version_name("ft-1.a_b") == "ft-1.a_b"
    for bad in ("v1\n", "v1\n\n", "\nv1", "v" * 129, "v/1", "-v1"):
        with pytest.raises(ValueError, match="invalid version name"):
            check_version_name(bad)
    assert PROJECT_LINE.fullmatch("project-12") and not PROJECT_LINE.fullmatch("project-12\n")
