"""Training data from Label Studio: an exported JSON file or a project read through the API.

Each task contributes one annotation (the one marked ground truth, else the most recently updated one that was
not cancelled). Its regions become instance masks:

* ``brushlabels`` with RLE (decoded with :func:`backend.rle.decode_rle` at the region's original size);
* ``polygonlabels``: vertices in percent of the image, filled;
* ``keypointlabels``: in an annotation that also has masks they are the clicks that produced them, not objects;
  in an annotation made only of keypoints each positive keypoint becomes a small disk object (its drawn size,
  at least ``KEYPOINT_MIN_RADIUS`` px); negative keypoints (``is_positive: false``) never become objects.

Images are fetched as the backend fetches them (:class:`backend.images.ImageFetcher`: Label Studio uploads with
the API key, local-files, cloud storage through presigning, http(s), data URIs), plus ``file://`` URLs and plain
local paths. Everything that cannot be used (a cancelled annotation, an unsupported region, an image that cannot
be fetched, an RLE that does not fit, an empty mask...) is listed in the :class:`ImportReport` with its reason and
the import goes on.

Imported images and masks are written to a folder (PNG) with a ``manifest.json``, so training reads them lazily and
a resumed run trains on exactly the same data even if the project changed meanwhile.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import urlparse
from urllib.request import url2pathname

import cv2
import numpy as np

from model.files import atomic_write

from .data import MIN_OBJECT_AREA, CachedImageRecord

log = logging.getLogger(__name__)

KEYPOINT_MIN_RADIUS = 5  # px; a keypoint-only object must survive the training crops (MIN_OBJECT_AREA)
MASK_TYPES = ("brushlabels", "polygonlabels")
MANIFEST = "manifest.json"

ImageFetch = Callable[[str, Any], np.ndarray]  # (url, task id) -> [H, W, 3] uint8 RGB


class LabelStudioError(RuntimeError):
    """Label Studio cannot be read (bad URL, key, project id) or the export is not Label Studio JSON."""


@dataclass(frozen=True)
class Skipped:
    task: Any
    reason: str
    annotation: Any = None
    region: Any = None


@dataclass
class ImportReport:
    tasks: int = 0
    tasks_used: int = 0
    objects: int = 0
    skipped: list[Skipped] = field(default_factory=list)

    def skip(self, task, reason: str, annotation=None, region=None) -> None:
        self.skipped.append(Skipped(task, reason, annotation, region))

    def reasons(self) -> dict[str, int]:
        return dict(Counter(s.reason.split(":")[0] for s in self.skipped))

    def to_json(self) -> dict:
        return {"tasks": self.tasks, "tasks_used": self.tasks_used, "objects": self.objects,
                "skipped_by_reason": self.reasons(), "skipped": [asdict(s) for s in self.skipped]}


# -- reading tasks ------------------------------------------------------------------------------------------------

def load_export(path: str | Path) -> list[dict]:
    """Tasks of a Label Studio JSON export file."""
    try:
        content = json.loads(Path(path).read_text())
    except OSError as exc:
        raise LabelStudioError(f"cannot read Label Studio export {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise LabelStudioError(f"{path} is not JSON: {exc}") from None
    return check_tasks(content, str(path))


def check_tasks(content: Any, source: str) -> list[dict]:
    if isinstance(content, dict) and isinstance(content.get("tasks"), list):
        content = content["tasks"]
    if not isinstance(content, list) or not all(isinstance(t, dict) for t in content):
        raise LabelStudioError(f"{source} is not a Label Studio JSON export (expected a list of tasks)")
    return content


def fetch_tasks(url: str, api_key: str, project: int | str, timeout: float = 120.0) -> list[dict]:
    """A project's tasks through the API: the JSON export endpoint, else the paginated tasks API."""
    from backend.ls_auth import LabelStudioAuth

    if not url or not api_key:
        raise LabelStudioError("reading a Label Studio project needs its URL and an API key "
                               "(--ls-url/LABEL_STUDIO_URL, --ls-api-key/LABEL_STUDIO_API_KEY)")
    auth = LabelStudioAuth(url, api_key, timeout=timeout)
    base = auth.base_url
    response = _get(auth, f"{base}/api/projects/{project}/export?exportType=JSON&download_all_tasks=false",
                    timeout)
    if response.status_code == 200:
        return check_tasks(response.json(), f"project {project} export")
    if response.status_code not in (404, 405):
        raise _http_error(response, project)
    tasks, page = [], 1
    while True:  # older/locked-down servers: the tasks API, 100 at a time
        response = _get(auth, f"{base}/api/tasks?project={project}&fields=all&page={page}&page_size=100", timeout)
        if response.status_code == 404 and page > 1:
            break
        if response.status_code != 200:
            raise _http_error(response, project)
        body = response.json()
        batch = body.get("tasks", []) if isinstance(body, dict) else body
        tasks += check_tasks(batch, f"project {project} tasks page {page}")
        if not batch or (isinstance(body, dict) and len(tasks) >= int(body.get("total", len(tasks)))):
            break
        page += 1
    return tasks


def _get(auth, url: str, timeout: float):
    import requests

    try:
        return auth.get(url, timeout=timeout)
    except PermissionError as exc:
        raise LabelStudioError(str(exc)) from None
    except requests.RequestException as exc:
        raise LabelStudioError(f"cannot reach Label Studio at {auth.base_url}: {exc.__class__.__name__}") from None


def _http_error(response, project) -> LabelStudioError:
    hint = {401: " (check the API key)", 403: " (check the API key)", 404: f" (is {project} a project id?)"}
    return LabelStudioError(f"Label Studio answered {response.status_code} for project {project}"
                            f"{hint.get(response.status_code, '')}")


# -- images ---------------------------------------------------------------------------------------------------

def image_fetcher(ls_url: str | None = None, api_key: str | None = None) -> ImageFetch:
    """The backend's image fetcher (Label Studio, local-files, cloud, http, data:) plus file:// and local paths."""
    from backend.images import ImageFetcher, decode_image
    from backend.ls_auth import LabelStudioAuth

    auth = LabelStudioAuth(ls_url, api_key) if ls_url and api_key else None
    root = os.environ.get("LOCAL_FILES_DOCUMENT_ROOT")
    fetcher = ImageFetcher(auth, Path(root) if root else None)

    def fetch(url: str, task_id=None) -> np.ndarray:
        local = local_path(url)
        if local is not None:
            return decode_image(local.read_bytes(), fetcher.max_pixels, source=url)
        return fetcher.fetch(url, task_id)

    return fetch


def local_path(url: str) -> Path | None:
    """The file a ``file://`` URL or an existing plain path names (None for anything else)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return Path(url2pathname(parsed.path))
    if not parsed.scheme and not url.startswith("/data/") and Path(url).is_file():
        return Path(url)
    return None


def task_image_url(task: dict, image_key: str | None = None) -> str:
    data = task.get("data") or {}
    if image_key:
        value = data.get(image_key)
    elif isinstance(data.get("image"), str):
        value = data["image"]
    else:
        value = next((v for v in data.values() if isinstance(v, str) and _looks_like_image(v)), None)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"no image URL in task data (keys: {', '.join(map(str, data)) or 'none'})")
    return value.strip()


def _looks_like_image(value: str) -> bool:
    lowered = value.lower()
    return lowered.startswith(("data:image", "/data/", "http://", "https://", "s3://", "gs://", "file://")) or \
        lowered.split("?")[0].endswith((".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"))


# -- regions to masks -----------------------------------------------------------------------------------------

def choose_annotation(task: dict) -> tuple[dict | None, str]:
    """The annotation to train on, or ``(None, reason)``."""
    annotations = [a for a in task.get("annotations") or [] if isinstance(a, dict)]
    if not annotations:
        return None, "no annotations"
    usable = [a for a in annotations if not a.get("was_cancelled")]
    if not usable:
        return None, "annotation cancelled"
    truth = [a for a in usable if a.get("ground_truth")]
    pool = truth or usable
    return max(pool, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), a.get("id") or 0)), ""


def is_positive(region: dict) -> bool:
    value = region.get("value") or {}
    flag = region.get("is_positive", value.get("is_positive", True))
    return flag is not False


def region_mask(region: dict, height: int, width: int) -> np.ndarray:
    """``[height, width]`` bool mask of a brush or polygon region; ValueError says why it cannot be made."""
    from backend.rle import decode_rle

    kind = str(region.get("type", "")).lower()
    value = region.get("value") or {}
    if float(region.get("image_rotation") or 0) != 0:
        raise ValueError(f"image_rotation {region.get('image_rotation')} is not supported")
    if kind == "brushlabels":
        if value.get("format", "rle") != "rle" or not isinstance(value.get("rle"), list):
            raise ValueError(f"brush format {value.get('format')!r} is not RLE")
        h, w = int(region.get("original_height") or height), int(region.get("original_width") or width)
        mask = decode_rle(value["rle"], h, w)
        if (h, w) != (height, width):
            if abs(h / w - height / width) > 0.01:
                raise ValueError(f"brush mask is {w}x{h} but the image is {width}x{height}")
            mask = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
        return mask
    if kind == "polygonlabels":
        points = np.asarray(value.get("points") or [], dtype=np.float64)
        if points.ndim != 2 or points.shape[0] < 3 or points.shape[1] != 2:
            raise ValueError("polygon has fewer than 3 points")
        return polygon_mask(points[:, 0] * width / 100, points[:, 1] * height / 100, height, width)
    raise ValueError(f"unsupported region type {kind or 'unknown'}")


def polygon_mask(xs: np.ndarray, ys: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pixels whose centre lies inside the polygon (vertices in continuous image coordinates, pixel (i, j)
    covering ``[j, j+1) x [i, i+1)``), tested only within the polygon's bounding box."""
    from matplotlib.path import Path as Polygon

    mask = np.zeros((height, width), bool)
    x0, x1 = max(0, int(np.floor(xs.min()))), min(width, int(np.ceil(xs.max())) + 1)
    y0, y1 = max(0, int(np.floor(ys.min()))), min(height, int(np.ceil(ys.max())) + 1)
    if x0 >= x1 or y0 >= y1:
        return mask
    yy, xx = np.mgrid[y0:y1, x0:x1]
    centres = np.stack([xx.ravel() + 0.5, yy.ravel() + 0.5], axis=1)
    inside = Polygon(np.stack([xs, ys], axis=1)).contains_points(centres)
    mask[y0:y1, x0:x1] = inside.reshape(yy.shape)
    return mask


def keypoint_disk(region: dict, height: int, width: int) -> np.ndarray:
    value = region.get("value") or {}
    x, y = float(value["x"]) * width / 100, float(value["y"]) * height / 100
    radius = max(KEYPOINT_MIN_RADIUS, float(value.get("width") or 0) * width / 200)
    yy, xx = np.mgrid[:height, :width]
    return (yy + 0.5 - y) ** 2 + (xx + 0.5 - x) ** 2 <= radius**2


def annotation_objects(task_id, annotation: dict, height: int, width: int, report: ImportReport
                       ) -> list[tuple[np.ndarray, str]]:
    """``[(mask, label)]`` of one annotation; unusable regions go to the report."""
    regions = [r for r in annotation.get("result") or [] if isinstance(r, dict)]
    has_masks = any(str(r.get("type", "")).lower() in MASK_TYPES for r in regions)
    objects = []
    for region in regions:
        kind = str(region.get("type", "")).lower()
        labels = (region.get("value") or {}).get(kind) or [""]
        skip = lambda reason: report.skip(task_id, reason, annotation.get("id"), region.get("id"))  # noqa: E731
        try:
            if kind in MASK_TYPES:
                mask = region_mask(region, height, width)
            elif kind == "keypointlabels":
                if has_masks:
                    continue  # the clicks that produced the masks
                if not is_positive(region):
                    skip("negative keypoint without a mask")
                    continue
                mask = keypoint_disk(region, height, width)
            else:
                skip(f"unsupported region type: {kind or 'unknown'}")
                continue
        except (ValueError, KeyError, TypeError) as exc:
            skip(f"unusable {kind or 'region'}: {exc}")
            continue
        if mask.sum() < MIN_OBJECT_AREA:
            skip(f"object smaller than {MIN_OBJECT_AREA} pixels")
            continue
        objects.append((mask, str(labels[0])))
    return objects


# -- the import -----------------------------------------------------------------------------------------------

def import_tasks(tasks: Iterable[dict], fetch: ImageFetch, out_dir: str | Path, image_key: str | None = None,
                 labels: Iterable[str] | None = None) -> tuple[list[CachedImageRecord], ImportReport]:
    """Turn tasks into cached image records under ``out_dir`` (and write its manifest).

    Args:
        labels: only regions with one of these labels become objects (default: all).
    """
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    wanted = set(labels) if labels else None
    report, records = ImportReport(), []
    for task in tasks:
        report.tasks += 1
        task_id = task.get("id", report.tasks)
        annotation, reason = choose_annotation(task)
        if annotation is None:
            report.skip(task_id, reason)
            continue
        try:
            url = task_image_url(task, image_key)
            image = fetch(url, task_id)
        except Exception as exc:  # any fetch/decoding failure skips the task, the import goes on
            report.skip(task_id, f"image unavailable: {exc}", annotation.get("id"))
            continue
        height, width = image.shape[:2]
        objects = annotation_objects(task_id, annotation, height, width, report)
        if wanted is not None:
            for mask, label in objects:
                if label not in wanted:
                    report.skip(task_id, f"label not selected: {label}", annotation.get("id"))
            objects = [(m, lab) for m, lab in objects if lab in wanted]
        if not objects:
            report.skip(task_id, "no usable objects", annotation.get("id"))
            continue
        records.append(_save(out, task_id, image, [m for m, _ in objects]))
        report.tasks_used += 1
        report.objects += len(objects)
    write_manifest(out, records, report)
    log.info("imported Label Studio tasks", extra={"tasks": report.tasks, "used": report.tasks_used,
                                                   "objects": report.objects, "skipped": report.reasons()})
    return records, report


def _save(out: Path, task_id, image: np.ndarray, masks: list[np.ndarray]) -> CachedImageRecord:
    stem = f"task-{task_id}-{hashlib.sha256(str(task_id).encode()).hexdigest()[:8]}"
    image_path = out / "images" / f"{stem}.png"
    cv2.imwrite(str(image_path), np.ascontiguousarray(image[:, :, ::-1]))
    mask_paths = []
    for k, mask in enumerate(masks):
        path = out / "masks" / f"{stem}-{k}.png"
        cv2.imwrite(str(path), mask.astype(np.uint8) * 255)
        mask_paths.append(str(path))
    return CachedImageRecord(f"task-{task_id}", f"task-{task_id}", str(image_path), tuple(mask_paths))


def write_manifest(out: Path, records: list[CachedImageRecord], report: ImportReport) -> None:
    manifest = {"records": [asdict(r) for r in records], "report": report.to_json()}
    atomic_write(out / MANIFEST, lambda f: f.write(json.dumps(manifest, indent=1, default=str).encode()))


def read_manifest(out_dir: str | Path) -> tuple[list[CachedImageRecord], dict]:
    """Records and the report (as JSON) of a previous import."""
    manifest = json.loads((Path(out_dir) / MANIFEST).read_text())
    records = [CachedImageRecord(r["key"], r["group"], r["image_path"], tuple(r["mask_paths"]))
               for r in manifest["records"]]
    return records, manifest["report"]
