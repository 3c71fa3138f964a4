"""``ops.MSDeformAttn``: checkpoint parameter names, and the same outputs and gradients whichever implementation
of the attention runs underneath."""

from __future__ import annotations

import pytest
import torch

from adaptiveclick.ops import MSDeformAttn, build, implementation_for
from adaptiveclick.ops.dispatch import IMPL_ENV
from adaptiveclick.ops.synthetic import level_layout, reference_points

LEVELS = ((14, 14), (28, 28), (56, 56))


@pytest.fixture(scope="module")
def cpu_kernel():
    try:
        build.load("cpu")
    except build.BuildError as exc:
        pytest.fail(f"the CPU kernel must build wherever the tests run: {exc}")


def module_inputs(batch: int, levels, d_model: int = 256, padding: bool = False, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    spatial_shapes, level_start_index = level_layout(levels)
    size = int(spatial_shapes.prod(1).sum())
    src = torch.randn(batch, size, d_model, generator=gen)
    query = src + torch.randn(batch, size, d_model, generator=gen)
    ref = reference_points(levels).float()[None, :, None, :].expand(batch, -1, len(levels), -1)
    mask = torch.rand(batch, size, generator=gen) < 0.1 if padding else None
    return query, ref, src, spatial_shapes, level_start_index, mask


def make_module(seed: int = 0, levels: int = 3) -> MSDeformAttn:
    torch.manual_seed(seed)
    module = MSDeformAttn(256, levels, 8, 4)
    with torch.no_grad():  # trained-looking weights: offsets and attention that depend on the query
        module.sampling_offsets.weight.normal_(0, 0.01)
        module.attention_weights.weight.normal_(0, 0.05)
    return module


def run(module, inputs, impl, monkeypatch):
    monkeypatch.setenv(IMPL_ENV, impl)
    assert implementation_for("cpu") == impl
    module.zero_grad()
    query, ref, src, shapes, starts, mask = (
        t.clone().requires_grad_(t.is_floating_point()) if t is not None else None for t in inputs
    )
    out = module(query, ref, src, shapes, starts, mask)
    out.pow(2).mean().backward()
    grads = {name: p.grad.clone() for name, p in module.named_parameters()}
    return out.detach(), query.grad, src.grad, grads


def test_parameter_names_match_the_checkpoints():
    names = [name for name, _ in MSDeformAttn(256, 3, 8, 4).named_parameters()]
    assert names == [
        "sampling_offsets.weight",
        "sampling_offsets.bias",
        "attention_weights.weight",
        "attention_weights.bias",
        "value_proj.weight",
        "value_proj.bias",
        "output_proj.weight",
        "output_proj.bias",
    ]


@pytest.mark.parametrize("batch, padding", [(1, False), (2, True)], ids=["model", "flip-batch-padding"])
def test_same_result_with_every_implementation(cpu_kernel, monkeypatch, batch, padding):
    module = make_module()
    inputs = module_inputs(batch, LEVELS, padding=padding)
    expected = run(module, inputs, "pytorch", monkeypatch)
    got = run(module, inputs, "cpu", monkeypatch)
    for a, b, name in zip(got[:3], expected[:3], ("output", "grad query", "grad input")):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    for name in expected[3]:
        torch.testing.assert_close(got[3][name], expected[3][name], rtol=1e-4, atol=1e-6, msg=name)


def test_auto_picks_the_kernel_in_the_model(cpu_kernel, monkeypatch):
    """The model's path (MSDeformAttn -> ms_deform_attn) runs the compiled kernel without being asked."""
    monkeypatch.delenv(IMPL_ENV, raising=False)
    module = make_module()
    query, ref, src, shapes, starts, _ = module_inputs(1, LEVELS)
    src.requires_grad_(True)
    out = module(query, ref, src, shapes, starts)
    names, seen, stack = set(), set(), [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        names.add(type(node).__name__)
        stack.extend(n for n, _ in node.next_functions)
    assert any("CompiledMSDA" in n for n in names), names
    assert not any("GridSampler" in n for n in names), names


def test_inconsistent_spatial_shapes_are_rejected():
    module = make_module()
    query, ref, src, _, _, _ = module_inputs(1, ((4, 4), (2, 2), (1, 1)))
    shapes, starts = level_layout(((4, 4), (2, 2), (2, 2)))
    with pytest.raises(ValueError, match="do not add up"):
        module(query, ref, src, shapes, starts)
