"""``adaptiveclick evaluate`` end to end: the baseline on the shipped datasets, fixtures, options, error paths."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from adaptiveclick import cli
from adaptiveclick.evaluation import cli as evaluation_cli
from adaptiveclick.model import AdaptiveClickPredictor, parse_spec

from dataset_fixtures import WRITERS

TIMING_KEYS = {"seconds_per_click", "elapsed_seconds"}


def run_cli(*args: str) -> int:
    return cli.main(["evaluate", *args])


def without_timing(results: dict) -> dict:
    return {name: {k: v for k, v in entry.items() if k not in TIMING_KEYS} for name, entry in results.items()}


def test_baseline_on_grabcut_and_berkeley_is_stable_across_runs(data_root, tmp_path, capsys):
    outputs = []
    for run in range(2):
        out = tmp_path / f"run{run}"
        assert (
            run_cli(
                "--predictor",
                "baseline",
                "--datasets",
                "GrabCut,Berkeley",
                "--data-root",
                str(data_root),
                "--limit",
                "2",
                "--out",
                str(out),
            )
            == 0
        )
        outputs.append(json.loads((out / "results.json").read_text()))
    captured = capsys.readouterr()
    assert "GrabCut: 100%" in captured.err and "Berkeley" in captured.err  # the progress bars
    assert "| GrabCut | 2 |" in captured.out
    results = outputs[0]
    assert list(results) == ["GrabCut", "Berkeley"]
    for entry in results.values():
        assert {"noc85", "noc90", "nof85", "nof90", "miou_per_click", "ious", "seconds_per_click"} <= set(entry)
        assert len(entry["miou_per_click"]) == 20 and len(entry["ious"]) == 2
        assert all(len(curve) == 20 and all(0.0 <= v <= 1.0 for v in curve) for curve in entry["ious"])
        assert 1.0 <= entry["noc85"] <= entry["noc90"] <= 20.0 and entry["seconds_per_click"] > 0
        np.testing.assert_allclose(entry["miou_per_click"], np.mean(entry["ious"], axis=0))
    assert results["GrabCut"]["names"] == ["106024", "124080"]
    assert without_timing(outputs[0]) == without_timing(outputs[1])
    table = (tmp_path / "run0" / "results.md").read_text()
    assert "| Dataset | Instances | NoC@85 | NoC@90 |" in table and "| Berkeley | 2 |" in table
    assert "mode/flip: not applicable (baseline)" in table and "--limit 2" in table
    plot = cv2.imread(str(tmp_path / "run0" / "miou.png"))
    assert plot is not None and plot.shape[0] > 100 and plot.shape[1] > 100


def test_multi_object_fixtures_through_a_datasets_config(tmp_path, monkeypatch):
    WRITERS["PascalVOC"](tmp_path / "somewhere" / "voc")
    WRITERS["SBD"](tmp_path / "elsewhere")
    config = tmp_path / "datasets.yaml"
    config.write_text("PascalVOC: somewhere/voc\nSBD: elsewhere\n")
    monkeypatch.setenv("ADAPTIVECLICK_DATASETS_CONFIG", str(config))
    out = tmp_path / "out"
    assert (
        run_cli(
            "--predictor", "baseline", "--datasets", "voc,SBD", "--n-clicks", "3", "--out", str(out), "--no-progress"
        )
        == 0
    )
    results = json.loads((out / "results.json").read_text())
    assert results["PascalVOC"]["n_instances"] == 3 and results["SBD"]["n_instances"] == 4
    assert len(results["SBD"]["miou_per_click"]) == 3
    assert "| SBD | 4 |" in (out / "results.md").read_text()


class FakeNet(torch.nn.Module):
    """Stands in for AdaptiveClick: a blob around each positive click plus the previous mask; records inputs."""

    def __init__(self):
        super().__init__()
        self.inputs = []

    def forward(self, image, points):
        self.inputs.append(tuple(image.shape))
        b, _, h, w = image.shape
        yy = torch.arange(h, dtype=torch.float32).view(h, 1)
        xx = torch.arange(w, dtype=torch.float32).view(1, w)
        logits = torch.full((b, 1, h, w), -3.0) + 4.0 * image[:, 3:4]
        n = points.shape[1] // 2
        for i in range(b):
            for j, (y, x, _) in enumerate(points[i].tolist()):
                if max(y, x) >= 0:
                    near = (((yy - y) ** 2 + (xx - x) ** 2).sqrt() < 0.2 * h).float()
                    logits[i, 0] += (6.0 if j < n else -6.0) * near
        return {"instances": logits}


@pytest.fixture()
def fake_adaptiveclick(monkeypatch):
    """Make the CLI build an AdaptiveClickPredictor (the real one) around :class:`FakeNet` from the spec."""
    made = []

    def load(spec, device=None):
        spec = parse_spec(spec)
        net = FakeNet()
        made.append((spec, net))
        return AdaptiveClickPredictor(net, "fake-v1", mode=spec.option("mode"), with_flip=spec.flag("flip", False))

    monkeypatch.setattr(evaluation_cli, "load_predictor", load)
    return made


def test_mode_and_flip_reach_the_predictor_and_davis_zooms_to_672(tmp_path, fake_adaptiveclick):
    WRITERS["DAVIS"](tmp_path / "DAVIS")
    WRITERS["GrabCut"](tmp_path / "GrabCut")
    out = tmp_path / "out"
    assert (
        run_cli(
            "--predictor",
            "weights.pth#mode=plain",
            "--datasets",
            "DAVIS,GrabCut",
            "--data-root",
            str(tmp_path),
            "--mode",
            "cvpr",
            "--n-clicks",
            "2",
            "--limit",
            "1",
            "--out",
            str(out),
            "--no-progress",
        )
        == 0
    )
    spec, net = fake_adaptiveclick[-1]
    assert spec.option("mode") == "cvpr" and spec.flag("flip", False)  # --mode wins; flip on by default
    # each click runs the image and its mirror (batch 2); DAVIS at 672 px, GrabCut at 448 px
    assert net.inputs == [(2, 4, 672, 672)] * 2 + [(2, 4, 448, 448)] * 2
    table = (out / "results.md").read_text()
    assert "mode: cvpr, flip: on" in table and "`weights.pth#mode=cvpr,flip=1`" in table

    assert (
        run_cli(
            "--predictor",
            "weights.pth#flip=1",
            "--datasets",
            "DAVIS",
            "--data-root",
            str(tmp_path),
            "--mode",
            "plain",
            "--no-flip",
            "--n-clicks",
            "1",
            "--limit",
            "1",
            "--out",
            str(out),
            "--no-progress",
        )
        == 0
    )
    spec, net = fake_adaptiveclick[-1]
    assert spec.option("mode") == "plain" and not spec.flag("flip", True)
    assert net.inputs == [(1, 4, 448, 448)]  # no zoom-in, so no 672 either
    assert "mode: plain, flip: off" in (out / "results.md").read_text()


def test_baseline_says_mode_and_flip_do_not_apply(tmp_path, capsys):
    WRITERS["BraTS"](tmp_path / "BraTS")
    assert (
        run_cli(
            "--predictor",
            "baseline",
            "--datasets",
            "BraTS",
            "--data-root",
            str(tmp_path),
            "--mode",
            "plain",
            "--no-flip",
            "--n-clicks",
            "2",
            "--out",
            str(tmp_path / "out"),
            "--no-progress",
        )
        == 0
    )
    assert "do not apply to the baseline" in capsys.readouterr().err


def test_results_of_finished_datasets_survive_a_later_failure(tmp_path, capsys):
    WRITERS["GrabCut"](tmp_path / "GrabCut")
    WRITERS["Berkeley"](tmp_path / "Berkeley")
    (tmp_path / "Berkeley" / "masks" / "101.png").write_bytes(b"broken")
    out = tmp_path / "out"
    assert (
        run_cli(
            "--predictor",
            "baseline",
            "--datasets",
            "GrabCut,Berkeley",
            "--data-root",
            str(tmp_path),
            "--n-clicks",
            "2",
            "--out",
            str(out),
            "--no-progress",
        )
        == 2
    )
    assert "cannot read mask" in capsys.readouterr().err
    assert list(json.loads((out / "results.json").read_text())) == ["GrabCut"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--datasets", "GrabCut,Foo"], "unknown dataset 'Foo'"),
        (["--datasets", "DAVIS"], "no DAVIS/ folder under"),
        (["--predictor", "baseline#colour=red"], "unknown predictor option 'colour'"),
        (["--predictor", "missing.pth"], "does not exist"),
        (["--predictor", "weights.pth#mode=zoom"], "mode='zoom'"),
        (["--datasets-config", "nowhere.yaml"], "cannot read datasets config"),
    ],
)
def test_errors_exit_2_with_a_message(tmp_path, capsys, args, message):
    WRITERS["GrabCut"](tmp_path / "GrabCut")
    base = {
        "--predictor": "baseline",
        "--datasets": "GrabCut",
        "--data-root": str(tmp_path),
        "--out": str(tmp_path / "out"),
    }
    base.update(dict(zip(args[::2], args[1::2])))
    if "--datasets-config" in base:
        base["--datasets-config"] = str(tmp_path / base["--datasets-config"])
    assert run_cli(*[x for kv in base.items() for x in kv], "--no-progress") == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out" / "results.json").exists()


def test_out_must_be_a_folder(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert run_cli("--predictor", "baseline", "--out", str(tmp_path / "file")) == 2
    assert "not a folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--limit", "0"], "must be at least 1"),
        (["--n-clicks", "many"], "expected a whole number"),
        (["--threshold", "1.5"], "strictly between 0 and 1"),
        (["--mode", "zoom"], "invalid choice"),
    ],
)
def test_bad_options_are_usage_errors(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        run_cli("--predictor", "baseline", "--out", str(tmp_path / "out"), *args)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
