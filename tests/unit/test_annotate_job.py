"""The annotate job against a fake Label Studio (tests/ls_fake.py) with the baseline on small images: one
prediction per task with boxes, what was skipped and why, resume (journal, torn last line, a POST whose journal
line was lost), shards, POST failures, and the folder's pins. The real Label Studio and a real kill are in
tests/test_annotate_e2e.py."""

from __future__ import annotations

import base64
import json

import cv2
import numpy as np
import pytest

from adaptiveclick.annotate import job as annotate_job
from adaptiveclick.annotate.job import AnnotateOptions, JobError, run_annotate
from adaptiveclick.annotate.journal import Journal, JournalError
from adaptiveclick.annotate.progress import Progress
from adaptiveclick.labelstudio.selection import Shard
from adaptiveclick.labelstudio.settings import LabelStudioSettings
from adaptiveclick.model import BASELINE_VERSION

from ls_fake import FakeLabelStudio

CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="bbox" toName="image"><Label value="Object"/><Label value="Car"/></RectangleLabels>
  <BrushLabels name="mask" toName="image"><Label value="Object"/></BrushLabels>
  <PolygonLabels name="polygon" toName="image"><Label value="Object"/></PolygonLabels>
</View>"""
H, W = 60, 80


def picture(seed: int) -> tuple[str, tuple[float, float, float, float]]:
    """A data: URI of a noisy image with one bright ellipse, and the ellipse's box in percent."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 50, (H, W, 3), dtype=np.uint8)
    cy, cx = 30 + seed % 5, 40 - seed % 7
    cv2.ellipse(image, (cx, cy), (18, 12), 0, 0, 360, (220, 200, 40), -1)
    ok, png = cv2.imencode(".png", image)
    assert ok
    box = ((cx - 19) * 100 / W, (cy - 13) * 100 / H, 38 * 100 / W, 26 * 100 / H)
    return "data:image/png;base64," + base64.b64encode(png.tobytes()).decode(), box


def rectangle(box, label="Object"):
    x, y, w, h = box
    value = {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": [label]}
    return {"type": "rectanglelabels", "from_name": "bbox", "to_name": "image", "value": value}


def make_tasks() -> list[dict]:
    tasks = []
    for tid in range(1, 13):
        url, box = picture(tid)
        regions = [rectangle(box)]
        if tid == 2:
            x, y, w, h = box
            regions.append(rectangle((x - 2, y - 2, w + 4, h + 4)))  # a second box on the same image
        if tid == 5:
            regions = [rectangle(box, "Car")]  # no output tag takes Car
        annotations = [] if tid == 4 else [{"id": 100 + tid, "result": regions}]
        if tid == 6:
            url = "data:image/png;base64," + base64.b64encode(b"not an image").decode()
        tasks.append({"id": tid, "data": {"image": url}, "annotations": annotations, "predictions": []})
    return tasks


WITH_BOXES = {1, 2, 3, 7, 8, 9, 10, 11, 12}  # every task but 4 (no annotation), 5 (Car), 6 (broken image)


@pytest.fixture()
def fake():
    ls = FakeLabelStudio(make_tasks(), CONFIG)
    yield ls
    ls.close()


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    monkeypatch.setattr(annotate_job, "POST_BACKOFF_S", 0.0)


def options(fake, output, **extra) -> AnnotateOptions:
    settings = LabelStudioSettings(url=fake.url, api_key="legacy-key")
    return AnnotateOptions(project=3, output=output, settings=settings, rate=None, progress=False, **extra)


def predicted_tasks(fake) -> list[int]:
    return sorted(p["task"] for p in fake.predictions)


def test_every_task_with_boxes_gets_one_prediction_and_a_rerun_does_nothing(fake, tmp_path):
    summary = run_annotate(options(fake, tmp_path / "out"))
    assert predicted_tasks(fake) == sorted(WITH_BOXES)
    assert summary["state"] == "finished" and summary["predicted"] == len(WITH_BOXES) and summary["total"] == 12
    assert summary["skipped"] == {"no annotations": 1, "no usable rectangles": 1, "image 422": 1}
    assert summary["rectangles_skipped"] == {"label 'Car' is in no output tag (BrushLabels, PolygonLabels)": 1}
    assert summary["boxes"] == len(WITH_BOXES) + 1 and summary["failed"] == {} and summary["tasks_per_minute"] > 0
    two = next(p for p in fake.predictions if p["task"] == 2)
    assert two["model_version"] == BASELINE_VERSION and 0 < two["score"] <= 1
    assert [r["type"] for r in two["result"]].count("brushlabels") == 2
    assert json.loads((tmp_path / "out" / "status.json").read_text())["state"] == "finished"
    assert all(method != "POST" or path == "/api/predictions/" for method, path, _ in fake.requests)
    again = run_annotate(options(fake, tmp_path / "out"))
    assert again["predicted"] == 0 and again["done"] == len(WITH_BOXES) and predicted_tasks(fake) == sorted(WITH_BOXES)


def test_a_task_past_its_deadline_is_skipped_and_left_for_the_next_run(fake, tmp_path):
    """--box-deadline bounds each task's model time (the baseline's GrabCut can run for minutes on a flat image);
    a task stopped at it is not journaled, so the next run tries it again."""
    stopped = run_annotate(options(fake, tmp_path / "out", box_deadline=1e-9))
    assert stopped["skipped"]["deadline"] == len(WITH_BOXES) and stopped["predicted"] == 0 and not fake.predictions
    again = run_annotate(options(fake, tmp_path / "out"))
    assert again["predicted"] == len(WITH_BOXES) and predicted_tasks(fake) == sorted(WITH_BOXES)


def test_a_kill_between_post_and_journal_duplicates_nothing(fake, tmp_path):
    out = tmp_path / "out"
    run_annotate(options(fake, out))
    lines = (out / "journal.jsonl").read_bytes().splitlines(keepends=True)
    # as if killed after posting task 4's successor and half-way through writing a line
    (out / "journal.jsonl").write_bytes(b"".join(lines[:3]) + lines[3][:10])
    resumed = run_annotate(options(fake, out))
    assert resumed["found"] == len(WITH_BOXES) - 3 and resumed["predicted"] == 0 and resumed["done"] == len(WITH_BOXES)
    assert predicted_tasks(fake) == sorted(WITH_BOXES)  # exactly one each
    assert len(Journal(out / "journal.jsonl")) == len(WITH_BOXES)
    # a fresh folder (a new pod without a volume) finds them all in Label Studio
    fresh = run_annotate(options(fake, tmp_path / "fresh"))
    assert fresh["found"] == len(WITH_BOXES) and predicted_tasks(fake) == sorted(WITH_BOXES)


def test_shards_split_the_project_without_overlap(fake, tmp_path):
    first = run_annotate(options(fake, tmp_path / "1", shard=Shard(1, 2)))
    second = run_annotate(options(fake, tmp_path / "2", shard=Shard(2, 2)))
    assert first["total"] + second["total"] == 12 and first["predicted"] + second["predicted"] == len(WITH_BOXES)
    assert predicted_tasks(fake) == sorted(WITH_BOXES)
    shard_of = {e["task"]: 1 for e in Journal(tmp_path / "1" / "journal.jsonl").entries}
    assert all(t % 2 == 0 for t in shard_of)
    only = run_annotate(options(fake, tmp_path / "ids", tasks=frozenset({1, 2, 4})))
    assert only["total"] == 3 and only["found"] == 2 and only["skipped"] == {"no annotations": 1}


def test_post_failures_are_retried_without_duplicates(fake, tmp_path):
    fake.post_failures, fake.store_failed_posts = 1, True  # the first POST is stored but its answer is lost
    summary = run_annotate(options(fake, tmp_path / "a", tasks=frozenset({1, 2})))
    assert summary["found"] == 1 and summary["predicted"] == 1 and predicted_tasks(fake) == [1, 2]
    fake.post_failures, fake.store_failed_posts = 1, False  # refused once: tried again
    assert run_annotate(options(fake, tmp_path / "b", tasks=frozenset({3})))["predicted"] == 1
    fake.post_failures = 10  # never accepted: counted as failed, not journaled, so a rerun tries again
    summary = run_annotate(options(fake, tmp_path / "c", tasks=frozenset({7})))
    assert summary["failed"] == {"Label Studio answered 503": 1} and 7 not in Journal(tmp_path / "c" / "journal.jsonl")
    fake.post_failures = 0
    assert run_annotate(options(fake, tmp_path / "c", tasks=frozenset({7})))["predicted"] == 1
    assert predicted_tasks(fake) == [1, 2, 3, 7]


def test_the_folder_is_pinned_to_its_job(fake, tmp_path):
    out = tmp_path / "out"
    run_annotate(options(fake, out, tasks=frozenset({1})))
    with pytest.raises(JobError, match="shard='1/1'"):
        run_annotate(options(fake, out, shard=Shard(1, 2)))
    with pytest.raises(JobError, match="model_version"):
        run_annotate(options(fake, out, predictor="baseline#version=other"))
    held = annotate_job._lock(out)
    try:
        with pytest.raises(JobError, match="another annotate run"):
            run_annotate(options(fake, out))
    finally:
        import os

        os.close(held)
    (out / "journal.jsonl").write_text('{"task": 1}\nnot json\n{"task": 2}\n')
    with pytest.raises(JournalError, match="line 2"):
        Journal(out / "journal.jsonl")


def test_progress_counts_pace_and_eta(tmp_path):
    now = [100.0]
    progress = Progress(tmp_path / "status.json", {"project": 3}, clock=lambda: now[0])
    progress.planned, progress.done_before = 10, 5
    progress.begin_work()
    now[0] += 30
    progress.worked = progress.predicted = 2
    snapshot = progress.write("running")
    assert snapshot["tasks_per_minute"] == 4.0 and snapshot["eta_s"] == 120.0 and snapshot["to_do"] == 8
    assert snapshot["done"] == 7 and json.loads((tmp_path / "status.json").read_text())["project"] == 3
