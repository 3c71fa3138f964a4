"""MSDA in a form ``torch.export`` can capture: one operator node, or the grid_sample arithmetic with static shapes.

Under ``torch.export`` the compiled kernels cannot be traced (no fake implementation), and the reference reads the
level shapes from a tensor (data-dependent). :class:`ops.MSDeformAttn` therefore calls :func:`exportable_msda`
while exporting, with the level shapes as Python ints. Two forms, chosen with :func:`export_form`:

* ``op`` (default): ``torch.ops.adaptiveclick.msda_sample``, a ``torch.library`` operator that stays one node in
  the exported program (FX name ``adaptiveclick.msda_sample.default``). Run eagerly it calls
  :func:`ops.ms_deform_attn` (the compiled kernel); an exporter that knows the name swaps it for its own kernel
  (the OpenVINO custom op in ``ops/csrc/msda_openvino.cpp`` registers a conversion under that name).
* ``grid_sample``: :func:`ops.reference.ms_deform_attn_static`, plain torch operators any exporter converts
  (about 10x slower than the kernels in OpenVINO at AdaptiveClick-B's shapes).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence

import torch

from .reference import ms_deform_attn_static

EXPORT_FORMS = ("op", "grid_sample")
#: the exported node's name as OpenVINO's PyTorch frontend sees it (``namespace.name.overload``)
OP_NAME = "adaptiveclick.msda_sample.default"

_form: contextvars.ContextVar[str] = contextvars.ContextVar("msda_export_form", default="op")


@contextlib.contextmanager
def export_form(form: str) -> Iterator[None]:
    """Export MSDA as ``form`` (one of :data:`EXPORT_FORMS`) inside the ``with`` block."""
    if form not in EXPORT_FORMS:
        raise ValueError(f"unknown MSDA export form {form!r}; expected one of {', '.join(EXPORT_FORMS)}")
    token = _form.set(form)
    try:
        yield
    finally:
        _form.reset(token)


@torch.library.custom_op("adaptiveclick::msda_sample", mutates_args=())
def msda_sample(value: torch.Tensor, locations: torch.Tensor, weights: torch.Tensor, shapes: list[int]) -> torch.Tensor:
    """MSDA sampling with the level shapes flat ``[H_0, W_0, H_1, W_1, ...]``: ``[N, Lq, M * D]``."""
    from .dispatch import ms_deform_attn

    spatial_shapes = torch.tensor(shapes, dtype=torch.long, device=value.device).view(-1, 2)
    level_start_index = torch.cat((spatial_shapes.new_zeros(1), spatial_shapes.prod(1).cumsum(0)[:-1]))
    return ms_deform_attn(value, spatial_shapes, level_start_index, locations, weights)


@msda_sample.register_fake
def _(value, locations, weights, shapes):
    return value.new_empty((value.shape[0], locations.shape[1], value.shape[2] * value.shape[3]))


def exportable_msda(
    value: torch.Tensor,
    level_shapes: Sequence[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """MSDA in the current :func:`export_form`; arguments as :func:`ops.ms_deform_attn`, shapes as Python ints."""
    if _form.get() == "grid_sample":
        return ms_deform_attn_static(value, list(level_shapes), sampling_locations, attention_weights)
    flat = [int(x) for shape in level_shapes for x in shape]
    return torch.ops.adaptiveclick.msda_sample(value, sampling_locations, attention_weights, flat)
