"""Training data: annotated images from any source, the train/validation split and the click-training dataset.

An *image record* names one annotated image and loads it on demand (so that a project's images are not all held
in memory): :class:`DatasetImageRecord` for RITM-layout benchmark folders (the evaluation loaders),
:class:`CachedImageRecord` for images and masks saved on disk (Label Studio imports, see
:mod:`finetune.labelstudio`). Records carry a *group* (the Label Studio task, the dataset image) and the split is
made by group, from a hash of its name: a task keeps its split when a project grows, so validation tasks of one
fine-tune never become training tasks of the next.

:class:`ClickTrainingSet` is indexed by a *sample position* (0, 1, 2, ... over the whole run). The position alone
decides which image (epochs are seeded permutations) and every random choice for it, so a run resumed from a
checkpoint sees exactly the data the uninterrupted run would have seen, whatever the number of processes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .augment import AugmentConfig, augment
from .click_sampling import ClickSampler

MIN_OBJECT_AREA = 20  # pixels; smaller objects left in a crop are dropped (reference min_object_area)
KEEP_BACKGROUND_PROB = 0.01  # chance to train on a crop in which no object is left
MAX_AUGMENT_TRIES = 20  # then the crop is placed on an object


@dataclass
class AnnotatedImage:
    """``image [H, W, 3]`` uint8 RGB, ``objects``: ``[H, W]`` bool masks, ``ignore [H, W]`` bool or None."""

    key: str
    image: np.ndarray
    objects: list[np.ndarray]
    ignore: np.ndarray | None = None


class ImageRecord(Protocol):
    key: str
    group: str

    def load(self) -> AnnotatedImage: ...


@lru_cache(maxsize=16)
def _open_dataset(name: str, root: str):
    from adaptiveclick.evaluation.datasets import dataset_info

    return dataset_info(name).loader(Path(root))


@dataclass(frozen=True)
class DatasetImageRecord:
    """One image of a RITM-layout dataset (GrabCut, Berkeley, SBD, ...) read through the evaluation loaders."""

    dataset: str
    root: str
    image_id: str
    key: str = ""
    group: str = ""

    def load(self) -> AnnotatedImage:
        from adaptiveclick.evaluation.datasets import read_rgb

        loader = _open_dataset(self.dataset, self.root)
        image = read_rgb(loader.image_path(self.image_id))
        annotation = loader.read_annotation(self.image_id)
        objects = [annotation.labels == obj for obj in annotation.object_ids]
        return AnnotatedImage(self.key or self.image_id, image, objects, annotation.ignore)


def dataset_records(
    name: str, data_root: str | Path | None = None, root: str | Path | None = None
) -> list[DatasetImageRecord]:
    """Records of every image of benchmark ``name`` (found as the evaluation CLI finds it, or at ``root``)."""
    from adaptiveclick.evaluation.datasets import dataset_info, resolve_dataset_root

    info = dataset_info(name)
    folder = Path(root) if root is not None else resolve_dataset_root(info, data_root)
    loader = info.loader(folder)
    return [
        DatasetImageRecord(
            info.name, str(folder), image_id, key=f"{info.name}/{image_id}", group=f"{info.name}/{image_id}"
        )
        for image_id in loader.image_ids
    ]


@dataclass(frozen=True)
class CachedImageRecord:
    """An image file and one PNG per object (nonzero = object) saved on disk."""

    key: str
    group: str
    image_path: str
    mask_paths: tuple[str, ...] = field(default_factory=tuple)

    def load(self) -> AnnotatedImage:
        image = cv2.imread(self.image_path, cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"cannot read cached image {self.image_path}")
        objects = []
        for path in self.mask_paths:
            mask = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
            if mask is None:
                raise ValueError(f"cannot read cached mask {path}")
            objects.append(mask > 0)
        return AnnotatedImage(self.key, np.ascontiguousarray(image[:, :, ::-1]), objects, None)


def records_to_json(records: Sequence[ImageRecord]) -> list[dict]:
    """A JSON-able description of records (saved with a run so that a resume trains on the same images)."""
    kinds = {DatasetImageRecord: "dataset", CachedImageRecord: "cached"}
    out = []
    for record in records:
        kind = kinds.get(type(record))
        if kind is None:
            raise TypeError(f"cannot save a {type(record).__name__} record")
        out.append({"kind": kind, **{k: list(v) if isinstance(v, tuple) else v for k, v in record.__dict__.items()}})
    return out


def records_from_json(items: Sequence[dict]) -> list[ImageRecord]:
    records: list[ImageRecord] = []
    for item in items:
        values = {k: v for k, v in item.items() if k != "kind"}
        if item.get("kind") == "dataset":
            records.append(DatasetImageRecord(**values))
        elif item.get("kind") == "cached":
            records.append(CachedImageRecord(**{**values, "mask_paths": tuple(values["mask_paths"])}))
        else:
            raise ValueError(f"unknown record kind {item.get('kind')!r}")
    return records


def split_fraction(group: str, seed: int = 0) -> float:
    """A stable number in [0, 1) for a group name."""
    digest = hashlib.sha256(f"{seed}:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_records(
    records: Sequence[ImageRecord], val_fraction: float, seed: int = 0
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """``(train, val)``: a group goes to validation when its hash falls below ``val_fraction``.

    With at least two groups and ``0 < val_fraction < 1`` neither side is left empty (the group with the
    smallest/largest hash moves over).
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    groups = sorted({r.group for r in records}, key=lambda g: (split_fraction(g, seed), g))
    val_groups = {g for g in groups if split_fraction(g, seed) < val_fraction}
    if val_fraction > 0 and len(groups) >= 2:
        if not val_groups:
            val_groups = {groups[0]}
        if len(val_groups) == len(groups):
            val_groups.discard(groups[-1])
    train = [r for r in records if r.group not in val_groups]
    val = [r for r in records if r.group in val_groups]
    return train, val


def validation_samples(records: Sequence[ImageRecord]):
    """Evaluation :class:`~evaluation.datasets.Sample` objects (one per object) of the records, loaded now."""
    from adaptiveclick.evaluation.datasets import Sample

    samples = []
    for record in records:
        item = record.load()
        ignore = np.zeros(item.image.shape[:2], bool) if item.ignore is None else item.ignore
        for k, mask in enumerate(item.objects):
            name = item.key if len(item.objects) == 1 else f"{item.key}#{k + 1}"
            samples.append(Sample(name, item.image, mask, ignore))
    return samples


def sample_rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


class ClickTrainingSet(Dataset):
    """Augmented crops with sampled clicks, indexed by sample position.

    Item: ``{"images": [3, S, S] float in [0, 1], "points": [2N, 3], "instances": [1, S, S] float,
    "valid": [1, S, S] float (0 where ignored)}``.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        sampler: ClickSampler,
        augment_config: AugmentConfig,
        seed: int = 0,
        train: bool = True,
    ) -> None:
        if not records:
            raise ValueError("no training images")
        self.records = list(records)
        self.sampler = sampler
        self.augment_config = augment_config
        self.seed = seed
        self.train = train
        self._permutations: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        """Images per epoch (positions themselves are unbounded)."""
        return len(self.records)

    def record_index(self, position: int) -> int:
        epoch, offset = divmod(int(position), len(self.records))
        if epoch not in self._permutations:
            if len(self._permutations) > 4:
                self._permutations.clear()
            order = (
                sample_rng(self.seed, 1, epoch).permutation(len(self.records))
                if self.train
                else np.arange(len(self.records))
            )
            self._permutations[epoch] = order
        return int(self._permutations[epoch][offset])

    def __getitem__(self, position: int) -> dict[str, torch.Tensor]:
        rng = sample_rng(self.seed, 2, int(position))
        item = self.records[self.record_index(position)].load()
        image, objects, ignore = self.augmented(item, rng)
        target = self.sampler.sample(objects, ignore, rng, shape=image.shape[:2])
        valid = np.ones(image.shape[:2], np.float32) if ignore is None else (~ignore).astype(np.float32)
        return {
            "images": torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0),
            "points": torch.from_numpy(target.points),
            "instances": torch.from_numpy(target.mask)[None],
            "valid": torch.from_numpy(valid)[None],
        }

    def augmented(self, item: AnnotatedImage, rng: np.random.Generator):
        """Augment until an object of at least MIN_OBJECT_AREA pixels is left (or keep a background crop now and
        then); after MAX_AUGMENT_TRIES the crop is placed on an object."""
        has_ignore = item.ignore is not None
        layers = (
            np.stack(
                [m.astype(np.uint8) for m in item.objects] + ([item.ignore.astype(np.uint8)] if has_ignore else []),
                axis=2,
            )
            if item.objects or has_ignore
            else np.zeros(item.image.shape[:2] + (0,), np.uint8)
        )
        n_objects = len(item.objects)
        for attempt in range(MAX_AUGMENT_TRIES + 1):
            focus = int(rng.integers(n_objects)) if attempt == MAX_AUGMENT_TRIES and n_objects else None
            image, out = augment(item.image, layers, rng, self.augment_config, self.train, focus_layer=focus)
            objects = [out[:, :, k].astype(bool) for k in range(n_objects)]
            objects = [m for m in objects if m.sum() >= MIN_OBJECT_AREA]
            ignore = out[:, :, n_objects].astype(bool) if has_ignore else None
            if objects or not n_objects or rng.random() < KEEP_BACKGROUND_PROB or attempt == MAX_AUGMENT_TRIES:
                return image, objects, ignore
        raise AssertionError("unreachable")


class PositionSampler(Sampler[int]):
    """Sample positions for one process: micro-batch ``g`` of the run holds positions
    ``g * batch * world + rank * batch + j`` (``j < batch``), starting at micro-batch ``start``; endless."""

    def __init__(self, batch_size: int, world_size: int = 1, rank: int = 0, start: int = 0) -> None:
        self.batch_size, self.world_size, self.rank, self.start = batch_size, world_size, rank, start

    def __iter__(self) -> Iterator[int]:
        g = self.start
        while True:
            base = (g * self.world_size + self.rank) * self.batch_size
            yield from range(base, base + self.batch_size)
            g += 1
