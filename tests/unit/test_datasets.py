"""Each dataset loader on a fixture in its published layout, the shipped GrabCut/Berkeley, and dataset roots."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from adaptiveclick.evaluation.datasets import (
    DATASETS,
    BerkeleyDataset,
    DatasetError,
    GrabCutDataset,
    PascalVocDataset,
    SBDDataset,
    dataset_info,
    default_datasets_root,
    load_datasets_config,
    open_dataset,
    parse_dataset_names,
    resolve_dataset_root,
)

from dataset_fixtures import WRITERS, rgb_image, write_gray, write_rgb, write_sbd_mat

LOSSLESS = {"GrabCut": {"b"}, "ssTEM": set(), "BraTS": {"BraTS20_001_slice_070"}, "OAIZIB": {"9001104_080"}}


@pytest.mark.parametrize("name", list(WRITERS))
def test_loader_reads_its_fixture(tmp_path, name):
    root = tmp_path / name
    expected = WRITERS[name](root)
    dataset = dataset_info(name).loader(root)
    samples = list(dataset)
    assert [s.name for s in samples] == list(expected)
    assert len(dataset) == len(expected)
    for index, sample in enumerate(samples):
        mask, ignore = expected[sample.name]
        assert sample.image.dtype == np.uint8 and sample.image.shape == (*mask.shape, 3)
        assert sample.mask.dtype == bool and np.array_equal(sample.mask, mask), sample.name
        assert np.array_equal(sample.ignore, ignore), sample.name
        assert np.array_equal(dataset[index].mask, sample.mask)  # indexing agrees with iteration
        gt = sample.gt
        assert set(np.unique(gt)) <= {-1, 0, 1} and np.array_equal(gt == -1, ignore)
        image_id = sample.name.split("#")[0]
        if image_id in LOSSLESS.get(name, ()):
            assert tuple(sample.image[0, 0]) == (255, 0, 0)  # RGB, not BGR


def test_images_are_rgb(tmp_path):
    root = tmp_path / "GrabCut"
    WRITERS["GrabCut"](root)
    sample = GrabCutDataset(root)[1]  # b.bmp, lossless
    np.testing.assert_array_equal(sample.image, rgb_image(1))


def test_sstem_images_are_grey_replicated(tmp_path):
    WRITERS["ssTEM"](tmp_path / "ssTEM")
    image = next(iter(dataset_info("ssTEM").loader(tmp_path / "ssTEM"))).image
    assert np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2])


def test_only_the_val_split_is_read(tmp_path):
    WRITERS["PascalVOC"](tmp_path / "voc")
    assert "2007_000999" not in {s.name.split("#")[0] for s in PascalVocDataset(tmp_path / "voc")}
    assert [s.name for s in PascalVocDataset(tmp_path / "voc", split="train")] == ["2007_000999#38"]
    WRITERS["SBD"](tmp_path / "sbd")
    assert [s.name for s in SBDDataset(tmp_path / "sbd", split="train")] == ["2008_000001#1"]


def test_shipped_grabcut_and_berkeley(data_root):
    grabcut, berkeley = GrabCutDataset(data_root / "GrabCut"), BerkeleyDataset(data_root / "Berkeley")
    assert len(grabcut) == 50 and len(berkeley) == 100
    sample = grabcut[1]
    assert sample.name == "124080" and sample.mask.any() and sample.ignore.any()
    assert not (sample.mask & sample.ignore).any()
    assert berkeley[0].name == "101085" and berkeley[0].image.shape[2] == 3


# --- bad layouts and files -------------------------------------------------------------------------------------


def test_missing_dataset_folder(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        GrabCutDataset(tmp_path / "nowhere")
    (tmp_path / "GrabCut").mkdir()
    with pytest.raises(DatasetError, match="no folder .*data_GT"):
        GrabCutDataset(tmp_path / "GrabCut")


def test_empty_dataset_and_image_without_mask(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        BerkeleyDataset(tmp_path)
    write_rgb(tmp_path / "images" / "lonely.jpg", rgb_image(0))
    with pytest.raises(DatasetError, match="without annotation.*lonely"):
        BerkeleyDataset(tmp_path)


def test_annotation_of_another_size(tmp_path):
    write_rgb(tmp_path / "images" / "x.jpg", rgb_image(0))
    write_gray(tmp_path / "masks" / "x.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(DatasetError, match="annotation of x is"):
        list(BerkeleyDataset(tmp_path))


def test_unreadable_files(tmp_path):
    write_rgb(tmp_path / "images" / "x.jpg", rgb_image(0))
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks" / "x.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="cannot read mask"):
        list(BerkeleyDataset(tmp_path))
    (tmp_path / "images" / "x.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match="cannot read image"):
        list(BerkeleyDataset(tmp_path))


def test_split_lists_and_listed_files_must_exist(tmp_path):
    WRITERS["SBD"](tmp_path)
    with pytest.raises(DatasetError, match="no split list"):
        SBDDataset(tmp_path, split="test")
    (tmp_path / "val.txt").write_text("2008_000202\nmissing_id\n")
    with pytest.raises(DatasetError, match="missing_id"):
        SBDDataset(tmp_path)
    (tmp_path / "val.txt").write_text("2008_000202\n")
    (tmp_path / "inst" / "2008_000202.mat").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="cannot read SBD instance annotation"):
        list(SBDDataset(tmp_path))


def test_sbd_mat_without_segmentation(tmp_path):
    WRITERS["SBD"](tmp_path)
    from scipy.io import savemat

    savemat(str(tmp_path / "inst" / "2008_000202.mat"), {"GTcls": {"Segmentation": np.zeros((3, 3))}})
    with pytest.raises(DatasetError, match="GTinst"):
        len(SBDDataset(tmp_path))


def test_pascalvoc_missing_image(tmp_path):
    WRITERS["PascalVOC"](tmp_path)
    (tmp_path / "JPEGImages" / "2008_000123.jpg").unlink()
    with pytest.raises(DatasetError, match="2008_000123"):
        PascalVocDataset(tmp_path)


# --- names and roots ---------------------------------------------------------------------------------------------


def test_dataset_names_and_aliases():
    assert dataset_info("grabcut").name == "GrabCut"
    assert dataset_info("OAI-ZIB").name == "OAIZIB" and dataset_info("oai_zib").name == "OAIZIB"
    assert dataset_info("voc").name == "PascalVOC" and dataset_info("coco-mval").name == "COCO_MVal"
    assert [i.name for i in parse_dataset_names(" GrabCut, berkeley,GrabCut ,")] == ["GrabCut", "Berkeley"]
    with pytest.raises(DatasetError, match="unknown dataset 'Grabcutt'; known: GrabCut, Berkeley"):
        dataset_info("Grabcutt")
    with pytest.raises(DatasetError, match="no dataset"):
        parse_dataset_names(" , ")
    assert {"GrabCut", "Berkeley", "DAVIS", "PascalVOC", "SBD", "ssTEM", "BraTS", "OAIZIB"} <= set(DATASETS)
    assert dataset_info("DAVIS").zoom_in_size == 672 and dataset_info("SBD").zoom_in_size == 448


def test_usual_folder_names_under_a_data_root(tmp_path):
    for folder in ("GrabCut", "VOC2012", "ssTEM/stack1", "BraTS20", "OAI-ZIB", "SBD/benchmark_RELEASE/dataset"):
        (tmp_path / folder).mkdir(parents=True)
    env: dict[str, str] = {}
    assert resolve_dataset_root(dataset_info("GrabCut"), tmp_path, environ=env) == tmp_path / "GrabCut"
    assert resolve_dataset_root(dataset_info("PascalVOC"), tmp_path, environ=env) == tmp_path / "VOC2012"
    assert resolve_dataset_root(dataset_info("ssTEM"), tmp_path, environ=env) == tmp_path / "ssTEM" / "stack1"
    assert resolve_dataset_root(dataset_info("BraTS"), tmp_path, environ=env) == tmp_path / "BraTS20"
    assert resolve_dataset_root(dataset_info("OAIZIB"), tmp_path, environ=env) == tmp_path / "OAI-ZIB"
    assert (
        resolve_dataset_root(dataset_info("SBD"), tmp_path, environ=env)
        == tmp_path / "SBD" / "benchmark_RELEASE" / "dataset"
    )
    with pytest.raises(DatasetError, match="no DAVIS/ folder under .*ADAPTIVECLICK_DAVIS_PATH"):
        resolve_dataset_root(dataset_info("DAVIS"), tmp_path, environ=env)


def test_config_beats_environment_beats_data_root(tmp_path):
    info = dataset_info("GrabCut")
    (tmp_path / "GrabCut").mkdir()
    env = {"ADAPTIVECLICK_GRABCUT_PATH": "/from/env"}
    assert resolve_dataset_root(info, tmp_path, environ=env) == tmp_path.__class__("/from/env")
    config = {"GrabCut": tmp_path / "from-config"}
    assert resolve_dataset_root(info, tmp_path, config=config, environ=env) == tmp_path / "from-config"
    assert dataset_info("COCO_MVal").env_var == "ADAPTIVECLICK_COCO_MVAL_PATH"


def test_default_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ADAPTIVECLICK_DATASETS", str(tmp_path))
    assert default_datasets_root() == tmp_path
    monkeypatch.delenv("ADAPTIVECLICK_DATASETS")
    assert default_datasets_root().parts[-2:] == ("shared", "datasets")


def test_datasets_config_file(tmp_path):
    config = tmp_path / "conf" / "datasets.yaml"
    config.parent.mkdir()
    config.write_text("GrabCut: ../data/GrabCut\noai-zib: /abs/OAI-ZIB\n")
    assert load_datasets_config(config) == {
        "GrabCut": config.parent / "../data/GrabCut",
        "OAIZIB": tmp_path.__class__("/abs/OAI-ZIB"),
    }
    # the reference's base_configuration.yaml: dataset keys understood, model/experiment keys skipped
    config.write_text(
        'INTERACTIVE_MODELS_PATH: "./weights"\nGRABCUT_PATH: "./datasets/GrabCut"\n'
        'BraTS_PATH: "./datasets/BraTS20"\nLVIS_PATH: "./datasets/LVIS"\n'
        "IMAGENET_PRETRAINED_MODELS:\n  MAE_BASE: x\n"
    )
    assert set(load_datasets_config(config)) == {"GrabCut", "BraTS"}
    config.write_text(json.dumps({"GrabCut": "/a", "Grabcutt": "/b"}))
    with pytest.raises(DatasetError, match="unknown dataset 'Grabcutt'"):
        load_datasets_config(config)
    config.write_text("- just\n- a list\n")
    with pytest.raises(DatasetError, match="must map dataset names"):
        load_datasets_config(config)
    config.write_text("GrabCut: [1, 2]\n")
    with pytest.raises(DatasetError, match="must be a folder path"):
        load_datasets_config(config)
    config.write_text("GrabCut: {unclosed\n")
    with pytest.raises(DatasetError, match="not valid YAML"):
        load_datasets_config(config)
    with pytest.raises(DatasetError, match="cannot read datasets config"):
        load_datasets_config(tmp_path / "missing.yaml")


def test_open_dataset_from_a_data_root(tmp_path):
    WRITERS["DAVIS"](tmp_path / "DAVIS")
    dataset = open_dataset("davis", data_root=tmp_path)
    assert len(dataset) == 2 and type(dataset).__name__ == "DavisDataset"


def test_sbd_real_struct_layout_is_read_by_field_name(tmp_path):
    segmentation = np.zeros((6, 8), np.uint8)
    segmentation[1:3, 1:3] = 2  # ids need not start at 1
    segmentation[4:, 5:] = 7
    write_sbd_mat(tmp_path / "inst" / "a.mat", segmentation, [3, 9])
    write_rgb(tmp_path / "img" / "a.jpg", rgb_image(0, 6, 8))
    (tmp_path / "val.txt").write_text("a\n")
    samples = list(SBDDataset(tmp_path))
    assert [s.name for s in samples] == ["a#2", "a#7"]
    assert np.array_equal(samples[1].mask, segmentation == 7)


def test_davis_mask_in_any_channel(tmp_path):
    write_rgb(tmp_path / "img" / "f.jpg", rgb_image(0, 6, 8))
    colour = np.zeros((6, 8, 3), np.uint8)
    colour[0, 0, 2] = 1
    colour[5, 7, 0] = 200
    (tmp_path / "gt").mkdir()
    assert cv2.imwrite(str(tmp_path / "gt" / "f.png"), colour)
    mask = next(iter(dataset_info("DAVIS").loader(tmp_path))).mask
    assert mask.sum() == 2 and mask[0, 0] and mask[5, 7]
