"""The compiled CPU kernel (ops/csrc/msda_cpu.cpp) against the PyTorch reference: forward, backward, gradcheck,
every instruction set the CPU supports, reduced precision, edge cases and input validation."""

from __future__ import annotations

import pytest
import torch

from adaptiveclick.ops import build, ms_deform_attn_pytorch
from adaptiveclick.ops.cpu_features import has_avx512
from adaptiveclick.ops.dispatch import IMPL_ENV, ms_deform_attn
from adaptiveclick.ops.synthetic import random_inputs

# (batch, levels, heads, channels, points, queries): the model's geometry first, then odd shapes that reach the
# 64/32/16-wide vector paths and the any-width path.
SHAPES = [
    pytest.param(1, ((14, 14), (28, 28), (56, 56)), 8, 32, 4, None, id="model-448"),
    pytest.param(2, ((7, 7), (14, 14), (28, 28)), 8, 32, 4, None, id="model-224-flip-batch"),
    pytest.param(2, ((3, 5), (7, 2)), 2, 48, 3, 11, id="d48"),
    pytest.param(1, ((6, 6),), 3, 5, 2, 7, id="d5-one-level"),
    pytest.param(2, ((4, 4), (8, 8)), 2, 64, 4, 9, id="d64"),
    pytest.param(1, ((9, 9), (3, 3), (2, 1), (1, 1)), 1, 16, 4, 10, id="d16-four-levels"),
    pytest.param(1, ((9, 9),), 2, 130, 1, 6, id="d130"),
]


@pytest.fixture(scope="module")
def cpu_ops():
    try:
        build.load("cpu")
    except build.BuildError as exc:
        pytest.fail(f"the CPU kernel must build wherever the tests run: {exc}")
    return torch.ops.adaptiveclick_msda_cpu


@pytest.fixture(params=["avx512", "avx2", "baseline"])
def isa(request, cpu_ops):
    if request.param not in cpu_ops.instruction_sets():
        pytest.skip(f"this CPU lacks {request.param}")
    previous = cpu_ops.select_instruction_set(request.param)
    assert cpu_ops.instruction_set() == request.param
    yield request.param
    cpu_ops.select_instruction_set(previous)


def reference_grads(inputs, grad_output):
    """Reference output and gradients in float64."""
    ref = inputs.to(torch.float64).requires_grad_()
    out = ms_deform_attn_pytorch(*ref.args())
    out.backward(grad_output.double())
    return out.detach(), ref.value.grad, ref.sampling_locations.grad, ref.attention_weights.grad


def assert_close(actual, expected, rtol, name):
    """Elementwise error within rtol of the largest reference magnitude (gradients span orders of magnitude)."""
    scale = expected.abs().max().item() or 1.0
    err = (actual.double() - expected).abs().max().item()
    assert err <= rtol * scale, f"{name}: max error {err:.3g} > {rtol:g} * {scale:.3g}"


@pytest.mark.parametrize("batch, levels, heads, channels, points, queries", SHAPES)
def test_matches_reference_forward_and_backward(cpu_ops, isa, batch, levels, heads, channels, points, queries):
    inputs = random_inputs(batch, levels, heads, channels, points, queries, seed=channels)
    grad_output = torch.randn(
        batch, inputs.sampling_locations.shape[1], heads * channels, generator=torch.Generator().manual_seed(1)
    )
    out = cpu_ops.forward(*inputs.args())
    grad_value, grad_loc, grad_attn = cpu_ops.backward(*inputs.args(), grad_output)
    ref_out, ref_value, ref_loc, ref_attn = reference_grads(inputs, grad_output)
    assert out.shape == ref_out.shape and out.dtype == torch.float32
    assert_close(out, ref_out, 1e-5, "output")
    assert_close(grad_value, ref_value, 1e-5, "grad value")
    assert_close(grad_loc, ref_loc, 1e-4, "grad sampling_locations")
    assert_close(grad_attn, ref_attn, 1e-5, "grad attention_weights")


def test_locations_outside_and_on_the_border(cpu_ops):
    """Zero padding: points beyond the map contribute nothing, points within one pixel of it partly."""
    inputs = random_inputs(1, ((5, 6), (3, 2)), 2, 16, 4, 8, seed=3)
    loc = inputs.sampling_locations
    loc[..., 0, :] = torch.tensor([-0.5, 1.5])  # far outside
    loc[..., 1, :] = torch.tensor([0.0, 1.0])  # on the corners: half the bilinear support is outside
    loc[..., 2, 0] = 1.0 + 0.4 / 6  # just beyond the right edge, still in bilinear reach
    loc[0, 0, 0, 0, 3] = float("inf")
    grad_output = torch.randn(1, 8, 32, generator=torch.Generator().manual_seed(0))
    out = cpu_ops.forward(*inputs.args())
    grads = cpu_ops.backward(*inputs.args(), grad_output)
    finite = inputs.to(torch.float64)
    finite.sampling_locations[0, 0, 0, 0, 3] = 5.0  # the reference's grid_sample has no inf; both are "outside"
    ref_out, *ref_grads = reference_grads(finite, grad_output)
    assert_close(out, ref_out, 1e-5, "output")
    ref_grads[1][0, 0, 0, 0, 3] = 0.0
    for got, want, name in zip(grads, ref_grads, ("value", "locations", "weights")):
        assert torch.isfinite(got).all(), name
        assert_close(got, want, 1e-5, f"grad {name}")


@pytest.mark.parametrize("dtype, rtol", [(torch.bfloat16, 2e-2), (torch.float16, 2e-3)])
def test_reduced_precision(cpu_ops, dtype, rtol):
    """bfloat16/float16 inputs, accumulated in float32: only the output rounding differs from float64 maths."""
    inputs = random_inputs(1, ((14, 14), (28, 28)), 8, 32, 4, 200, seed=5).to(dtype)
    grad_output = torch.randn(1, 200, 256, generator=torch.Generator().manual_seed(2)).to(dtype)
    out = cpu_ops.forward(*inputs.args())
    grads = cpu_ops.backward(*inputs.args(), grad_output)
    ref_out, *ref_grads = reference_grads(inputs, grad_output)  # the same rounded inputs, in float64
    assert out.dtype == dtype and all(g.dtype == dtype for g in grads)
    assert_close(out, ref_out, rtol, "output")
    for got, want, name in zip(grads, ref_grads, ("value", "locations", "weights")):
        assert_close(got, want, rtol, f"grad {name}")


def test_float64_is_exact_to_rounding(cpu_ops):
    inputs = random_inputs(2, ((4, 5), (2, 3)), 2, 16, 2, 6, dtype=torch.float64, seed=7)
    torch.testing.assert_close(
        cpu_ops.forward(*inputs.args()), ms_deform_attn_pytorch(*inputs.args()), rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("channels", [3, 16])
def test_gradcheck_float64(cpu_ops, monkeypatch, channels):
    monkeypatch.setenv(IMPL_ENV, "cpu")
    inputs = random_inputs(2, ((3, 4), (2, 2)), 2, channels, 2, 5, dtype=torch.float64, seed=channels)
    inputs.requires_grad_()
    assert torch.autograd.gradcheck(ms_deform_attn, inputs.args(), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_threads_do_not_change_the_result(cpu_ops):
    """Forward rows and backward heads are split between threads without atomics: results are bitwise equal."""
    inputs = random_inputs(2, ((14, 14), (28, 28)), 8, 32, 4, None, seed=11)
    grad_output = torch.randn(2, inputs.value.shape[1], 256, generator=torch.Generator().manual_seed(3))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = [cpu_ops.forward(*inputs.args()), *cpu_ops.backward(*inputs.args(), grad_output)]
        torch.set_num_threads(max(2, threads))
        multi = [cpu_ops.forward(*inputs.args()), *cpu_ops.backward(*inputs.args(), grad_output)]
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(single, multi):
        assert torch.equal(a, b)


def test_empty_queries(cpu_ops):
    inputs = random_inputs(1, ((4, 4),), 2, 8, 2, 0)
    out = cpu_ops.forward(*inputs.args())
    assert out.shape == (1, 0, 16)
    grads = cpu_ops.backward(*inputs.args(), out)
    assert [g.shape for g in grads] == [
        inputs.value.shape,
        inputs.sampling_locations.shape,
        inputs.attention_weights.shape,
    ]
    assert not grads[0].any()


def _bad(change):
    inputs = random_inputs(1, ((4, 4), (2, 2)), 2, 8, 2, 3)
    args = list(inputs.args())
    change(args)
    return args


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.__setitem__(0, a[0][0]), "value must be [N, S, M, D]"),
        (lambda a: a.__setitem__(3, a[3].double()), "must share one dtype"),
        (lambda a: a.__setitem__(1, a[1].int()), "must be int64"),
        (
            lambda a: a.__setitem__(3, a[3].transpose(1, 2).contiguous().transpose(1, 2)),
            "sampling_locations must be contiguous",
        ),
        (lambda a: a.__setitem__(1, torch.tensor([[4, 4], [2, 3]])), "spatial_shapes add up to 22"),
        (lambda a: a.__setitem__(2, torch.tensor([0, 15])), "level_start_index[1] must be 16"),
        (lambda a: a.__setitem__(4, a[4][..., :1].contiguous()), "attention_weights"),
        (lambda a: a.__setitem__(0, a[0].int()), "value must be floating point"),
        (lambda a: a.__setitem__(1, torch.tensor([[4, 4], [0, 2]])), "spatial_shapes[1] must be positive"),
    ],
)
def test_bad_inputs_raise_clear_errors(cpu_ops, change, message):
    with pytest.raises(RuntimeError) as info:
        cpu_ops.forward(*_bad(change))
    assert message in str(info.value)


def test_bad_grad_output_shape(cpu_ops):
    inputs = random_inputs(1, ((4, 4),), 2, 8, 2, 3)
    with pytest.raises(RuntimeError, match=r"grad_output must be \[N, Lq, M\*D\]"):
        cpu_ops.backward(*inputs.args(), torch.zeros(1, 3, 15))


def test_best_instruction_set_is_the_default(cpu_ops):
    """The widest the silicon has, unless ADAPTIVECLICK_MAX_CPU_ISA caps it below AVX-512 (then AVX2)."""
    best = cpu_ops.instruction_sets()[0]
    assert cpu_ops.instruction_set() == ("avx2" if best == "avx512" and not has_avx512() else best)
    assert cpu_ops.instruction_sets()[-1] == "baseline"


def test_unknown_instruction_set(cpu_ops):
    with pytest.raises(RuntimeError, match="instruction set 'sse9' is not supported"):
        cpu_ops.select_instruction_set("sse9")
