"""benchmarks.cpu_inference: variant specs, the side-by-side latency run (on a tiny checkpoint) and its report."""

from __future__ import annotations

import argparse

import pytest
import torch

from adaptiveclick.benchmarks import cpu_inference, variants
from adaptiveclick.finetune.network import save_weights
from adaptiveclick.model import build_adaptiveclick
from adaptiveclick.model.build import TINY_CONFIG
from adaptiveclick.model.fast import precision_support


def test_variant_spec_merges_options():
    assert variants.variant_spec("random:base", "precision=int8") == "random:base#precision=int8"
    assert (
        variants.variant_spec("w.pth#device=cpu,precision=bf16", "precision=int8,threads=2")
        == "w.pth#device=cpu,precision=int8,threads=2"
    )
    with pytest.raises(ValueError, match="unknown predictor option"):
        variants.variant_spec("w.pth", "speed=max")
    assert variants.unavailable_reason("w.pth#precision=fp32") is None
    assert variants.unavailable_reason("w.pth#precision=int8") == precision_support("int8")
    assert variants.variant_of("w.pth#engine=openvino") == ("openvino", "fp32")
    assert variants.variant_of("w.pth#threads=1") is None and variants.unavailable_reason("w.pth") is None


def test_side_by_side_run_on_a_tiny_checkpoint(tmp_path, data_root, capsys):
    torch.manual_seed(0)
    path = save_weights(build_adaptiveclick(TINY_CONFIG), tmp_path / "tiny.pth")
    compared = ["precision=fp32", "precision=bf16", "precision=int8"]
    results = cpu_inference.run(str(path), compared, data_root, images=1, clicks=2, rounds=1, warmup=0)
    out = capsys.readouterr().out
    runnable = [v for v in compared if precision_support(v.split("=")[1]) is None]
    assert [r["precision"] for r in results] == [v.split("=")[1] for v in runnable]
    for r in results:
        assert r["first"]["n"] == 1 and r["later"]["n"] == 1 and r["rss_mb"] > 50 and r["load_s"] > 0
    assert "| later speed-up vs fp32 |" in out and "1.00x" in out and "load average at start" in out
    assert "fastest:" in out and f"target {cpu_inference.later_target()} s" in out
    for v in set(compared) - set(runnable):
        assert f"{variants.variant_spec(str(path), v)}: not run: " in out
    assert "  why: " in out  # the default variant of this CPU's class, with its figures
    assert {r["net"] for r in results} == {"tiny"}
    with pytest.raises(ValueError, match="AdaptiveClick-base"):  # the defaults table is AdaptiveClick-B's
        cpu_inference.class_entry(results, "adaptiveclick benchmark cpu --write-defaults")


def test_engine_variants_report_first_and_cached_starts(tmp_path, data_root, capsys):
    """An OpenVINO variant: its first load exports into an empty cache of its own, a second worker loads it."""
    pytest.importorskip("openvino", reason="the openvino extra is not installed")
    torch.manual_seed(0)
    path = save_weights(build_adaptiveclick(TINY_CONFIG), tmp_path / "tiny.pth")
    compared = ["precision=fp32", "engine=openvino,precision=fp32"]
    results = cpu_inference.run(str(path), compared, data_root, images=1, clicks=2, rounds=1, warmup=0)
    out = capsys.readouterr().out
    engine = next(r for r in results if variants.is_engine(r["spec"]))
    assert engine["precision"] == "fp32" and engine["runs_as"].startswith("openvino fp32")
    assert engine["facts"]["exported"] and engine["facts"]["export_s"] > 0
    assert engine["cached"]["facts"]["exported"] is False and engine["cached"]["load_s"] < engine["load_s"]
    assert engine["network"]["n"] == 1 and engine["network"]["p50"] <= engine["later"]["p50"]
    assert "OpenVINO engine start-up" in out and "| cached start (s) |" in out and "| network p50 (s) |" in out
    assert variants.is_baseline(f"{path}#precision=fp32") and not variants.is_baseline(engine["spec"])


def test_cli_rejects_bad_arguments(capsys):
    args = argparse.Namespace(
        source="random:base",
        variants="precision=int8",
        images=1,
        clicks=1,
        rounds=1,
        http=False,
        http_rounds=1,
        data_root=None,
    )
    assert cpu_inference.main(args) == 2  # one click per image leaves no later click to time
    args.clicks, args.variants = 2, "precision=fp16"
    assert cpu_inference.main(args) == 2 and "precision='fp16'" in capsys.readouterr().out
    args.variants, args.write_defaults = "precision=int8", "defaults.py"  # the table's ratios are to torch fp32
    assert cpu_inference.main(args) == 2 and "--write-defaults needs the precision=fp32" in capsys.readouterr().out


def test_a_worker_that_cannot_load_its_predictor_says_why(tmp_path):
    with pytest.raises(RuntimeError, match="absent.pth"):
        cpu_inference.VariantWorker(f"{tmp_path / 'absent.pth'}#precision=fp32")
