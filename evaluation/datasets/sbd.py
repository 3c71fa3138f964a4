"""SBD (Semantic Boundaries Dataset) instance annotations, the val split: one sample per object (6671 in all)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Annotation, DatasetError, InstanceDataset, require_dir


class SBDDataset(InstanceDataset):
    """SBD: ``img/<id>.jpg``, ``inst/<id>.mat`` (MATLAB struct ``GTinst`` whose ``Segmentation`` field is the
    instance label map, 0 background), ids in ``<split>.txt``; every non-zero label is one object, as RITM's
    ``SBDEvaluationDataset``."""

    name = "SBD"
    layout = "img/<id>.jpg, inst/<id>.mat (GTinst.Segmentation), <split>.txt"
    single_object = False

    def __init__(self, root: str | Path, split: str = "val") -> None:
        super().__init__(root)
        self.images = require_dir(self.root / "img", self.name, self.layout)
        self.insts = require_dir(self.root / "inst", self.name, self.layout)
        list_path = self.root / f"{split}.txt"
        if not list_path.is_file():
            raise DatasetError(f"{self.name}: no split list {list_path} (expected layout: {self.layout})")
        self.image_ids = [line.strip() for line in list_path.read_text().splitlines() if line.strip()]
        self.require_images()
        missing = [
            i
            for i in self.image_ids
            if not (self.images / f"{i}.jpg").is_file() or not (self.insts / f"{i}.mat").is_file()
        ]
        if missing:
            raise DatasetError(
                f"{self.name}: {len(missing)} image(s) of {list_path.name} lack img/<id>.jpg or "
                f"inst/<id>.mat, e.g. {', '.join(missing[:3])}"
            )

    def image_path(self, image_id: str) -> Path:
        return self.images / f"{image_id}.jpg"

    def read_annotation(self, image_id: str) -> Annotation:
        labels = read_instance_map(self.insts / f"{image_id}.mat")
        return Annotation(labels, [int(v) for v in np.unique(labels) if v != 0])


def read_instance_map(path: Path) -> np.ndarray:
    """``[H, W]`` int32: ``GTinst.Segmentation`` of an SBD ``inst/*.mat`` file."""
    from scipy.io import loadmat  # scipy.io takes a tenth of a second to import: only SBD needs it
    from scipy.io.matlab import MatReadError

    try:
        gtinst = loadmat(str(path))["GTinst"]
        labels = gtinst["Segmentation"][0, 0]
    except (MatReadError, OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise DatasetError(f"cannot read SBD instance annotation {path}: {exc}") from exc
    if labels.ndim != 2:
        raise DatasetError(f"SBD instance annotation {path}: Segmentation has shape {labels.shape}")
    return labels.astype(np.int32)
