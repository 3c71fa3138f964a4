"""The OpenVINO custom op of MSDA (ops/csrc/msda_openvino.cpp): its build (key, markers) and its numbers against
the PyTorch reference, through the route the engine uses (torch.export of ops.exportable's operator, then
openvino.convert_model with the op library as an extension)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from adaptiveclick.ops import build, ms_deform_attn_pytorch, openvino_build
from adaptiveclick.ops.exportable import OP_NAME, export_form, exportable_msda
from adaptiveclick.storage.paths import CACHE_ENV

ov = pytest.importorskip("openvino", reason="the openvino extra is not installed (pip install '.[openvino]')")


@pytest.fixture(scope="module")
def library():
    try:
        return openvino_build.library()
    except build.BuildError as exc:
        pytest.fail(f"the OpenVINO MSDA op must build wherever openvino is installed: {exc}")


class Sampling(torch.nn.Module):
    def __init__(self, shapes):
        super().__init__()
        self.shapes = shapes

    def forward(self, value, locations, weights):
        return exportable_msda(value, self.shapes, locations, weights)


def msda_inputs(shapes, batch=2, queries=50, heads=2, channels=32, points=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    spatial = sum(h * w for h, w in shapes)
    value = torch.randn(batch, spatial, heads, channels, generator=gen)
    # some locations outside [0, 1]: zeros outside, partial corners at the border
    locations = torch.rand(batch, queries, heads, len(shapes), points, 2, generator=gen) * 1.2 - 0.1
    weights = torch.rand(batch, queries, heads, len(shapes), points, generator=gen).softmax(-1)
    return value, locations, weights


def compile_sampling(shapes, inputs, library, form="op", hint="f32"):
    with export_form(form):
        program = torch.export.export(Sampling(shapes), inputs)
    kwargs = {"extension": [str(library)]} if form == "op" else {}
    model = ov.convert_model(program, **kwargs)
    core = ov.Core()
    core.add_extension(str(library))
    return model, core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": 2})


@pytest.mark.parametrize("channels", [32, 16, 24])  # the kernel's 32-wide, 16-wide and any-width paths
def test_custom_op_matches_the_reference(library, channels):
    shapes = [(3, 4), (6, 8), (12, 16)]
    inputs = msda_inputs(shapes, channels=channels)
    model, compiled = compile_sampling(shapes, inputs, library)
    assert "MSDeformAttn" in {op.get_type_name() for op in model.get_ops()}
    spatial_shapes = torch.tensor(shapes)
    starts = torch.cat((spatial_shapes.new_zeros(1), spatial_shapes.prod(1).cumsum(0)[:-1]))
    expected = ms_deform_attn_pytorch(inputs[0], spatial_shapes, starts, *inputs[1:])
    out = compiled([t.numpy() for t in inputs])[0]
    assert out.shape == (2, 50, 2 * channels)
    np.testing.assert_allclose(out, expected.numpy(), atol=2e-6, rtol=1e-5)
    # eagerly the operator is the compiled torch kernel (what runs outside an export)
    eager = torch.ops.adaptiveclick.msda_sample(*inputs, [x for s in shapes for x in s])
    torch.testing.assert_close(eager, expected, atol=2e-6, rtol=1e-5)


def test_custom_op_in_a_bf16_model_and_the_grid_sample_form(library):
    shapes = [(3, 4), (6, 8)]
    inputs = msda_inputs(shapes, batch=1)
    spatial_shapes = torch.tensor(shapes)
    starts = torch.cat((spatial_shapes.new_zeros(1), spatial_shapes.prod(1).cumsum(0)[:-1]))
    expected = ms_deform_attn_pytorch(inputs[0], spatial_shapes, starts, *inputs[1:]).numpy()
    _, bf16 = compile_sampling(shapes, inputs, library, hint="bf16")
    np.testing.assert_allclose(bf16([t.numpy() for t in inputs])[0], expected, atol=2e-6, rtol=1e-5)
    model, grid = compile_sampling(shapes, inputs, library, form="grid_sample")
    assert "GridSample" in {op.get_type_name() for op in model.get_ops()}
    np.testing.assert_allclose(grid([t.numpy() for t in inputs])[0], expected, atol=1e-5, rtol=1e-4)
    assert OP_NAME == "adaptiveclick.msda_sample.default"


def test_build_key_tracks_sources_and_the_openvino_version(monkeypatch, tmp_path):
    copy = tmp_path / "csrc"
    shutil.copytree(build.CSRC, copy)
    monkeypatch.setattr(build, "CSRC", copy)
    monkeypatch.setattr(openvino_build, "CSRC", copy)
    torch_key, ov_key = build.build_key("cpu"), openvino_build.build_key()
    (copy / "msda_openvino.cpp").write_text((copy / "msda_openvino.cpp").read_text() + "\n// changed\n")
    assert build.build_key("cpu") == torch_key  # editing the OpenVINO op does not rebuild the torch kernels
    assert openvino_build.build_key() != ov_key
    ov_key = openvino_build.build_key()
    (copy / "msda_cpu_kernel.h").write_text((copy / "msda_cpu_kernel.h").read_text() + "\n// changed\n")
    assert build.build_key("cpu") != torch_key and openvino_build.build_key() != ov_key  # the shared kernel
    ov_key = openvino_build.build_key()
    monkeypatch.setattr(openvino_build, "openvino_version", lambda: "0.0.0")
    assert openvino_build.build_key() != ov_key
    assert openvino_build.build_name().startswith("adaptiveclick_msda_openvino-")


def test_a_failed_build_is_not_retried_until_asked(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(openvino_build, "_library", None)
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    with pytest.raises(build.BuildError, match="no C\\+\\+ compiler"):
        openvino_build.library()
    failed = tmp_path / "cache" / "torch_extensions" / openvino_build.build_name() / build.FAILED_MARKER
    assert failed.is_file()
    monkeypatch.delenv("CXX")
    monkeypatch.setattr(openvino_build, "build_key", lambda: "stale")  # same folder name as before
    monkeypatch.setattr(openvino_build, "build_name", lambda: failed.parent.name)
    with pytest.raises(build.BuildError, match="an earlier build failed"):
        openvino_build.library()
    with pytest.raises(build.BuildError, match="no finished build"):
        openvino_build.library(jit=False)
