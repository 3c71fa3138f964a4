"""finetune.labelstudio: exports and the API to instance masks; unusable annotations are reported, not fatal."""

from __future__ import annotations

import http.server
import threading
from urllib.parse import parse_qs, urlparse

import cv2
import numpy as np
import pytest

from adaptiveclick.finetune.labelstudio import image_fetcher, import_tasks, read_manifest
from adaptiveclick.labelstudio.api import LabelStudioError, fetch_tasks
from adaptiveclick.labelstudio.settings import ImageLimits, LabelStudioSettings

from ls_regions import H, W, brush_region, keypoint_region, polygon_region, task
from quiet_http import QuietHandler


def annotation(*regions, **extra) -> dict:
    return {"id": extra.pop("id", 1), "result": list(regions), "was_cancelled": False, **extra}


@pytest.fixture()
def picture(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    path = tmp_path / "picture.png"
    cv2.imwrite(str(path), image[:, :, ::-1])
    return image, path


def blob() -> np.ndarray:
    mask = np.zeros((H, W), bool)
    cv2.circle(mask.view(np.uint8), (30, 20), 9, 1, -1)
    return mask


def test_regions_become_masks_and_problems_are_reported(picture, tmp_path):
    image, path = picture
    rect = np.zeros((H, W), bool)
    rect[10:30, 15:45] = True  # polygon corners in percent of the image
    square = [[25, 25], [75, 25], [75, 75], [25, 75]]
    tasks = [
        task(1, str(path), annotation(brush_region(blob()))),
        task(2, path.as_uri(), annotation(polygon_region(square))),
        task(3, str(path), annotation(keypoint_region(50, 50, width=20.0), keypoint_region(10, 10, positive=False))),
        task(4, str(path), annotation(brush_region(blob()), keypoint_region(50, 50))),
        task(5, str(path), annotation(brush_region(blob()), was_cancelled=True)),
        task(6, str(tmp_path / "missing.png"), annotation(brush_region(blob()))),
        task(7, str(path), annotation({"id": "r", "type": "rectanglelabels", "value": {}})),
        task(8, str(path), annotation(brush_region(np.zeros((H + 1, W), bool)))),
        task(
            9,
            str(path),
            annotation(polygon_region(square), id=1, updated_at="2024-01-02"),
            annotation(brush_region(blob()), id=2, updated_at="2024-01-01", ground_truth=True),
        ),
        task(10, str(path)),
    ]
    records, report = import_tasks(tasks, image_fetcher(LabelStudioSettings(), local_root=tmp_path), tmp_path / "cache")
    by_key = {r.key: r.load() for r in records}
    assert sorted(by_key) == ["task-1", "task-2", "task-3", "task-4", "task-9"]
    assert np.array_equal(by_key["task-1"].image, image)
    assert np.array_equal(by_key["task-1"].objects[0], blob())
    assert np.array_equal(by_key["task-2"].objects[0], rect)
    disk = by_key["task-3"].objects
    assert len(disk) == 1 and disk[0][20, 30] and disk[0].sum() == pytest.approx(np.pi * 6**2, rel=0.2)
    assert len(by_key["task-4"].objects) == 1 and np.array_equal(by_key["task-4"].objects[0], blob())
    assert np.array_equal(by_key["task-9"].objects[0], blob())  # the ground-truth annotation wins
    assert report.tasks == 10 and report.tasks_used == 5 and report.objects == 5
    reasons = {(s.task, s.reason.split(":")[0]) for s in report.skipped}
    assert {
        (3, "negative keypoint without a mask"),
        (5, "annotation cancelled"),
        (6, "image unavailable"),
        (7, "unsupported region type"),
        (7, "no usable objects"),
        (8, "unusable brushlabels"),
        (10, "no annotations"),
    } <= reasons
    saved, saved_report = read_manifest(tmp_path / "cache")
    assert saved == records and saved_report["tasks_used"] == 5


def test_label_filter_and_image_key(picture, tmp_path):
    _, path = picture
    tasks = [
        {
            "id": 1,
            "data": {"photo": str(path), "note": "x"},
            "annotations": [annotation(brush_region(blob(), "Cat"), brush_region(blob(), "Dog"))],
        }
    ]
    fetch = image_fetcher(LabelStudioSettings(), local_root=tmp_path)
    records, report = import_tasks(tasks, fetch, tmp_path / "c", image_key="photo", labels=["Cat"])
    assert len(records) == 1 and len(records[0].mask_paths) == 1
    assert any("label not selected" in s.reason for s in report.skipped)
    _, report = import_tasks(tasks, fetch, tmp_path / "d", image_key="nope")
    assert report.tasks_used == 0 and "no image URL" in report.skipped[0].reason


class FakeLabelStudio(QuietHandler):
    """Project 7 has the export endpoint, project 8 only the paginated tasks API; uploads need the token."""

    tasks: list = []
    image: bytes = b""

    def do_GET(self):  # noqa: N802
        if self.headers.get("Authorization") != "Token secret":
            return self.send_json(401, {"detail": "no"})
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if url.path == "/api/projects/7/export":
            return self.send_json(200, self.tasks)
        if url.path == "/api/tasks" and query.get("project") == ["8"]:
            page, size = int(query["page"][0]), int(query["page_size"][0])
            chunk = self.tasks[(page - 1) * size : page * size]
            return self.send_json(200, {"tasks": chunk, "total": len(self.tasks)})
        if url.path == "/data/upload/7/picture.png":
            return self.send_body(200, self.image, {"Content-Type": "image/png"})
        return self.send_json(404, {})


@pytest.fixture()
def label_studio(picture):
    image, path = picture
    FakeLabelStudio.image = path.read_bytes()
    FakeLabelStudio.tasks = [
        task(i, "/data/upload/7/picture.png", annotation(brush_region(blob()))) for i in range(1, 131)
    ]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeLabelStudio)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", image
    server.shutdown()


def test_project_through_the_api(label_studio, tmp_path):
    url, image = label_studio
    exported = fetch_tasks(url, "secret", 7)
    paginated = fetch_tasks(url, "secret", 8)  # no export endpoint: the tasks API, two pages
    assert len(exported) == len(paginated) == 130 and [t["id"] for t in paginated] == list(range(1, 131))
    settings = LabelStudioSettings(url=url, api_key="secret")
    records, report = import_tasks(exported[:2], image_fetcher(settings, project=7), tmp_path / "c")
    assert report.tasks_used == 2 and np.array_equal(records[0].load().image, image)
    # a job for project 8 does not send the key for project 7's uploads
    _, report = import_tasks(exported[:1], image_fetcher(settings, project=8), tmp_path / "e")
    assert report.tasks_used == 0 and "not an upload of the request's project" in report.skipped[0].reason
    with pytest.raises(LabelStudioError, match="401"):
        fetch_tasks(url, "wrong", 7)
    with pytest.raises(LabelStudioError, match="API key"):
        fetch_tasks(url, "", 7)
    _, report = import_tasks(
        exported[:1], image_fetcher(LabelStudioSettings()), tmp_path / "d"
    )  # no key: the image cannot be fetched
    assert report.tasks_used == 0 and report.skipped[0].reason.startswith("image unavailable")


def test_local_files_only_for_exports_inside_their_root_and_size_cap(picture, tmp_path):
    """A job from Label Studio (a project, no export) reads no local file; an export's reads stay in its folder."""
    _, path = picture
    outside = tmp_path.parent / f"{tmp_path.name}-outside.png"
    outside.write_bytes(path.read_bytes())
    tasks = [
        task(1, str(path), annotation(brush_region(blob()))),
        task(2, path.as_uri(), annotation(brush_region(blob()))),
        task(3, "file:///dev/zero", annotation(brush_region(blob()))),
        task(4, str(outside), annotation(brush_region(blob()))),
        task(5, "../" + outside.name, annotation(brush_region(blob()))),
    ]
    _, report = import_tasks(tasks, image_fetcher(LabelStudioSettings(), project=3), tmp_path / "a")
    assert report.tasks_used == 0
    assert all(
        "only the operator's own --ls-export" in s.reason for s in report.skipped if s.reason != "no usable objects"
    )
    records, report = import_tasks(tasks, image_fetcher(LabelStudioSettings(), local_root=tmp_path), tmp_path / "b")
    assert sorted(r.key for r in records) == ["task-1", "task-2"]
    reasons = {s.task: s.reason for s in report.skipped}
    assert "outside" in reasons[3] and "outside" in reasons[4] and "outside" in reasons[5]
    small = LabelStudioSettings(limits=ImageLimits(max_bytes=100))
    _, report = import_tasks(tasks[:1], image_fetcher(small, local_root=tmp_path), tmp_path / "c")
    assert "larger than" in report.skipped[0].reason
