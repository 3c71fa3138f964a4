"""benchmarks.cpu_parity: the optimised CPU variants against fp32 eager on NoC click sequences.

The figures asserted are regression guards around what the variants measure with untrained AdaptiveClick-B weights
(see docs/performance.md): a conversion that broke a layer would give logit errors of order 1 and unrelated
masks. They are not the issue's 0.99 mask-IoU target, which untrained weights do not reach (soft-edged masks).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adaptiveclick.benchmarks import cpu_parity
from adaptiveclick.finetune.network import save_weights
from adaptiveclick.model import build_adaptiveclick
from adaptiveclick.model.build import TINY_CONFIG
from adaptiveclick.model.fast import precision_support


def test_comparison_measures():
    probs = np.full((10, 10), 0.2, np.float32)
    probs[:5] = 0.8
    same = cpu_parity.compare(probs, probs)
    assert same.mean_abs_dp == 0 and same.mask_iou == 1 and same.relative_logit_error == 0
    moved = probs.copy()
    moved[5] = 0.8  # one more row of object: 60 pixels against 50
    diff = cpu_parity.compare(probs, moved)
    assert diff.mask_iou == pytest.approx(50 / 60) and diff.mean_abs_dp == pytest.approx(0.06)
    np.testing.assert_allclose(
        cpu_parity.logits_of(np.array([0.5, 1e-20], np.float32)), [0.0, np.log(1e-20)], rtol=1e-6
    )
    assert cpu_parity.mask_iou(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == 1.0
    assert cpu_parity.summarize([same, diff])["mask_iou"] == pytest.approx((1 + 50 / 60) / 2)


def test_seeded_weights_are_deterministic_and_well_scaled():
    a = cpu_parity.seeded_weights(build_adaptiveclick(TINY_CONFIG), seed=3)
    b = cpu_parity.seeded_weights(build_adaptiveclick(TINY_CONFIG), seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert float(a.backbone.blocks[0].norm1.weight.detach().mean()) == pytest.approx(1.0, abs=0.05)
    assert a.pixel_decoder.adapter_1 is a.pixel_decoder.lateral_convs[0]  # shared modules stay shared


def test_random_base_variants_against_fp32_on_grabcut_and_berkeley(data_root, capsys):
    """AdaptiveClick-B, one GrabCut and one Berkeley instance, two NoC clicks each. The table is printed on every
    CPU: a variant this CPU cannot run natively is a row saying why."""
    precisions = ("bf16", "int8")
    results = cpu_parity.run("random:base", [f"precision={p}" for p in precisions], data_root, instances=1, clicks=2)
    out = capsys.readouterr().out
    assert "Parity with fp32 eager" in out
    bounds = {"bf16": (0.9, 0.04), "int8": (0.85, 0.08)}
    for precision in precisions:
        spec = f"random:base#precision={precision}"
        rows = [row for row in results if row["spec"] == spec]
        reason = precision_support(precision)
        if reason is not None:
            assert rows == [{"spec": spec, "skipped": reason}]
            assert f"{spec}: not run on this CPU ({reason})" in out
            continue
        assert f"{spec}: mean mask IoU" in out
        assert sorted(row["dataset"] for row in rows) == ["Berkeley", "GrabCut"]
        min_iou, max_error = bounds[precision]
        for row in rows:
            assert row["clicks"] == 2
            assert row["mask_iou"] >= min_iou and row["median_cut_iou"] >= min_iou, row
            assert 0 < row["relative_logit_error"] <= max_error, row
            assert 0 < row["mean_abs_dp"] < 0.05, row


def test_fp32_against_itself_and_the_noc_comparison(tmp_path, data_root):
    """On a tiny checkpoint (through load_predictor, as for trained weights): fp32 against fp32 is exact, and the
    NoC comparison reports curve and NoC@90 gaps."""
    torch.manual_seed(0)
    path = save_weights(build_adaptiveclick(TINY_CONFIG), tmp_path / "tiny.pth")
    results = cpu_parity.run(str(path), ["precision=fp32"], data_root, instances=1, clicks=2, noc=True, noc_clicks=2)
    for row in results:
        assert row["mean_abs_dp"] == 0 and row["mask_iou"] == 1 and row["relative_logit_error"] == 0
        assert row["max_curve_gap_points"] == 0 and row["noc90_gap"] == 0


def test_openvino_fp32_against_torch_fp32(tmp_path, data_root, monkeypatch):
    """engine=openvino,precision=fp32 through the paired comparison: the same masks (float rounding apart)."""
    pytest.importorskip("openvino", reason="the openvino extra is not installed")
    from adaptiveclick.model.engine.ir_cache import CACHE_ENV

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "openvino"))
    torch.manual_seed(0)
    path = save_weights(build_adaptiveclick(TINY_CONFIG), tmp_path / "tiny.pth")
    results = cpu_parity.run(str(path), ["engine=openvino,precision=fp32"], data_root, instances=1, clicks=2)
    for row in results:
        assert row["mask_iou"] >= 0.99 and row["mean_abs_dp"] < 1e-4 and row["relative_logit_error"] < 1e-3, row


def test_cli_rejects_bad_arguments(capsys):
    import argparse

    args = argparse.Namespace(
        source="random:base",
        variants="precision=fp16",
        instances=1,
        clicks=1,
        noc=False,
        noc_clicks=1,
        weights="default",
        data_root=None,
    )
    assert cpu_parity.main(args) == 2 and "precision='fp16'" in capsys.readouterr().out
    args.variants, args.instances = "precision=int8", 0
    assert cpu_parity.main(args) == 2
