"""Hot swap from the model registry, and the fine-tune jobs the backend starts."""

from __future__ import annotations

import dataclasses
import os
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from werkzeug.serving import make_server

from adaptiveclick.backend.app import backend_of, create_app
from adaptiveclick.backend.finetune_jobs import FinetuneLauncher, NoStartingWeights
from adaptiveclick.backend.jobs import wait_for
from adaptiveclick.backend.registry_watcher import RegistryWatcher
from adaptiveclick.backend.settings import Settings, SettingsError
from adaptiveclick.backend.webhook import ProjectCounts, WebhookDispatcher, parse_webhook
from adaptiveclick.finetune.network import save_weights
from adaptiveclick.labelstudio.settings import LabelStudioSettings
from adaptiveclick.model import GrabCutPredictor, build_adaptiveclick
from adaptiveclick.model.build import TINY_CONFIG
from adaptiveclick.model.clicks import Click
from adaptiveclick.model.spec import parse_spec, pinned_spec
from adaptiveclick.storage.registry import open_registry

from ls_regions import click_request


def tiny_weights(path: Path, seed: int) -> Path:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return save_weights(build_adaptiveclick(TINY_CONFIG), path)


@pytest.fixture()
def registry(tmp_path):
    return open_registry(tmp_path / "registry")


def test_version_spec_keeps_run_options_not_weight_options():
    spec = pinned_spec(
        "/r/w.pth", "ab" * 32, "ft-1", run_like=parse_spec("old.pth#sha256=00,device=cpu,mode=plain,version=x")
    )
    assert spec.source == "/r/w.pth"
    assert spec.options == {"device": "cpu", "mode": "plain", "sha256": "ab" * 32, "version": "ft-1"}


def test_watcher_swaps_rejects_broken_versions_and_keeps_serving(registry, tmp_path):
    watcher = RegistryWatcher.for_predictor(GrabCutPredictor(), registry, "baseline", poll_seconds=0)
    holder = watcher.holder
    assert watcher.poll_once() == "empty"

    registry.publish(tiny_weights(tmp_path / "a.pth", 1), version="ft-a")
    assert watcher.poll_once() == "swapped"
    assert holder.version == "ft-a"
    assert holder.current().predictor.model_version == "ft-a"
    assert watcher.poll_once() == "unchanged"

    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint at all")
    registry.publish(tmp_path / "broken.pth", version="ft-broken")
    assert watcher.poll_once() == "rejected"
    assert holder.version == "ft-a"  # the old model keeps serving
    assert "base/ft-broken" in watcher.rejected and "cannot read checkpoint" in watcher.rejected["base/ft-broken"]
    assert watcher.poll_once() == "unchanged"  # not retried while the pointer stays

    registry.publish(tiny_weights(tmp_path / "b.pth", 2), version="ft-b")
    assert watcher.poll_once() == "swapped" and holder.version == "ft-b"


def test_watcher_rejects_weights_that_do_not_match_their_manifest(registry, tmp_path):
    info = registry.publish(tiny_weights(tmp_path / "a.pth", 1), version="ft-a")
    Path(info.weights_uri).write_bytes(Path(info.weights_uri).read_bytes()[:-10])  # corrupted after publishing
    watcher = RegistryWatcher.for_predictor(GrabCutPredictor(), registry, "baseline", poll_seconds=0)
    holder = watcher.holder
    assert watcher.poll_once() == "rejected"
    assert "IntegrityError" in watcher.rejected["base/ft-a"]
    assert holder.version == GrabCutPredictor.model_version


def test_requests_during_a_swap_all_succeed_and_name_their_version(registry, tmp_path, data_root):
    """A real threaded HTTP server: clients click continuously while the watcher swaps twice."""
    from adaptiveclick.evaluation.datasets import GrabCutDataset

    sample = GrabCutDataset(data_root / "GrabCut")[0]
    image_path = tmp_path / "image.png"
    import cv2

    cv2.imwrite(str(image_path), sample.image[:, :, ::-1])
    settings = Settings(
        model_dir=tmp_path / "models",
        model_registry=str(registry.uri),
        label_studio=LabelStudioSettings(local_files_document_root=tmp_path),
        registry_poll_seconds=0.05,
        unsafe_anonymous=("media",),  # local files for anonymous clicks: a single-user machine
    )
    app = create_app(settings, predictor=GrabCutPredictor(), watch_registry=True)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    import requests

    url = f"http://127.0.0.1:{server.server_port}/predict"
    body = click_request(image_path.name)
    failures, versions, stop = [], [], threading.Event()

    def click():
        while not stop.is_set():
            response = requests.post(url, json=body, timeout=60)
            if response.status_code != 200:
                failures.append((response.status_code, response.text))
            else:
                versions.append(response.json()["results"][0]["model_version"])

    clients = [threading.Thread(target=click) for _ in range(3)]
    for c in clients:
        c.start()
    try:
        time.sleep(0.5)
        registry.publish(tiny_weights(tmp_path / "a.pth", 1), version="ft-a")
        deadline = time.monotonic() + 60
        while "ft-a" not in versions and time.monotonic() < deadline:
            time.sleep(0.05)
        registry.publish(tiny_weights(tmp_path / "b.pth", 2), version="ft-b")
        while "ft-b" not in versions and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        stop.set()
        for c in clients:
            c.join()
        server.shutdown()
        backend_of(app).watcher.stop()
    assert not failures, failures[:3]
    assert versions[0] == GrabCutPredictor.model_version and versions[-1] == "ft-b"
    assert "ft-a" in versions and len(versions) > 6
    # a version never reappears after the next one took over
    order = [v for i, v in enumerate(versions) if i == 0 or versions[i - 1] != v]
    assert order == [GrabCutPredictor.model_version, "ft-a", "ft-b"]


FAKE_FINETUNE = textwrap.dedent("""
    import json, os, sys, time
    args = sys.argv[1:]
    out = args[args.index("--output") + 1]
    os.makedirs(out, exist_ok=True)
    print("fake finetune", " ".join(args), "key" if os.environ.get("LABEL_STUDIO_API_KEY") else "no key", flush=True)
    with open(os.path.join(out, "status.json"), "w") as f:
        json.dump({"state": "running", "step": 1}, f)
    while not os.path.exists(os.path.join(out, "..", "release")):
        time.sleep(0.05)
    with open(os.path.join(out, "status.json"), "w") as f:
        json.dump({"state": "finished", "step": 2}, f)
    sys.exit(int(os.environ.get("FAKE_EXIT", "0")))
""")


@pytest.fixture()
def launcher(tmp_path):
    script = tmp_path / "fake_finetune.py"
    script.write_text(FAKE_FINETUNE)
    settings = Settings(
        model_dir=tmp_path / "models",
        predictor="baseline",
        label_studio=LabelStudioSettings(url="http://ls.example", api_key="secret"),
        finetune_args="--init random:tiny --steps 3",
        finetune_min_annotations=2,
    )
    return FinetuneLauncher(settings, command_prefix=[sys.executable, str(script)])


def release(status) -> None:
    (Path(status.folder) / "release").touch()


def test_start_training_runs_one_job_per_project(launcher):
    dispatcher = WebhookDispatcher(launcher.handle_event)
    start = parse_webhook({"action": "START_TRAINING", "project": {"id": 7}})
    assert dispatcher.dispatch(start)["status"] == "started"
    assert dispatcher.dispatch(start)["status"] == "already running"
    status = launcher.status(7)
    assert status.state == "running" and status.reason == "START_TRAINING"
    release(status)
    done = wait_for(launcher, 7, timeout=30)
    assert done.state == "succeeded" and done.exit_code == 0 and done.progress["state"] == "finished"
    log = "\n".join(done.log_tail)
    assert "--ls-project 7" in log and "--init random:tiny --steps 3" in log and "--registry" in log
    assert "key" in log and "secret" not in log  # the key travels by environment, never on the command line
    assert dispatcher.dispatch(start)["status"] == "started"  # the next one may start now
    release(launcher.status(7))
    assert wait_for(launcher, 7, timeout=30).state == "succeeded"


def test_annotation_threshold_starts_a_job(launcher):
    dispatcher = WebhookDispatcher(launcher.handle_event)

    def annotate(i):
        return dispatcher.dispatch(
            parse_webhook(
                {"action": "ANNOTATION_CREATED", "project": {"id": 3}, "annotation": {"id": i}, "task": {"id": i}}
            )
        )

    assert annotate(1) == {"status": "counted", "new_annotations": 1, "threshold": 2}
    assert annotate(2)["status"] == "started"
    release(launcher.status(3))
    assert wait_for(launcher, 3, timeout=30).state == "succeeded"
    assert annotate(3)["new_annotations"] == 1  # counted from the last job's start


def test_failed_and_interrupted_jobs_are_reported(launcher, monkeypatch):
    monkeypatch.setenv("FAKE_EXIT", "3")
    status = launcher.start(5, "test")
    release(status)
    assert wait_for(launcher, 5, timeout=30).state == "failed"
    assert launcher.status(5).exit_code == 3
    assert launcher.status(99).state == "none"


def test_jobs_need_starting_weights(tmp_path):
    launcher = FinetuneLauncher(Settings(model_dir=tmp_path))
    result = launcher.handle_event(parse_webhook({"action": "START_TRAINING", "project": {"id": 1}}), ProjectCounts())
    assert result["status"] == "not started" and "FINETUNE_ARGS" in result["message"]
    served = FinetuneLauncher(Settings(model_dir=tmp_path, predictor="/w/model.pth#sha256=ab,device=cpu"))
    assert served.init_argument(1) == ["--init", "/w/model.pth#sha256=ab"]
    from_registry = FinetuneLauncher(Settings(model_dir=tmp_path), has_registry_version=lambda project: project == 7)
    assert from_registry.init_argument(7) == ["--init", "registry"]
    with pytest.raises(NoStartingWeights):
        from_registry.init_argument(8)


def test_jobs_endpoints(launcher, tmp_path):
    settings = dataclasses.replace(launcher.settings, basic_auth_user="ls", basic_auth_pass="s3cret")
    app = create_app(settings, predictor=GrabCutPredictor(), webhook_handler=launcher.handle_event)
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = "Basic bHM6czNjcmV0"  # ls:s3cret
    assert client.get("/jobs").get_json()["jobs"] == []
    assert client.post("/setup", json={"project": "4.1"}).status_code == 200
    response = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 4}})
    assert response.status_code == 201 and response.get_json()["result"]["status"] == "started"
    job = client.get("/jobs/4").get_json()
    assert job["state"] == "running" and job["project"] == 4
    assert [j["project"] for j in client.get("/jobs").get_json()["jobs"]] == [4]
    release(launcher.status(4))
    wait_for(launcher, 4, timeout=30)
    assert client.get("/jobs/4").get_json()["state"] == "succeeded"


def test_settings_validation():
    assert Settings(model_dir=Path("/m")).registry_uri == "/m/registry"
    assert Settings(model_registry="s3://b/p").registry_uri == "s3://b/p"
    for bad in (
        {"model_registry": "ftp://x"},
        {"registry_poll_seconds": -1},
        {"finetune_min_annotations": -2},
        {"finetune_args": "--init 'unterminated"},
    ):
        with pytest.raises(SettingsError):
            Settings(**bad)
    env = {
        "MODEL_REGISTRY": "s3://bucket/models",
        "MODEL_REGISTRY_POLL_SECONDS": "2.5",
        "FINETUNE_MIN_ANNOTATIONS": "10",
        "FINETUNE_ARGS": "--steps 100",
    }
    settings = Settings.from_env(env)
    assert (
        settings.model_registry,
        settings.registry_poll_seconds,
        settings.finetune_min_annotations,
        settings.finetune_args,
    ) == ("s3://bucket/models", 2.5, 10, "--steps 100")
    assert np.isclose(Settings.from_env({}).registry_poll_seconds, 10.0)


class Evil:
    """A pickle that would run a command when loaded (weights_only loading must refuse it)."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/adaptiveclick-pwned",))


def faulty_versions(tmp_path) -> dict[str, Path]:
    """Weights files that must never be served: each fails one of the watcher's checks."""
    good = tiny_weights(tmp_path / "good.pth", 1)
    data = good.read_bytes()
    files = {
        "truncated": tmp_path / "truncated.pth",
        "wrong-shape": tmp_path / "shape.pth",
        "nan": tmp_path / "nan.pth",
        "pickle-payload": tmp_path / "evil.pth",
    }
    files["truncated"].write_bytes(data[: len(data) // 2])
    state = torch.load(good, weights_only=True)
    shape = {**state, "state_dict": dict(state["state_dict"])}
    shape["state_dict"]["backbone.pos_embed"] = torch.zeros(1, 3, 3)
    torch.save(shape, files["wrong-shape"])
    nan = {
        **state,
        "state_dict": {
            k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state["state_dict"].items()
        },
    }
    torch.save(nan, files["nan"])
    torch.save({"state_dict": {"x": Evil()}, "config": {}}, files["pickle-payload"])
    return files


def test_registry_faults_are_rejected_and_the_old_model_keeps_serving(registry, tmp_path):
    marker = Path("/tmp/adaptiveclick-pwned")
    marker.unlink(missing_ok=True)
    watcher = RegistryWatcher.for_predictor(GrabCutPredictor(), registry, "baseline", poll_seconds=0)
    holder = watcher.holder
    registry.publish(tiny_weights(tmp_path / "a.pth", 1), version="ft-a")
    assert watcher.poll_once() == "swapped"
    for name, path in faulty_versions(tmp_path).items():
        registry.publish(path, version=f"ft-{name}")
        assert watcher.poll_once() == "rejected", name
        assert holder.version == "ft-a" and f"base/ft-{name}" in watcher.rejected
    assert "fit" in watcher.rejected["base/ft-wrong-shape"] or "shape" in watcher.rejected["base/ft-wrong-shape"]
    assert "finite" in watcher.rejected["base/ft-nan"]
    assert not marker.exists()  # the payload never ran
    # a garbled pointer: unreadable, so nothing changes
    (Path(registry.uri) / "current.json").write_text('{"version": ')
    assert watcher.poll_once() == "unchanged" and holder.version == "ft-a"
    (Path(registry.uri) / "current.json").write_text('["not", "an", "object"]')
    assert watcher.poll_once() == "unchanged" and holder.version == "ft-a"
    image = np.random.default_rng(0).integers(0, 255, (40, 50, 3), np.uint8)
    run = holder.current().run_steps("img", image, [Click(20, 25, True, 0)], 0, None)
    assert run.steps == 1 and np.isfinite(run.last.probs).all()  # the old model still answers


def test_the_first_answer_after_a_start_comes_from_the_registry_version(registry, tmp_path):
    settings = Settings(model_dir=tmp_path / "models", model_registry=str(registry.uri), registry_poll_seconds=0)
    assert backend_of(create_app(settings)).holder.version == "baseline-grabcut-v2"
    registry.publish(tiny_weights(tmp_path / "a.pth", 1), version="ft-a")
    app = create_app(settings)  # no watcher thread at all: the version is loaded before the app exists
    assert backend_of(app).holder.version == "ft-a"
    assert app.test_client().get("/health").get_json()["model_version"] == "ft-a"
    (tmp_path / "broken.pth").write_bytes(b"garbage")
    registry.publish(tmp_path / "broken.pth", version="ft-broken")
    app = create_app(settings)  # a current version that does not load: the configured predictor, and why
    parts = backend_of(app)
    assert parts.holder.version == "baseline-grabcut-v2" and "base/ft-broken" in parts.watcher.rejected
