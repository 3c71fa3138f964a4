"""GET /versions always lists what answers: on a fresh start (no registry version) and when the only registry
version is rejected, the configured predictor is listed, marked ``"source": "configured"``, so Label Studio's model
settings show the version that produced the masks. (With registry versions: tests/integration/test_backend_projects.)"""

from __future__ import annotations

from datetime import datetime

from adaptiveclick.backend.app import create_app
from adaptiveclick.backend.settings import Settings
from adaptiveclick.model import BASELINE_VERSION, GrabCutPredictor
from adaptiveclick.storage.registry import BASE_LINE, open_registry


def client_for(tmp_path, **settings):
    settings = Settings(model_dir=tmp_path / "models", registry_poll_seconds=0, **settings)
    return create_app(settings, predictor=GrabCutPredictor()).test_client()


def test_a_fresh_start_lists_the_configured_predictor(tmp_path):
    client = client_for(tmp_path)
    for path, project, line in (("/versions", None, "base"), ("/projects/3/versions", 3, "project-3")):
        listing = client.get(path).json
        assert listing["versions"] == [BASELINE_VERSION], listing
        assert listing["project"] == project and listing["line"] == line and listing["pinned"] is None
        assert listing["served"] == {
            "version": BASELINE_VERSION,
            "why": "no registry version: the configured predictor",
        }
        (only,) = listing["details"]
        assert only["source"] == "configured" and only["line"] == "configured" and only["predictor"] == "baseline"
        assert only["served"] and only["current"] and not only["pinned"] and not only["pinnable"]
        assert only["parent"] is None and only["noc90_after"] is None
        assert datetime.fromisoformat(only["created"]).tzinfo is not None  # when this process loaded it
    assert client.get("/health").json["model_version"] == BASELINE_VERSION  # the same name everywhere


def test_the_listed_spec_holds_no_secret(tmp_path):
    spec = "https://user:token@weights.example/m.pth?X-Amz-Signature=abc#sha256=" + "0" * 64
    listing = client_for(tmp_path, predictor=spec).get("/versions").json
    assert listing["details"][0]["predictor"] == "https://weights.example/m.pth#sha256=" + "0" * 64


def test_a_rejected_registry_version_leaves_the_configured_one_listed_as_serving(tmp_path):
    (tmp_path / "broken.pth").write_bytes(b"not weights")
    registry = open_registry(str(tmp_path / "models" / "registry"))
    registry.line(BASE_LINE).publish(tmp_path / "broken.pth", version="broken")
    listing = client_for(tmp_path).get("/versions").json
    assert listing["versions"] == ["broken", BASELINE_VERSION]
    broken, configured = listing["details"]
    assert broken["source"] == "registry" and broken["current"] and not broken["served"] and not broken["pinnable"]
    assert configured["source"] == "configured" and configured["served"]
    assert listing["served"]["version"] == BASELINE_VERSION and "rejected" in listing["served"]["why"]
