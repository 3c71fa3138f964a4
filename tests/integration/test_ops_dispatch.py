"""``ops.ms_deform_attn``: which implementation runs, env-var forcing, dtype handling, and the fallback when the
kernel cannot be built (simulated in-process, and for real with a broken compiler in a fresh process)."""

from __future__ import annotations

import importlib
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from adaptiveclick import ops
from adaptiveclick.ops import build, ms_deform_attn_pytorch
from adaptiveclick.ops.dispatch import (
    IMPL_ENV,
    MSDAUnavailableError,
    implementation_for,
    ms_deform_attn,
    requested_impl,
)
from adaptiveclick.ops.synthetic import random_inputs

REPO = Path(__file__).resolve().parents[2]
dispatch = importlib.import_module("adaptiveclick.ops.dispatch")


@pytest.fixture()
def cpu_kernel():
    try:
        build.load("cpu")
    except build.BuildError as exc:
        pytest.fail(f"the CPU kernel must build wherever the tests run: {exc}")


@pytest.fixture()
def failing_build(monkeypatch):
    """A process where the kernels were never loaded and every build fails."""
    calls = []

    def fail(kind, **kwargs):
        calls.append(kind)
        raise build.BuildError(f"simulated: no compiler for {kind}")

    monkeypatch.setattr(build, "is_loaded", lambda kind: False)
    monkeypatch.setattr(build, "load", fail)
    monkeypatch.setattr(dispatch, "_failures", {})
    return calls


def test_auto_uses_the_cpu_kernel(cpu_kernel, monkeypatch):
    monkeypatch.delenv(IMPL_ENV, raising=False)
    assert requested_impl() == "auto"
    assert implementation_for("cpu") == "cpu"
    inputs = random_inputs(1, ((6, 6), (3, 3)), 2, 16, 2, 5)
    torch.testing.assert_close(
        ms_deform_attn(*inputs.args()), ms_deform_attn_pytorch(*inputs.args()), rtol=1e-5, atol=1e-6
    )


def test_forcing_pytorch_runs_the_reference(monkeypatch):
    monkeypatch.setenv(IMPL_ENV, " PyTorch ")
    assert implementation_for("cpu") == "pytorch"
    inputs = random_inputs(1, ((6, 6),), 2, 8, 2, 5)
    assert torch.equal(ms_deform_attn(*inputs.args()), ms_deform_attn_pytorch(*inputs.args()))


def test_forcing_cpu_uses_the_kernel(cpu_kernel, monkeypatch):
    monkeypatch.setenv(IMPL_ENV, "cpu")
    assert implementation_for("cpu") == "cpu"
    inputs = random_inputs(1, ((6, 6),), 2, 8, 2, 5).requires_grad_()
    out = ms_deform_attn(*inputs.args())
    assert out.grad_fn is not None and "CompiledMSDA" in type(out.grad_fn).__name__


def test_unknown_implementation_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(IMPL_ENV, "fortran")
    with pytest.raises(ValueError, match="ADAPTIVECLICK_MSDA_IMPL='fortran': expected one of auto, cuda, cpu"):
        implementation_for("cpu")


def test_forcing_a_kernel_for_the_wrong_device(monkeypatch):
    monkeypatch.setenv(IMPL_ENV, "cuda")
    inputs = random_inputs(1, ((4, 4),), 1, 4, 1, 2)
    with pytest.raises(MSDAUnavailableError, match="forces the CUDA kernel, but the tensors are on cpu"):
        ms_deform_attn(*inputs.args())


def test_auto_falls_back_with_one_warning(failing_build, monkeypatch, caplog):
    monkeypatch.delenv(IMPL_ENV, raising=False)
    inputs = random_inputs(1, ((5, 5), (2, 3)), 2, 8, 2, 4)
    with caplog.at_level(logging.WARNING, logger="adaptiveclick.ops"):
        results = [ms_deform_attn(*inputs.args()) for _ in range(3)]
        assert implementation_for("cpu") == "pytorch"
    for out in results:
        assert torch.equal(out, ms_deform_attn_pytorch(*inputs.args()))
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and failing_build == ["cpu"]
    assert "CPU kernel is unavailable" in warnings[0].getMessage()
    assert "simulated: no compiler for cpu" in warnings[0].getMessage()


def test_forcing_an_unbuildable_kernel_raises(failing_build, monkeypatch):
    monkeypatch.setenv(IMPL_ENV, "cpu")
    inputs = random_inputs(1, ((4, 4),), 1, 4, 1, 2)
    with pytest.raises(MSDAUnavailableError, match="forces the compiled CPU kernel, which is unavailable: simulated"):
        ms_deform_attn(*inputs.args())


def test_mixed_dtypes_are_promoted(cpu_kernel, monkeypatch):
    monkeypatch.setenv(IMPL_ENV, "cpu")
    inputs = random_inputs(1, ((6, 6),), 2, 16, 2, 5)
    out = ms_deform_attn(
        inputs.value.half(),
        inputs.spatial_shapes.int(),
        inputs.level_start_index.int(),
        inputs.sampling_locations,
        inputs.attention_weights,
    )
    assert out.dtype == torch.float32
    expected = ms_deform_attn_pytorch(inputs.value.half().float(), *inputs.args()[1:])
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_non_contiguous_inputs_are_accepted(cpu_kernel, monkeypatch):
    monkeypatch.setenv(IMPL_ENV, "cpu")
    inputs = random_inputs(1, ((6, 6),), 2, 16, 2, 5)
    value = inputs.value.transpose(2, 3).contiguous().transpose(2, 3)
    assert not value.is_contiguous()
    torch.testing.assert_close(
        ms_deform_attn(value, *inputs.args()[1:]), ms_deform_attn_pytorch(*inputs.args()), rtol=1e-5, atol=1e-6
    )


def test_package_exports():
    assert ops.ms_deform_attn is ms_deform_attn and ops.implementation_for is implementation_for


FALLBACK_SCRIPT = textwrap.dedent("""
    import logging, sys, torch
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    from adaptiveclick import ops
    from adaptiveclick.ops.synthetic import random_inputs
    inputs = random_inputs(1, ((5, 5), (2, 3)), 2, 8, 2, 4)
    outs = [ops.ms_deform_attn(*inputs.args()) for _ in range(3)]
    assert all(torch.equal(o, ops.ms_deform_attn_pytorch(*inputs.args())) for o in outs)
    print("implementation:", ops.implementation_for("cpu"))
""")


def test_a_real_failing_build_falls_back_in_a_fresh_process(tmp_path):
    """No kernel in the cache and a C++ compiler that always fails: import works, results come from PyTorch and
    exactly one warning explains why."""
    env = {
        **os.environ,
        "ADAPTIVECLICK_CACHE": str(tmp_path / "cache"),
        "CXX": "/bin/false",
        "TMPDIR": str(tmp_path / "tmp"),
    }
    env.pop(IMPL_ENV, None)
    (tmp_path / "tmp").mkdir()
    for attempt in ("compiles and fails", "remembers the failure"):
        proc = subprocess.run(
            [sys.executable, "-c", FALLBACK_SCRIPT], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr
        assert "implementation: pytorch" in proc.stdout
        warnings = [line for line in proc.stderr.splitlines() if line.startswith("WARNING")]
        assert len(warnings) == 1, proc.stderr
        assert "CPU kernel is unavailable" in warnings[0] and "python -m adaptiveclick.ops.build" in warnings[0]
        assert ("an earlier build failed" in warnings[0]) == (attempt == "remembers the failure"), warnings[0]
