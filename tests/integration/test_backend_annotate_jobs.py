"""Annotate jobs from the backend (backend.annotate_jobs): POST /jobs/<project>/annotate starts
``adaptiveclick annotate`` as a process with the served model and the body's options, one per project, and /jobs
shows it with its progress. A fake command stands in for the job (the real one: tests/test_boxes_e2e.py)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from adaptiveclick.backend.annotate_jobs import AnnotateLauncher, served_spec_now
from adaptiveclick.backend.app import backend_of, create_app
from adaptiveclick.backend.jobs import wait_for
from adaptiveclick.backend.settings import Settings
from adaptiveclick.labelstudio.settings import LabelStudioSettings
from adaptiveclick.model import GrabCutPredictor
from adaptiveclick.storage.lines import VersionRef

FAKE_ANNOTATE = textwrap.dedent("""
    import json, os, sys, time
    args = sys.argv[1:]
    out = args[args.index("--output") + 1]
    os.makedirs(out, exist_ok=True)
    print("fake annotate", " ".join(args), "key" if os.environ.get("LABEL_STUDIO_API_KEY") else "no key", flush=True)
    with open(os.path.join(out, "status.json"), "w") as f:
        json.dump({"state": "running", "done": 3, "total": 10, "tasks_per_minute": 6.0, "eta_s": 70.0}, f)
    while not os.path.exists(os.path.join(out, "..", "release")):
        time.sleep(0.05)
    with open(os.path.join(out, "status.json"), "w") as f:
        json.dump({"state": "finished", "done": 10, "total": 10}, f)
""")


ADMIN_TOKEN = "operator-token-0123456789abcdef"
OPERATOR = {"HTTP_AUTHORIZATION": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture()
def client(tmp_path):
    """The operator's client (the token on every request)."""
    script = tmp_path / "fake_annotate.py"
    script.write_text(FAKE_ANNOTATE)
    settings = Settings(
        model_dir=tmp_path / "models",
        label_studio=LabelStudioSettings(url="http://ls.example", api_key="secret"),
        admin_token=ADMIN_TOKEN,
    )
    app = create_app(settings, predictor=GrabCutPredictor())
    launcher = backend_of(app).annotate
    launcher.command_prefix = [sys.executable, str(script)]
    client = app.test_client()
    client.environ_base.update(OPERATOR)
    return client, launcher


def release(status: dict) -> None:
    (Path(status["folder"]) / "release").touch()


def test_post_starts_one_annotate_job_per_project(client):
    client, launcher = client
    response = client.post("/jobs/5/annotate", json={"tasks": "1-3,9", "shard": "1/2", "rate": 2})
    assert response.status_code == 202, response.json
    job = response.json["job"]
    assert job["kind"] == "annotate" and job["state"] == "running" and job["project"] == 5
    again = client.post("/jobs/5/annotate")
    assert again.status_code == 409 and "already running" in again.json["error"]
    listed = client.get("/jobs").json["jobs"]
    assert [(j["kind"], j["project"]) for j in listed] == [("annotate", 5)]
    release(job)
    done = wait_for(launcher, 5, timeout=30)
    assert done.state == "succeeded" and done.progress["done"] == 10
    log = "\n".join(done.log_tail)
    assert "--ls-project 5" in log and "--predictor baseline" in log and "--from annotations --rate 2" in log
    assert "--tasks 1-3,9 --shard 1/2" in log and "--threshold 0.49 --box-deadline 30" in log
    assert "key" in log and "secret" not in log  # the key travels by environment, never on the command line
    assert client.get("/jobs/5/annotate").json["state"] == "succeeded"
    assert client.get("/jobs/6/annotate").json == {"project": 6, "state": "none", "kind": "annotate"}


@pytest.mark.parametrize(
    "body, message",
    [
        ({"from": "drafts"}, "annotations or predictions"),
        ({"tasks": "1,a"}, "'tasks' takes task ids"),
        ({"shard": "3/2"}, "K must lie in 1..N"),
        ({"rate": -1}, "calls per second"),
        ({"rate": True}, "calls per second"),
        ({"nope": 1}, "unknown annotate options nope"),
        ([1], "JSON object"),
    ],
)
def test_bad_options_are_400_with_the_fix(client, body, message):
    client, _ = client
    response = client.post("/jobs/5/annotate", json=body)
    assert response.status_code == 400 and message in response.json["error"], response.json


def test_jobs_need_the_operator_token_and_label_studio(tmp_path):
    off = create_app(Settings(model_dir=tmp_path), predictor=GrabCutPredictor()).test_client()
    response = off.post("/jobs/1/annotate")  # no token configured: the operator routes are off
    assert response.status_code == 403 and "ADAPTIVECLICK_ADMIN_TOKEN" in response.json["error"]
    app = create_app(Settings(model_dir=tmp_path, admin_token=ADMIN_TOKEN), predictor=GrabCutPredictor())
    assert app.test_client().post("/jobs/1/annotate").status_code == 401
    wrong = app.test_client().post("/jobs/1/annotate", headers={"Authorization": "Bearer " + "x" * 30})
    assert wrong.status_code == 401 and "Bearer" in wrong.headers["WWW-Authenticate"]
    response = app.test_client().post("/jobs/1/annotate", environ_base=OPERATOR)
    assert response.status_code == 409 and "LABEL_STUDIO_URL" in response.json["error"]
    guarded = create_app(
        Settings(model_dir=tmp_path, basic_auth_user="u", basic_auth_pass="p", admin_token=ADMIN_TOKEN),
        predictor=GrabCutPredictor(),
    ).test_client()
    assert guarded.post("/jobs/1/annotate").status_code == 401
    connection_only = guarded.post("/jobs/1/annotate", auth=("u", "p"))  # Label Studio's credential is not enough
    assert connection_only.status_code == 401 and "operator token" in connection_only.json["error"]
    for path in ("/jobs/" + "9" * 300 + "/annotate", "/jobs/12x/annotate", "/jobs/" + "9" * 300):
        assert guarded.get(path, environ_base=OPERATOR).status_code == 404, path
    assert guarded.get("/projects/2/jobs/3/annotate", environ_base=OPERATOR).status_code == 400  # not its project


def test_the_job_uses_the_served_model():
    class Line:
        def __init__(self, name):
            self.name = name

        def read_version(self, version):
            if (self.name, version) != ("project-3", "ft-1"):
                raise KeyError(version)
            return SimpleNamespace(weights_uri="s3://models/project-3/ft-1/model.pth", sha256="ab" * 32)

    class Registry:
        def line(self, name):
            return Line(name)

    configured = "weights/base.pth#device=cuda,precision=fp32"
    assert served_spec_now(None, Registry(), configured) == configured
    pinned = served_spec_now(VersionRef("project-3", "ft-1"), Registry(), configured)
    assert pinned.startswith("s3://models/project-3/ft-1/model.pth#") and "version=ft-1" in pinned
    assert "device=cuda" in pinned
    with pytest.raises(KeyError):  # a version that vanished is an error, not silently another model
        served_spec_now(VersionRef("base", "ft-1"), Registry(), configured)
    settings = Settings(model_dir=Path("/srv/models"))
    # annotate jobs live beside the fine-tunes, in their own folder (never mixed with a project's fine-tune jobs)
    assert AnnotateLauncher(settings, lambda project: "baseline").jobs_root == Path("/srv/models/jobs/annotate")
