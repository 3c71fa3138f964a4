"""finetune.data: records from datasets and disk, the stable split, the position-indexed training set."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from adaptiveclick.finetune.augment import AugmentConfig
from adaptiveclick.finetune.click_sampling import ClickSampler, ClickSamplerConfig
from adaptiveclick.finetune.data import (
    CachedImageRecord,
    ClickTrainingSet,
    DatasetImageRecord,
    PositionSampler,
    dataset_records,
    records_from_json,
    records_to_json,
    split_records,
    validation_samples,
)


class Record:
    def __init__(self, key, group=None):
        self.key, self.group = key, group or key


def test_split_is_by_group_stable_and_never_empty():
    records = [Record(f"task-{i}", f"task-{i // 2}") for i in range(40)]
    train, val = split_records(records, 0.25, seed=0)
    assert len(train) + len(val) == 40 and 0 < len(val) < 40
    assert not {r.group for r in train} & {r.group for r in val}
    again_train, again_val = split_records(list(reversed(records)), 0.25, seed=0)
    assert {r.key for r in again_val} == {r.key for r in val}
    grown_train, grown_val = split_records(records + [Record(f"task-{i}") for i in range(100, 140)], 0.25, seed=0)
    assert {r.key for r in val} <= {r.key for r in grown_val}  # a project that grows keeps its validation tasks
    assert {r.key for r in train} <= {r.key for r in grown_train}
    one_each = split_records([Record("a"), Record("b")], 0.01)
    assert len(one_each[0]) == 1 and len(one_each[1]) == 1
    assert split_records([Record("a"), Record("b")], 0.0)[1] == []
    with pytest.raises(ValueError):
        split_records(records, 1.0)


def test_dataset_records_load_grabcut(data_root):
    records = dataset_records("GrabCut", data_root)
    assert len(records) == 50 and len({r.group for r in records}) == 50
    item = records[1].load()  # 124080 has an unknown band
    assert item.image.dtype == np.uint8 and item.image.ndim == 3
    assert len(item.objects) == 1 and item.objects[0].shape == item.image.shape[:2] and item.objects[0].any()
    assert item.ignore is not None and item.ignore.any() and not (item.ignore & item.objects[0]).any()
    assert records_from_json(records_to_json(records[:3])) == records[:3]


def test_cached_records_round_trip(tmp_path):
    image = np.zeros((20, 30, 3), np.uint8)
    image[:, :, 0] = 200  # red in RGB
    cv2.imwrite(str(tmp_path / "img.png"), image[:, :, ::-1])
    mask = np.zeros((20, 30), np.uint8)
    mask[5:10, 5:15] = 255
    cv2.imwrite(str(tmp_path / "m0.png"), mask)
    record = CachedImageRecord("task-1", "task-1", str(tmp_path / "img.png"), (str(tmp_path / "m0.png"),))
    item = record.load()
    assert item.image[0, 0].tolist() == [200, 0, 0] and item.objects[0].sum() == 50 and item.ignore is None
    assert records_from_json(records_to_json([record])) == [record]
    samples = validation_samples([record])
    assert len(samples) == 1 and samples[0].name == "task-1" and samples[0].mask.sum() == 50
    with pytest.raises(ValueError, match="cannot read"):
        CachedImageRecord("x", "x", str(tmp_path / "missing.png")).load()


def test_training_items_are_deterministic_per_position(data_root):
    records = dataset_records("GrabCut", data_root)[1:3]  # both with an unknown band
    dataset = ClickTrainingSet(
        records, ClickSampler(ClickSamplerConfig(max_points=8)), AugmentConfig(crop_size=96), seed=1
    )
    item = dataset[7]
    assert item["images"].shape == (3, 96, 96) and item["images"].dtype == torch.float32
    assert 0 <= item["images"].min() and item["images"].max() <= 1
    assert item["points"].shape == (16, 3) and item["instances"].shape == (1, 96, 96)
    assert item["valid"].shape == (1, 96, 96)
    again = dataset[7]
    assert all(torch.equal(item[k], again[k]) for k in item)
    assert not torch.equal(dataset[8]["images"], item["images"])
    # GrabCut's unknown band is never a click and never an object pixel
    ignored = item["valid"][0] == 0
    assert ignored.any()
    assert not (item["instances"][0].bool() & ignored).any()
    for y, x, _ in item["points"].tolist():
        if y >= 0:
            assert not ignored[int(y), int(x)]


def test_each_epoch_visits_every_image_once(data_root):
    records = dataset_records("GrabCut", data_root)[:6]
    dataset = ClickTrainingSet(records, ClickSampler(), AugmentConfig(crop_size=64), seed=0)
    first = [dataset.record_index(p) for p in range(6)]
    second = [dataset.record_index(p) for p in range(6, 12)]
    assert sorted(first) == sorted(second) == list(range(6)) and first != second


def test_objects_survive_the_crop_mostly(data_root):
    records = dataset_records("GrabCut", data_root)[:4]
    dataset = ClickTrainingSet(records, ClickSampler(), AugmentConfig(crop_size=64), seed=0)
    with_object = sum(dataset[p]["instances"].sum().item() > 0 for p in range(20))
    assert with_object >= 18


def test_position_sampler_shards_micro_batches():
    def first(sampler, n):
        it = iter(sampler)
        return [next(it) for _ in range(n)]

    assert first(PositionSampler(2, world_size=2, rank=0), 6) == [0, 1, 4, 5, 8, 9]
    assert first(PositionSampler(2, world_size=2, rank=1), 6) == [2, 3, 6, 7, 10, 11]
    assert first(PositionSampler(2, world_size=2, rank=1, start=3), 2) == [14, 15]


def test_dataset_record_reports_unknown_dataset(data_root):
    from adaptiveclick.evaluation.datasets import DatasetError

    with pytest.raises(DatasetError):
        dataset_records("NoSuchSet", data_root)
    with pytest.raises(ValueError):
        ClickTrainingSet([], ClickSampler(), AugmentConfig())
    assert DatasetImageRecord("GrabCut", str(data_root / "GrabCut"), "124080").load().objects
