"""Draw the README's picture: the embedded ``baseline`` predictor's masks on a GrabCut image after 1, 2 and 3 clicks.

The clicks are the NoC protocol's simulated annotator (``evaluation.simulation.simulate``), so the picture shows what
``adaptiveclick evaluate --predictor baseline`` measures: each click goes to the middle of the larger error region,
green for a positive click, red for a negative one. Needs no weights and no GPU.

    PYTHONPATH=. .venv/bin/python docs/make_picture.py                      # writes docs/images/clicks.png
    PYTHONPATH=. .venv/bin/python docs/make_picture.py --image person8 --out /tmp/clicks.png

The dataset is read from ``$ADAPTIVECLICK_DATASETS/GrabCut``, else ``../shared/datasets/GrabCut`` next to the
repository (``data_GT/<id>.jpg``, ``boundary_GT/<id>.bmp``; 128 in a mask marks pixels to ignore).
"""

from __future__ import annotations

import argparse
import io
import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from adaptiveclick.evaluation.datasets.grabcut import GrabCutDataset
from adaptiveclick.evaluation.simulation import SimulatedStep, simulate
from adaptiveclick.model import load_predictor

REPO = Path(__file__).resolve().parents[1]
MASK_COLOUR = np.array([30, 144, 255], dtype=np.float32)  # the overlay, RGB
MASK_ALPHA = 0.45


def datasets_root() -> Path:
    """``$ADAPTIVECLICK_DATASETS``, else ``../shared/datasets`` relative to the repository root."""
    env = os.environ.get("ADAPTIVECLICK_DATASETS")
    return Path(env) if env else REPO.parent / "shared" / "datasets"


def overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``image`` [H, W, 3] uint8 with ``mask`` [H, W] bool tinted in :data:`MASK_COLOUR`."""
    out = image.astype(np.float32)
    out[mask] = (1 - MASK_ALPHA) * out[mask] + MASK_ALPHA * MASK_COLOUR
    return out.round().astype(np.uint8)


def draw(image: np.ndarray, steps: list[SimulatedStep], width_px: int) -> bytes:
    """One panel per step, side by side: the mask overlaid, its outline, the clicks so far; PNG bytes."""
    h, w = image.shape[:2]
    dpi = 100
    panel_w = width_px / dpi / len(steps)
    title_h = 0.35
    fig = Figure(figsize=(width_px / dpi, panel_w * h / w + title_h), dpi=dpi)  # no pyplot: no GUI backend
    axes = fig.subplots(1, len(steps), squeeze=False)
    for ax, step in zip(axes[0], steps):
        ax.imshow(overlay(image, step.mask))
        ax.contour(step.mask.astype(np.uint8), levels=[0.5], colors=["white"], linewidths=1.0)
        for click in step.clicks:
            ax.plot(
                click.x,
                click.y,
                "o",
                markersize=9,
                markerfacecolor="#2ECC40" if click.is_positive else "#FF4136",
                markeredgecolor="white",
                markeredgewidth=1.5,
            )
        n = len(step.clicks)
        ax.set_title(f"{n} click{'s' if n > 1 else ''}: IoU {step.iou:.2f}", fontsize=11)
        ax.set_axis_off()
    fig.subplots_adjust(left=0.005, right=0.995, bottom=0.005, top=1 - title_h / fig.get_figheight(), wspace=0.02)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    # a palette of 256 colours keeps the file small (a photo in full RGB would be several times larger)
    picture = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    out = io.BytesIO()
    picture.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(out, format="PNG", optimize=True)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", default="tennis", help="GrabCut image id (a file name in data_GT/ without suffix)")
    parser.add_argument("--clicks", type=int, default=3, help="panels: the masks after 1, 2, ... N clicks")
    parser.add_argument("--width", type=int, default=1200, help="width of the picture in pixels")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "clicks.png")
    args = parser.parse_args()

    dataset = GrabCutDataset(datasets_root() / "GrabCut")
    if args.image not in dataset.image_ids:
        parser.error(f"no GrabCut image {args.image!r} under {dataset.root}")
    sample = dataset.samples_of(args.image)[0]  # GrabCut holds one object per image
    predictor = load_predictor("baseline")
    steps = list(simulate(predictor, sample, args.clicks))
    png = draw(sample.image, steps, args.width)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(png)
    ious = ", ".join(f"{step.iou:.3f}" for step in steps)
    print(f"{args.out}: {sample.name}, {predictor.model_version}, IoU after each click {ious}, {len(png) // 1024} KiB")


if __name__ == "__main__":
    main()
