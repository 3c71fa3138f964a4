"""Training data from Label Studio tasks (an exported JSON file or a project read through the API, see
:mod:`labelstudio.api`).

Each task contributes one annotation (the one marked ground truth, else the most recently updated one that was
not cancelled, :func:`labelstudio.regions.choose_annotation`). Its regions become instance masks
(:mod:`labelstudio.regions`):

* ``brushlabels`` and ``polygonlabels`` regions are the objects;
* ``keypointlabels``: in an annotation that also has masks they are the clicks that produced them, not objects;
  in an annotation made only of keypoints each positive keypoint becomes a small disk object (its drawn size,
  at least ``KEYPOINT_MIN_RADIUS`` px); negative keypoints (``is_positive: false``) never become objects.

Images are fetched as the backend fetches them (:class:`labelstudio.media.ImageFetcher`: Label Studio uploads with
the API key, only the project's own when the job is for a project; local-files, cloud storage through presigning,
http(s), data URIs), plus, for the operator's own exports only, ``file://`` URLs and plain local paths inside one
folder (``--ls-files-root``, default the export's folder) and within the image size cap: a job started from Label
Studio (``--ls-project``) reads no local file whatever its tasks say.
Everything that cannot be used (a cancelled annotation, an unsupported region, an image that cannot
be fetched, an RLE that does not fit, an empty mask...) is listed in the :class:`ImportReport` with its reason and
the import goes on.

Imported images and masks are written to a folder (PNG) with a ``manifest.json``, so training reads them lazily and
a resumed run trains on exactly the same data even if the project changed meanwhile.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import cv2
import numpy as np

from adaptiveclick.labelstudio.decode import decode_image
from adaptiveclick.labelstudio.media import OPERATOR_SCOPE, ImageFetcher, MediaScope
from adaptiveclick.labelstudio.regions import MASK_TYPES, choose_annotation, is_positive, keypoint_disk, region_mask
from adaptiveclick.labelstudio.settings import LabelStudioSettings
from adaptiveclick.storage.files import atomic_write

from .data import MIN_OBJECT_AREA, CachedImageRecord

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"

ImageFetch = Callable[[str, Any], np.ndarray]  # (url, task id) -> [H, W, 3] uint8 RGB


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
        return {
            "tasks": self.tasks,
            "tasks_used": self.tasks_used,
            "objects": self.objects,
            "skipped_by_reason": self.reasons(),
            "skipped": [asdict(s) for s in self.skipped],
        }


# -- images ---------------------------------------------------------------------------------------------------


def image_fetcher(
    settings: LabelStudioSettings, project: int | None = None, local_root: Path | None = None
) -> ImageFetch:
    """The backend's image fetcher (Label Studio, local-files, cloud, http, data:), for ``project``'s tasks (its
    uploads only get the key; None: an export of the operator's, every project), plus ``file://`` URLs and plain
    paths inside ``local_root`` (None: no local file at all)."""
    fetcher = ImageFetcher.from_settings(settings)
    scope = OPERATOR_SCOPE if project is None else MediaScope(project)
    root = None if local_root is None else Path(local_root).resolve()

    def fetch(url: str, task_id=None) -> np.ndarray:
        if is_local(url):
            if root is None:
                raise ValueError(
                    "a local file (file:// or a plain path) in a task from Label Studio: only the operator's own "
                    "--ls-export tasks may name local files"
                )
            return decode_image(read_local(url, root, fetcher.limits.max_bytes), fetcher.limits, source=url[:200])
        return fetcher.fetch(url, task_id if isinstance(task_id, int) else None, scope)

    return fetch


def is_local(url: str) -> bool:
    """A ``file://`` URL or a plain path (not a Label Studio path, not a URL)."""
    parsed = urlparse(url)
    return parsed.scheme == "file" or (not parsed.scheme and not url.startswith(("/data/", "upload/", "/upload/")))


def read_local(url: str, root: Path, max_bytes: int) -> bytes:
    """The bytes of the file a ``file://`` URL or a plain path (relative to ``root``) names, which must lie inside
    ``root`` and be at most ``max_bytes`` (ValueError saying why not)."""
    parsed = urlparse(url)
    path = Path(url2pathname(parsed.path)) if parsed.scheme == "file" else Path(url)
    try:
        target = (root / path).resolve()  # an absolute path replaces root; resolving follows links
        if not target.is_relative_to(root):
            raise ValueError(f"local file {url[:200]!r} lies outside {root} (--ls-files-root)")
        if not target.is_file():
            raise ValueError(f"local file {url[:200]!r} is not a file")
        if target.stat().st_size > max_bytes:
            raise ValueError(
                f"local file {url[:200]!r} is larger than {max_bytes >> 20} MiB (ADAPTIVECLICK_MAX_IMAGE_MB)"
            )
        with open(target, "rb") as f:
            return f.read(max_bytes + 1)
    except OSError as exc:
        raise ValueError(f"local file {url[:200]!r} cannot be read: {exc.strerror or type(exc).__name__}") from None


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
    return lowered.startswith(
        ("data:image", "/data/", "http://", "https://", "s3://", "gs://", "file://")
    ) or lowered.split("?")[0].endswith((".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"))


# -- regions to masks -----------------------------------------------------------------------------------------


def annotation_objects(
    task_id, annotation: dict, height: int, width: int, report: ImportReport
) -> list[tuple[np.ndarray, str]]:
    """``[(mask, label)]`` of one annotation; unusable regions go to the report."""
    regions = [r for r in annotation.get("result") or [] if isinstance(r, dict)]
    has_masks = any(str(r.get("type", "")).lower() in MASK_TYPES for r in regions)
    objects = []
    for region in regions:
        kind = str(region.get("type", "")).lower()
        labels = (region.get("value") or {}).get(kind) or [""]
        skip = functools.partial(report.skip, task_id, annotation=annotation.get("id"), region=region.get("id"))
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


def import_tasks(
    tasks: Iterable[dict],
    fetch: ImageFetch,
    out_dir: str | Path,
    image_key: str | None = None,
    labels: Iterable[str] | None = None,
) -> tuple[list[CachedImageRecord], ImportReport]:
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
            for _, label in objects:
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
    log.info(
        "imported Label Studio tasks",
        extra={
            "tasks": report.tasks,
            "used": report.tasks_used,
            "objects": report.objects,
            "skipped": report.reasons(),
        },
    )
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
    records = [
        CachedImageRecord(r["key"], r["group"], r["image_path"], tuple(r["mask_paths"])) for r in manifest["records"]
    ]
    return records, manifest["report"]
