"""What a box gives: box-to-mask IoU against the ground truth on GrabCut and Berkeley, ms per box, and the annotate
job's tasks per minute.

Every ground-truth object's bounding box becomes a Label Studio rectangle (percent of the image) and is segmented
as the service segments it (:class:`labelstudio.protocol.BoxPrompt` to pixels, then
:func:`model.box_segmenter.segment_boxes`: the box's clicks step by step with the box beside them, the mask cut to
the box). One Markdown table per predictor: per dataset and method the objects, IoU mean / median / min / share
above 0.8, and milliseconds per box (median; the image's ``set_image`` not included). A predictor that uses the box
itself (the baseline: GrabCut's rectangle initialisation) is also run with the box withheld, its clicks alone (what
it did before), side by side on the same boxes.

``--batch-sizes 1,8`` adds, for a predictor that batches (AdaptiveClick on a GPU), the time per box with
``--boxes-per-image`` boxes on each image (the object's box and shifted copies of it) run that many at a time.

``--annotate-project N`` (with LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY) times the annotate job itself on a Label
Studio project: it runs ``adaptiveclick annotate`` (in this process, rate limit ``--rate``) with a throwaway model
version, prints its summary's tasks per minute, and deletes that version's predictions again.

    adaptiveclick benchmark boxes
    adaptiveclick benchmark boxes --predictors baseline,weights/adaptiveclick_base448_sbd.pth#device=cuda \\
        --batch-sizes 1,8
    adaptiveclick benchmark boxes --annotate-project 7 --datasets none
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from adaptiveclick.evaluation.datasets import BerkeleyDataset, GrabCutDataset
from adaptiveclick.labelstudio.protocol import BoxPrompt
from adaptiveclick.model.box_segmenter import segment_boxes
from adaptiveclick.model.loading import load_predictor
from adaptiveclick.model.zoom_in import mask_bbox

DATASETS = {"GrabCut": GrabCutDataset, "Berkeley": BerkeleyDataset}
#: (name, the box withheld): the predictor's own use of the box, then the box's clicks alone
METHODS = (("box (rectangle initialisation)", False), ("box to clicks", True))


def add_arguments(parser) -> None:
    parser.add_argument("--predictors", default="baseline", help="comma-separated predictor specs (default baseline)")
    parser.add_argument("--datasets", default="GrabCut,Berkeley", help="comma-separated, or 'none' (default both)")
    parser.add_argument("--limit", type=int, default=0, help="objects per dataset (default 0: all)")
    parser.add_argument("--batch-sizes", default="", help="e.g. 1,8: time boxes batched per forward pass")
    parser.add_argument("--boxes-per-image", type=int, default=8, help="boxes per image for --batch-sizes (8)")
    parser.add_argument("--annotate-project", type=int, help="time the annotate job on this Label Studio project")
    parser.add_argument("--rate", type=float, default=10.0, help="the job's Label Studio calls per second (10)")


def main(args) -> int:
    from .common import machine_line, print_table  # (its module imports torch)

    print(f"machine: {machine_line()}")
    names = [] if args.datasets.strip().lower() == "none" else [n.strip() for n in args.datasets.split(",") if n]
    for spec in [s.strip() for s in args.predictors.split(",") if s.strip()]:
        predictor = load_predictor(spec)
        methods = METHODS if predictor.takes_box else METHODS[1:]
        rows = [row for name in names for row in _dataset_rows(predictor, name, Path(args.data_root), args, methods)]
        if rows:
            headers = ["dataset", "method", "objects", "IoU mean", "median", "min", "IoU > 0.8", "ms per box (median)"]
            print_table(headers, rows, f"Box to mask, {spec} ({predictor.model_version})")
        sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
        if sizes and names:
            rows = _batch_rows(predictor, Path(args.data_root) / names[0], names[0], sizes, args.boxes_per_image)
            print_table(["batch", "boxes", "ms per box", "speed-up"], rows, f"{spec}: boxes per forward pass")
    if args.annotate_project is not None:
        print_table(*_annotate_rows(args), "The annotate job on Label Studio")
    return 0


def label_studio_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """The object's bounding box as a Label Studio rectangle, back in pixels as the service reads it."""
    top, bottom, left, right = mask_bbox(mask)
    h, w = mask.shape
    percent = BoxPrompt(left * 100 / w, top * 100 / h, (right - left + 1) * 100 / w, (bottom - top + 1) * 100 / h)
    return percent.pixels(h, w)


def _dataset_rows(predictor, name: str, data_root: Path, args, methods) -> list[list]:
    """One row per method: the IoU of every object's box-to-mask answer with its ground truth, and the time."""
    dataset = DATASETS[name](data_root / name)
    samples = [dataset[i] for i in range(len(dataset) if not args.limit else min(args.limit, len(dataset)))]
    ious: dict[str, list[float]] = {method: [] for method, _ in methods}
    ms: dict[str, list[float]] = {method: [] for method, _ in methods}
    for sample in samples:
        predictor.set_image(sample.image)
        valid = ~sample.ignore
        for method, as_clicks in methods:
            start = time.perf_counter()
            (answer,) = segment_boxes(predictor, [label_studio_box(sample.mask)], as_clicks=as_clicks)
            ms[method].append((time.perf_counter() - start) * 1e3)
            union = ((answer.mask | sample.mask) & valid).sum()
            ious[method].append((answer.mask & sample.mask & valid).sum() / max(1, union))
    rows = []
    for method, _ in methods:
        iou = np.asarray(ious[method])
        rows.append(
            [
                name,
                method,
                len(samples),
                f"{iou.mean():.3f}",
                f"{np.median(iou):.3f}",
                f"{iou.min():.3f}",
                f"{(iou > 0.8).mean():.0%}",
                f"{np.median(ms[method]):.0f}",
            ]
        )
    return rows


def _batch_rows(predictor, folder: Path, name: str, sizes: list[int], per_image: int) -> list[list]:
    dataset = DATASETS[name](folder)
    samples = [dataset[i] for i in range(min(10, len(dataset)))]
    rows, base = [], None
    for size in sizes:
        seconds, boxes = 0.0, 0
        for sample in samples:
            h, w = sample.mask.shape
            top, bottom, left, right = label_studio_box(sample.mask)
            shifts = [(dy, dx) for dy in (-6, 0, 6) for dx in (-6, 0, 6)][:per_image]
            group = [
                (max(0, top + dy), min(h - 1, bottom + dy), max(0, left + dx), min(w - 1, right + dx))
                for dy, dx in shifts
            ]
            predictor.set_image(sample.image)
            segment_boxes(predictor, group[:1], batch_size=1)  # warm-up: first-call allocations on this image
            start = time.perf_counter()
            segment_boxes(predictor, group, batch_size=size)
            _sync(predictor)
            seconds += time.perf_counter() - start
            boxes += len(group)
        ms = seconds / boxes * 1e3
        base = base or ms
        rows.append([size, boxes, f"{ms:.1f}", f"{base / ms:.2f}x"])
    return rows


def _sync(predictor) -> None:
    device = getattr(predictor, "device", None)
    if device is not None and device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def _annotate_rows(args) -> tuple[list[str], list[list]]:
    """Run the annotate job once on the project with a throwaway model version; its predictions are deleted."""
    from adaptiveclick.annotate.job import AnnotateOptions, run_annotate
    from adaptiveclick.labelstudio.auth import LabelStudioAuth
    from adaptiveclick.labelstudio.settings import LabelStudioSettings
    from adaptiveclick.model.spec import parse_spec

    settings = LabelStudioSettings.from_env()
    if not settings.connected:
        raise SystemExit("--annotate-project needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY")
    rows = []
    for spec in [s.strip() for s in args.predictors.split(",") if s.strip()]:
        version = f"benchmark-{int(time.time())}"
        with tempfile.TemporaryDirectory() as output:
            options = AnnotateOptions(
                project=args.annotate_project,
                output=Path(output),
                settings=settings,
                predictor=str(parse_spec(spec).with_options(version=version)),
                rate=args.rate,
                progress=False,
            )
            started = time.perf_counter()
            summary = run_annotate(options)
            wall = time.perf_counter() - started
        auth = LabelStudioAuth(settings.url or "", settings.api_key or "")
        auth.request(
            "DELETE",
            f"{auth.base_url}/api/projects/{args.annotate_project}/model-versions/",
            json={"model_version": version},
            timeout=120,
        )
        rows.append(
            [
                spec,
                summary["total"],
                summary["predicted"],
                summary["boxes"],
                f"{args.rate:g}",
                f"{summary['tasks_per_minute']:.1f}",
                f"{summary['predicted'] / wall * 60:.1f}",
            ]
        )
    headers = ["predictor", "tasks", "predicted", "boxes", "rate limit /s", "tasks/min (job)", "incl. start-up"]
    return headers, rows
