"""storage.registry: immutable versions and an atomically replaced pointer, locally and on S3 (moto server)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

from adaptiveclick.model.spec import parse_spec, pinned_spec
from adaptiveclick.storage.files import sha256_of
from adaptiveclick.storage.registry import (
    IntegrityError,
    LocalRegistry,
    RegistryError,
    S3Registry,
    VersionExistsError,
    open_registry,
)


@pytest.fixture()
def weights(tmp_path):
    def make(name: str, content: bytes):
        path = tmp_path / "in" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(content)
        return path

    return make


@pytest.fixture(params=["local", "s3"])
def registry(request, tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTIVECLICK_CACHE", str(tmp_path / "cache"))
    if request.param == "local":
        return open_registry(tmp_path / "registry")
    bucket = request.getfixturevalue("s3_bucket")
    return open_registry(f"s3://{bucket}/models/project-1")


def test_publish_read_and_point_at_versions(registry, weights):
    assert registry.current() is None and registry.current_pointer() is None and registry.list_versions() == []
    first = registry.publish(weights("a.pth", b"weights one"), "v1", config={"lr": 5e-5}, metrics={"noc90": 7.5})
    assert first.version == "v1" and first.sha256 == sha256_of(weights("a.pth", b"weights one"))
    assert first.config == {"lr": 5e-5} and first.metrics == {"noc90": 7.5} and first.size_bytes == 11
    assert registry.current() == first
    second = registry.publish(weights("b.pth", b"weights two"), "v2", parent="v1")
    assert registry.current().version == "v2" and second.parent == "v1"
    assert registry.current_pointer()["previous"] == "v1"
    assert [v.version for v in registry.list_versions()] == ["v1", "v2"]
    assert registry.read_version("v1") == first

    registry.set_current("v1")  # roll back
    assert registry.current().version == "v1" and registry.current_pointer()["previous"] == "v2"
    third = registry.publish(weights("c.pth", b"three"), "v3", make_current=False)
    assert registry.current().version == "v1" and third.version == "v3"


def test_versions_are_immutable(registry, weights):
    registry.publish(weights("a.pth", b"original"), "v1")
    with pytest.raises(VersionExistsError, match="immutable"):
        registry.publish(weights("b.pth", b"replacement"), "v1")
    path = registry.fetch_weights("v1")
    assert path.read_bytes() == b"original"
    assert registry.current().version == "v1"


def test_fetch_and_verify_check_the_sha256(registry, weights, tmp_path):
    info = registry.publish(weights("a.pth", b"payload"), "v1")
    fetched = registry.fetch_weights("v1", tmp_path / "cache")
    assert fetched.read_bytes() == b"payload" and sha256_of(fetched) == info.sha256
    assert registry.verify("v1") == info
    assert (
        str(pinned_spec(info.weights_uri, info.sha256, info.version))
        == f"{info.weights_uri}#sha256={info.sha256},version=v1"
    )

    tamper_weights(registry, info, b"tampered")
    with pytest.raises(IntegrityError, match="sha256"):
        registry.verify("v1")


def tamper_weights(registry, info, content: bytes) -> None:
    if isinstance(registry, LocalRegistry):
        with open(info.weights_uri, "wb") as f:
            f.write(content)
    else:
        key = info.weights_uri[len(f"s3://{registry.bucket}/") :]
        registry.client.put_object(Bucket=registry.bucket, Key=key, Body=content)


def test_unknown_versions_and_bad_names(registry, weights):
    with pytest.raises(RegistryError, match="does not exist"):
        registry.read_version("nope")
    with pytest.raises(ValueError, match="invalid version"):
        registry.publish(weights("a.pth", b"x"), "../escape")
    with pytest.raises(RegistryError, match="does not exist"):
        registry.publish(weights("a.pth", b"x").with_name("missing.pth"), "v1")
    with pytest.raises(RegistryError):
        registry.set_current("never-published")


def test_generated_version_names_are_unique_per_content(registry, weights):
    a = registry.publish(weights("a.pth", b"aaa"))
    b = registry.publish(weights("b.pth", b"bbb"))
    assert a.version != b.version and a.version.startswith("ft-") and a.sha256[:8] in a.version


def test_local_publish_leaves_no_partial_state(tmp_path, weights):
    registry = LocalRegistry(tmp_path / "reg")
    registry.publish(weights("a.pth", b"one"), "v1")
    with pytest.raises(VersionExistsError):
        registry.publish(weights("b.pth", b"two"), "v1")
    names = sorted(p.name for p in (tmp_path / "reg").rglob("*"))
    assert not [n for n in names if "staging" in n or n.endswith(".tmp")]
    assert json.loads((tmp_path / "reg" / "current.json").read_text())["version"] == "v1"


def test_concurrent_publishers_of_one_name_leave_one_consistent_version(tmp_path, weights):
    registry = LocalRegistry(tmp_path / "reg")
    files = [weights(f"w{i}.pth", f"weights {i}".encode()) for i in range(6)]
    outcomes = []

    def publish(path):
        try:
            outcomes.append(registry.publish(path, "v1").sha256)
        except VersionExistsError:
            outcomes.append("exists")

    threads = [threading.Thread(target=publish, args=(f,)) for f in files]
    [t.start() for t in threads]
    [t.join() for t in threads]
    winners = [o for o in outcomes if o != "exists"]
    assert len(winners) == 1
    assert registry.verify("v1").sha256 == winners[0]


def test_corrupt_pointer_is_reported(tmp_path):
    (tmp_path / "reg").mkdir()
    (tmp_path / "reg" / "current.json").write_text("{not json")
    with pytest.raises(RegistryError, match="not valid JSON"):
        LocalRegistry(tmp_path / "reg").current()


def test_open_registry_parses_locations(tmp_path):
    s3 = open_registry("s3://bucket-a/some/prefix/")
    assert isinstance(s3, S3Registry) and s3.bucket == "bucket-a" and s3.prefix == "some/prefix"
    assert s3.uri == "s3://bucket-a/some/prefix"
    assert isinstance(open_registry(tmp_path), LocalRegistry)
    for bad in ("", "ftp://host/x"):
        with pytest.raises(ValueError):
            open_registry(bad)
    with pytest.raises(ValueError, match="bucket"):
        open_registry("s3:///prefix")


def test_s3_weights_load_through_the_model_fetcher(s3_bucket, weights, tmp_path, monkeypatch):
    """The version's predictor spec points model.fetch_weights at the S3 object, hash-checked."""
    from adaptiveclick.model.checkpoint import fetch_weights

    monkeypatch.setenv("ADAPTIVECLICK_CACHE", str(tmp_path / "cache"))
    info = open_registry(f"s3://{s3_bucket}/reg").publish(weights("a.pth", b"served weights"), "v7")
    spec = parse_spec(pinned_spec(info.weights_uri, info.sha256, info.version))
    assert spec.source.startswith(f"s3://{s3_bucket}/reg/versions/v7/")
    local = fetch_weights(spec.source, sha256=spec.option("sha256"))
    assert local.read_bytes() == b"served weights"


def test_reading_the_registry_imports_no_torch():
    code = (
        "import sys, storage.registry as r; "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "assert not any(m.split('.')[0] in ('finetune', 'model', 'backend') for m in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
