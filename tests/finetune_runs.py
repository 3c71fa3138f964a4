"""Fine-tune runs the tests share: a Label Studio export made from GrabCut's masks, and the command line of a small
fine-tune on GrabCut with a tiny network on the CPU (the integration and end-to-end tiers both run them)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from ls_regions import brush_region


def grabcut_export(data_root: Path, path: Path, count: int = 8) -> Path:
    """A Label Studio JSON export whose brush annotations are GrabCut's object masks; the images are copied next
    to it (``images/``) and named by relative paths, as an export's local files must lie in its folder."""
    from adaptiveclick.evaluation.datasets import open_dataset

    dataset = open_dataset("GrabCut", data_root)
    (path.parent / "images").mkdir(parents=True, exist_ok=True)
    tasks = []
    for task_id, image_id in enumerate(dataset.image_ids[:count], start=1):
        source = Path(dataset.image_path(image_id))
        shutil.copy(source, path.parent / "images" / source.name)
        region = brush_region(dataset.read_annotation(image_id).labels > 0, id=f"r{task_id}")
        tasks.append(
            {
                "id": task_id,
                "data": {"image": f"images/{source.name}"},
                "annotations": [{"id": task_id, "result": [region], "was_cancelled": False}],
            }
        )
    path.write_text(json.dumps(tasks))
    return path


def finetune_command(*args: str, output: Path, data_root: Path | None = None, export: Path | None = None) -> list[str]:
    """``python -m adaptiveclick finetune`` with a tiny network, small and on the CPU, on GrabCut under ``data_root``
    or on a Label Studio ``export``; ``args`` come last (and win over the defaults here: argparse keeps an option's
    last value)."""
    source = (
        ["--ls-export", str(export)] if export is not None else ["--dataset", "GrabCut", "--data-root", str(data_root)]
    )
    return [
        sys.executable,
        "-m",
        "adaptiveclick",
        "finetune",
        *source,
        "--init",
        "random:tiny",
        "--output",
        str(output),
        "--batch-size",
        "1",
        "--input-size",
        "96",
        "--workers",
        "0",
        "--val-fraction",
        "0.1",
        "--val-max-images",
        "1",
        "--val-clicks",
        "2",
        "--no-progress",
        "--device",
        "cpu",
        *args,
    ]
