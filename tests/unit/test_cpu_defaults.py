"""model.fast.defaults: the default CPU variant per instruction-set class, chosen from measured figures; the table's
regeneration by ``adaptiveclick benchmark cpu --write-defaults``; the choice and refusal messages under the AVX2 cap.

Pure where it can be (flags and figures given), so every CPU checks every class."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from adaptiveclick.benchmarks import cpu_inference
from adaptiveclick.model.engine import openvino_support
from adaptiveclick.model.fast import default_variant, defaults, explain_default, precision_support
from adaptiveclick.model.fast.optimize import VARIANTS_WITH_PARITY
from adaptiveclick.ops.cpu_features import ISA_LEVELS

ZEN3 = frozenset({"avx2", "fma", "f16c"})
ALDER_LAKE = ZEN3 | {"avx_vnni"}
SKYLAKE_SP = ZEN3 | {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"}
CASCADE_LAKE = SKYLAKE_SP | {"avx512_vnni"}
ZEN4 = CASCADE_LAKE | {"avx512_bf16"}
SAPPHIRE_RAPIDS = ZEN4 | {"avx_vnni", "amx_int8", "amx_bf16", "amx_tile", "avx512_fp16"}
AVX2_CAPS = {
    "ADAPTIVECLICK_MAX_CPU_ISA": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "OV_CPU_MAX_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2",
    "ATEN_CPU_CAPABILITY": "avx2",
}
PARITY = (("torch", "fp32"), ("openvino", "fp32"))


def measured(engine, precision, later, speed_up, rss=1500.0, first=1.0, cached=None) -> defaults.Measurement:
    return defaults.Measurement(engine, precision, later, speed_up, rss, first, cached)


def entry(*rows: defaults.Measurement, isa="avx512_core_bf16", native=None) -> defaults.ClassEntry:
    base = measured("torch", "fp32", 1.2, 1.0)
    return defaults.ClassEntry(isa, native or isa, "test CPU", "test", "0 0 0", (base, *rows))


def test_isa_class_of_each_kind_of_cpu():
    assert defaults.isa_class(ZEN3) == "avx2"
    assert defaults.isa_class(ALDER_LAKE) == "avx2_vnni"
    assert defaults.isa_class(SKYLAKE_SP) == "avx512_core"
    assert defaults.isa_class(CASCADE_LAKE) == "avx512_core_vnni"
    assert defaults.isa_class(ZEN4) == "avx512_core_bf16"
    assert defaults.isa_class(SAPPHIRE_RAPIDS) == "avx512_core_amx"
    assert defaults.isa_class(frozenset()) == "avx2"  # the project's floor


def test_the_choice_needs_parity_speed_memory_and_start_up():
    ov = measured("openvino", "fp32", 0.9, 1.33, rss=2700.0, first=20.0, cached=2.0)
    int8 = measured("torch", "int8", 0.6, 2.0, rss=1600.0)
    e = entry(ov, int8)
    assert defaults.choose(e, PARITY) == ("openvino", "fp32")  # int8 is faster but has shown no parity
    assert defaults.qualifying(e, PARITY) == [("openvino", "fp32"), ("torch", "fp32")]
    assert defaults.choose(e, PARITY + (("torch", "int8"),)) == ("torch", "int8")  # the fastest with parity
    assert defaults.choose(e, (("torch", "fp32"),)) == ("torch", "fp32")
    slow = entry(dataclasses.replace(ov, later_p50_s=1.1, speed_up=1.09))
    assert defaults.choose(slow, PARITY) == ("torch", "fp32")
    assert "1.09x torch fp32, below 1.15x" in defaults.rejection(slow.measured[1], slow, PARITY)
    heavy = entry(dataclasses.replace(ov, peak_rss_mb=1500.0 + defaults.MAX_EXTRA_RSS_MB + 1))
    assert "peak RSS" in defaults.rejection(heavy.measured[1], heavy, PARITY)
    assert defaults.choose(heavy, PARITY) == ("torch", "fp32")
    late = entry(dataclasses.replace(ov, first_start_s=defaults.MAX_FIRST_START_S + 1))
    assert "first start" in defaults.rejection(late.measured[1], late, PARITY)


def test_openvino_figures_under_a_cap_below_avx512_do_not_count():
    """OpenVINO's MLAS GEMMs ignore the caps: its AVX2 figures measured on an AVX-512 CPU are not AVX2's."""
    ov = measured("openvino", "fp32", 0.8, 1.5, rss=2700.0, first=13.0)
    capped = entry(ov, isa="avx2", native="avx512_core_bf16")
    assert defaults.choose(capped, PARITY) == ("torch", "fp32")
    assert "does not fully honour" in defaults.rejection(ov, capped, PARITY)
    assert defaults.choose(entry(ov, isa="avx2"), PARITY) == ("openvino", "fp32")  # measured on an AVX2 CPU
    assert defaults.choose(entry(ov, isa="avx512_core", native="avx512_core_bf16"), PARITY) == ("openvino", "fp32")
    torch_int8 = measured("torch", "int8", 0.8, 1.5)  # fbgemm honours FBGEMM_ENABLE_INSTRUCTIONS
    capped_int8 = entry(torch_int8, isa="avx2", native="avx512_core_bf16")
    assert defaults.choose(capped_int8, PARITY + (("torch", "int8"),)) == ("torch", "int8")


def test_a_class_without_figures_uses_the_nearest_one_below():
    table = {"avx2": entry(isa="avx2"), "avx512_core_bf16": entry()}
    assert defaults.entry_for("avx512_core_amx", table) is table["avx512_core_bf16"]
    assert defaults.entry_for("avx512_core_vnni", table) is table["avx2"]
    assert defaults.entry_for("avx2_vnni", table) is table["avx2"]
    assert defaults.entry_for("avx2", {}) is None
    text = defaults.explain(table["avx2"], "avx2_vnni", PARITY)
    assert text.startswith("avx2_vnni, not measured: the avx2 entry") and "torch fp32" in text
    assert "not measured" in defaults.explain(None, "avx2", PARITY)


def test_the_measured_table_is_well_formed_and_its_defaults_follow_from_it():
    """Every stored default is what the rule gives from the stored figures and today's parity list (a changed list
    or rule without regenerated entries fails here)."""
    assert defaults.MEASURED, "no class measured"
    for isa, e in defaults.MEASURED.items():
        assert e.isa == isa and isa in ISA_LEVELS and e.native in ISA_LEVELS
        assert list(ISA_LEVELS).index(e.native) >= list(ISA_LEVELS).index(isa)
        base = e.baseline()
        assert base.speed_up == 1.0 and base.later_p50_s > 0 and base.peak_rss_mb > 0
        for m in e.measured:
            assert m.later_p50_s > 0 and m.speed_up == pytest.approx(base.later_p50_s / m.later_p50_s, rel=0.01)
        assert e.default == defaults.choose(e, VARIANTS_WITH_PARITY), isa
        assert "--write-defaults" in e.command


def fake_results(network="base") -> list[dict]:
    """What ``cpu_inference.run`` returns, with made-up timings."""

    def result(spec, later, rss, load, cached=None):
        return {
            "spec": spec,
            "net": network,
            "load": "1.00 1.00 1.00 at the start, 2.00 2.00 2.00 at the end",
            "busiest": 2.0,
            "later": {"p50": later},
            "rss_mb": rss,
            "load_s": load,
            "cached": cached,
        }

    return [
        result("random:base#precision=fp32", 1.2, 1500.0, 1.0),
        result("random:base#engine=openvino,precision=fp32", 0.9, 2400.0, 20.0, {"load_s": 2.5, "rss_mb": 2600.0}),
        result("random:base#precision=int8", 0.7, 1600.0, 2.0),
    ]


def test_regeneration_writes_a_well_formed_table(tmp_path, monkeypatch):
    copy = tmp_path / "defaults.py"
    shutil.copy(defaults.__file__, copy)
    kept = dict(defaults.MEASURED)
    # the cap names the class in the header; the flags are given too, since a cap cannot widen an AVX2-only CPU
    monkeypatch.setenv("ADAPTIVECLICK_MAX_CPU_ISA", "avx512_core")
    new = cpu_inference.class_entry(fake_results(), "adaptiveclick benchmark cpu --write-defaults", SKYLAKE_SP)
    assert new.isa == "avx512_core" and new.cpu.endswith("capped to avx512_core")
    assert [m.variant for m in new.measured] == [("torch", "fp32"), ("openvino", "fp32"), ("torch", "int8")]
    ov = new.measured[1]
    assert ov.speed_up == round(1.2 / 0.9, 3) and ov.peak_rss_mb == 2600.0 and ov.cached_start_s == 2.5
    assert new.default == ("openvino", "fp32")  # 1.33x, +1100 MB, 20 s first start; int8 has no parity
    table = defaults.write_entry(new, copy)
    again = defaults.read_table(copy)
    assert again == table and again["avx512_core"] == new
    assert all(again[isa] == e for isa, e in kept.items() if isa != "avx512_core")  # the other classes stay
    text = copy.read_text()
    assert text.count(defaults.BEGIN_MARK) == 2 and text.count(defaults.END_MARK) == 2  # the constants and the block
    assert all(len(line) <= defaults.LINE_LENGTH for line in text.splitlines())
    defaults.write_entry(new, copy)  # rewriting the same entry changes nothing
    assert copy.read_text() == text
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if Path(ruff).exists():  # the written module passes the project's lint as it is
        config = Path(__file__).resolve().parents[2] / "pyproject.toml"  # the checkout's, also when testing a wheel
        for command in ([ruff, "check", "--no-cache"], [ruff, "format", "--check"]):
            subprocess.run([*command, "--config", str(config), str(copy)], check=True, capture_output=True)
    with pytest.raises(ValueError, match="AdaptiveClick-base"):
        cpu_inference.class_entry(fake_results("tiny"), "x")
    with pytest.raises(ValueError, match="precision=fp32"):
        cpu_inference.measurements(fake_results()[1:])


def test_the_command_line_of_an_entry_names_the_caps(monkeypatch):
    for name, value in AVX2_CAPS.items():
        monkeypatch.setenv(name, value)
    args = argparse.Namespace(
        source="random:base", variants=";".join(cpu_inference.DEFAULT_VARIANTS), images=3, clicks=3, rounds=1
    )
    line = cpu_inference.command_line(args)
    assert line.startswith("ADAPTIVECLICK_MAX_CPU_ISA=avx2 ONEDNN_MAX_CPU_ISA=AVX2")
    assert line.endswith("adaptiveclick benchmark cpu --images 3 --clicks 3 --rounds 1 --write-defaults")


def test_under_the_avx2_cap(monkeypatch, caplog):
    """ops.cpu_features reads the caps at every call: set in-process, they make this CPU an AVX2 one for the
    project's choices and messages."""
    for name, value in AVX2_CAPS.items():
        monkeypatch.setenv(name, value)
    assert defaults.isa_class() == "avx2"
    e = defaults.entry_for("avx2")
    assert e is not None and e.isa == "avx2"
    chosen = defaults.choose(e, VARIANTS_WITH_PARITY)
    with caplog.at_level(logging.WARNING, logger="adaptiveclick.model.fast.optimize"):
        assert default_variant("cpu", "base") == chosen
    assert default_variant("cpu", "tiny") == ("torch", "fp32")  # sizes the table was not measured on
    why = explain_default()
    assert why.startswith("avx2 (measured on ") and f"{chosen[0]} {chosen[1]}; " in why and "--write-defaults" in why
    for m in e.measured:
        assert f"{m.label()} ({m.later_p50_s:.2f} s, {m.speed_up:.2f}x" in why
    bf16 = precision_support("bf16")
    assert bf16.startswith("instruction set missing: bf16 needs one of avx512_bf16") and "capped to avx2" in bf16
    assert precision_support("int8") in (None, precision_support("int8", "cpu", SAPPHIRE_RAPIDS))  # 7-bit on AVX2
    ov_int8 = openvino_support("int8")
    assert "capped to avx2" in ov_int8 or "pip install" in ov_int8  # refused with the figures, or not installed
