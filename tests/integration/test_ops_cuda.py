"""The CUDA kernel (ops/csrc/msda_cuda.cu) against the PyTorch reference in fp32/fp16/bf16 (and a float64
gradcheck). Needs a CUDA device; skipped without one. The nvcc compile check without a GPU lives in
test_ops_build.py."""

from __future__ import annotations

import pytest
import torch

from adaptiveclick.ops import build, implementation_for, ms_deform_attn, ms_deform_attn_pytorch
from adaptiveclick.ops.dispatch import IMPL_ENV
from adaptiveclick.ops.synthetic import random_inputs

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

SHAPES = [
    pytest.param(1, ((14, 14), (28, 28), (56, 56)), 8, 32, 4, None, id="model-448"),
    pytest.param(2, ((7, 7), (14, 14), (28, 28)), 8, 32, 4, None, id="model-224-flip-batch"),
    pytest.param(2, ((3, 5), (7, 2)), 2, 48, 3, 11, id="d48-per-lane-reduction"),
    pytest.param(1, ((6, 6),), 3, 8, 2, 7, id="d8-quarter-warp"),
    pytest.param(2, ((4, 4), (8, 8)), 2, 64, 4, 9, id="d64-two-warps"),
    pytest.param(1, ((9, 9), (3, 3), (2, 1), (1, 1)), 1, 16, 4, 10, id="d16-four-levels"),
]
# relative to the largest reference magnitude; the reduced types are limited by their inputs' and outputs' rounding
TOLERANCES = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}


@pytest.fixture(scope="module")
def cuda_ops():
    try:
        build.load("cuda")
    except build.BuildError as exc:
        pytest.fail(f"the CUDA kernel must build where a GPU is present: {exc}")
    return torch.ops.adaptiveclick_msda_cuda


def check(actual, expected, rtol, name):
    scale = expected.abs().max().item() or 1.0
    err = (actual.double().cpu() - expected).abs().max().item()
    assert err <= rtol * scale, f"{name}: max error {err:.3g} > {rtol:g} * {scale:.3g}"


@pytest.mark.parametrize("dtype", list(TOLERANCES), ids=str)
@pytest.mark.parametrize("batch, levels, heads, channels, points, queries", SHAPES)
def test_matches_reference(cuda_ops, dtype, batch, levels, heads, channels, points, queries):
    inputs = random_inputs(batch, levels, heads, channels, points, queries, seed=channels).to(dtype)
    grad_output = torch.randn(
        batch, inputs.sampling_locations.shape[1], heads * channels, generator=torch.Generator().manual_seed(1)
    ).to(dtype)
    gpu = inputs.to(device="cuda")
    out = cuda_ops.forward(*gpu.args())
    grads = cuda_ops.backward(*gpu.args(), grad_output.cuda())
    ref = inputs.to(torch.float64).requires_grad_()  # the same rounded inputs, in float64 on the CPU
    ref_out = ms_deform_attn_pytorch(*ref.args())
    ref_out.backward(grad_output.double())
    assert out.dtype == dtype and all(g.dtype == dtype for g in grads)
    rtol = TOLERANCES[dtype]
    check(out, ref_out.detach(), rtol, "output")
    for got, want, name in zip(
        grads,
        (ref.value.grad, ref.sampling_locations.grad, ref.attention_weights.grad),
        ("value", "locations", "weights"),
    ):
        check(got, want, rtol * (10 if name == "locations" else 1), f"grad {name}")


def test_gradcheck_float64(cuda_ops, monkeypatch):
    monkeypatch.setenv(IMPL_ENV, "cuda")
    inputs = random_inputs(2, ((3, 4), (2, 2)), 2, 8, 2, 5, dtype=torch.float64, seed=3).to(device="cuda")
    assert torch.autograd.gradcheck(ms_deform_attn, inputs.requires_grad_().args(), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_auto_picks_cuda_and_matches_the_reference_on_gpu(cuda_ops, monkeypatch):
    monkeypatch.delenv(IMPL_ENV, raising=False)
    assert implementation_for("cuda") == "cuda"
    inputs = random_inputs(1, ((14, 14), (28, 28), (56, 56)), 8, 32, 4).to(device="cuda")
    torch.testing.assert_close(
        ms_deform_attn(*inputs.args()), ms_deform_attn_pytorch(*inputs.args()), rtol=1e-4, atol=1e-5
    )


def test_inputs_on_another_device_are_rejected(cuda_ops):
    inputs = random_inputs(1, ((4, 4),), 2, 8, 2, 3).to(device="cuda")
    with pytest.raises(RuntimeError, match="spatial_shapes must be a CUDA tensor"):
        cuda_ops.forward(inputs.value, inputs.spatial_shapes.cpu(), *inputs.args()[2:])
    with pytest.raises(RuntimeError, match="sampling_locations must be contiguous"):
        loc = inputs.sampling_locations.transpose(1, 2).contiguous().transpose(1, 2)
        cuda_ops.forward(*inputs.args()[:3], loc, inputs.attention_weights)
