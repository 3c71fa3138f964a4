"""``benchmarks/msda.py`` runs end to end on small shapes and prints one row per implementation with its ratio
against the reference (the figures themselves come from running the benchmark, not from tests)."""

from __future__ import annotations

import argparse
import os

import pytest
import torch

from adaptiveclick.benchmarks import msda
from adaptiveclick.ops import build
from adaptiveclick.ops.dispatch import IMPL_ENV


def test_prints_every_implementation_with_ratios(capsys, monkeypatch):
    monkeypatch.setenv(IMPL_ENV, "auto")
    build.load("cpu")
    chosen = torch.ops.adaptiveclick_msda_cpu.instruction_set()
    results = msda.run(
        batch=2,
        levels=((6, 6), (3, 3)),
        repeats=2,
        warmup=1,
        cpu_dtypes=(torch.float32, torch.bfloat16),
        all_isas=True,
        use_cuda=False,
    )
    out = capsys.readouterr().out
    impls = {(v.dtype, v.impl, v.isa) for v in results}
    isas = torch.ops.adaptiveclick_msda_cpu.instruction_sets()
    assert impls == {
        (dt, impl, isa)
        for dt in (torch.float32, torch.bfloat16)
        for impl, isa in [("pytorch", None)] + [("cpu", i) for i in isas]
    }
    assert all(len(v.forward) == 2 and len(v.train) == 2 for v in results)
    assert out.count("| cpu | float32 |") == 1 + len(isas) and "| PyTorch reference |" in out
    assert "N=2, levels 6x6/3x3 (S = Lq = 45)" in out and "| 1.0x |" in out
    assert os.environ[IMPL_ENV] == "auto"  # restored
    assert torch.ops.adaptiveclick_msda_cpu.instruction_set() == chosen  # restored


@pytest.mark.parametrize("flag, value", [("levels", "14x14,28"), ("cpu_dtypes", "int32"), ("batch", 0)])
def test_bad_arguments(flag, value, capsys):
    parser = argparse.ArgumentParser()
    msda.add_arguments(parser)
    args = parser.parse_args([])
    setattr(args, flag, value)
    assert msda.main(args) == 2
    assert capsys.readouterr().out.startswith("error:")
