"""``ms_deform_attn``: one entry point that picks the fastest available implementation.

Order of preference: the CUDA kernel for CUDA tensors, the C++ (OpenMP, vectorised) kernel for CPU tensors, and
the pure PyTorch version (:mod:`ops.reference`) as the last resort. The compiled kernels are built on first use
(see :mod:`ops.build`; ``python -m adaptiveclick.ops.build`` builds them ahead of time). A kernel that cannot be
built logs one warning per process and the call falls back to PyTorch; importing this package never builds or fails.

``ADAPTIVECLICK_MSDA_IMPL`` forces one of ``auto`` (default), ``cuda``, ``cpu`` or ``pytorch``. Forcing a compiled
kernel that cannot be built, or one that does not match the tensors' device, raises
:class:`MSDAUnavailableError` instead of falling back.
"""

from __future__ import annotations

import logging
import os
import threading

import torch
from torch.autograd.function import once_differentiable

from .reference import ms_deform_attn_pytorch

# ops.build is imported inside the functions: importing the package must not import it, or
# `python -m adaptiveclick.ops.build` would run a second copy of that module next to the imported one.

log = logging.getLogger(__name__)

IMPL_ENV = "ADAPTIVECLICK_MSDA_IMPL"
IMPLEMENTATIONS = ("auto", "cuda", "cpu", "pytorch")

_state_lock = threading.Lock()
_failures: dict[str, str] = {}  # kind -> why it could not be built (warned about once)


class MSDAUnavailableError(RuntimeError):
    """A forced MSDA implementation cannot run here."""


def requested_impl() -> str:
    """The implementation forced by ``ADAPTIVECLICK_MSDA_IMPL`` (``auto`` when unset)."""
    impl = os.environ.get(IMPL_ENV, "auto").strip().lower() or "auto"
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"{IMPL_ENV}={impl!r}: expected one of {', '.join(IMPLEMENTATIONS)}")
    return impl


def _kernel_ready(kind: str) -> str | None:
    """Load (building if needed) the ``kind`` kernel; None when ready, else why not (warned about once)."""
    from . import build

    if build.is_loaded(kind):
        return None
    with _state_lock:
        if kind in _failures:
            return _failures[kind]
        try:
            build.load(kind)
            return None
        except Exception as exc:  # BuildError, or anything unforeseen: never let it break the caller
            reason = str(exc) if isinstance(exc, build.BuildError) else f"{type(exc).__name__}: {exc}"
            _failures[kind] = reason
            log.warning(
                "multi-scale deformable attention: the compiled %s kernel is unavailable, using the slower PyTorch "
                "implementation instead (run `python -m adaptiveclick.ops.build` for the full build log). Reason: %s",
                kind.upper(),
                _summary(reason),
            )
            return reason


def _summary(reason: str, limit: int = 1500) -> str:
    """The end of a compiler log is where the error is."""
    return reason if len(reason) <= limit else "..." + reason[-limit:]


def implementation_for(device: torch.device | str) -> str:
    """The implementation :func:`ms_deform_attn` uses for tensors on ``device``: ``cuda``, ``cpu`` or ``pytorch``.

    Builds the kernel on first use. Raises :class:`MSDAUnavailableError` when ``ADAPTIVECLICK_MSDA_IMPL`` forces
    one that cannot serve ``device``.
    """
    from . import build

    device = torch.device(device)
    impl = requested_impl()
    if impl == "pytorch":
        return "pytorch"
    kind = device.type if device.type in build.KINDS else None
    if impl == "auto":
        if kind == "cuda" and not torch.cuda.is_available():
            return "pytorch"
        return kind if kind is not None and _kernel_ready(kind) is None else "pytorch"
    if impl != kind:
        raise MSDAUnavailableError(
            f"{IMPL_ENV}={impl} forces the {impl.upper()} kernel, but the tensors are on {device}"
        )
    reason = _kernel_ready(impl)
    if reason is not None:
        raise MSDAUnavailableError(
            f"{IMPL_ENV}={impl} forces the compiled {impl.upper()} kernel, which is unavailable: {_summary(reason)}"
        )
    return impl


def _ops(kind: str):
    from .build import EXTENSION_NAMES

    return getattr(torch.ops, EXTENSION_NAMES[kind])


class _CompiledMSDA(torch.autograd.Function):
    """Autograd around the compiled forward/backward operators (first-order gradients)."""

    @staticmethod
    def forward(ctx, kind, value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
        ctx.kind = kind
        ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
        return _ops(kind).forward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        grad_value, grad_locations, grad_weights = _ops(ctx.kind).backward(*ctx.saved_tensors, grad_output.contiguous())
        return None, grad_value, None, None, grad_locations, grad_weights


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Multi-scale deformable attention with the fastest available implementation.

    Args:
        value: ``[N, S, M, D]`` values of all levels, flattened and concatenated (S = sum of H_l * W_l).
        spatial_shapes: ``[L, 2]`` int64 ``(H_l, W_l)`` per level.
        level_start_index: ``[L]`` int64 offset of each level in ``S``.
        sampling_locations: ``[N, Lq, M, L, P, 2]`` normalised ``(x, y)``: bilinear, align_corners=False,
            zeros outside.
        attention_weights: ``[N, Lq, M, L, P]``.

    Returns:
        ``[N, Lq, M * D]`` in the promoted dtype of the three float inputs. Differentiable in ``value``,
        ``sampling_locations`` and ``attention_weights``.
    """
    impl = implementation_for(value.device)
    if impl == "pytorch":
        return ms_deform_attn_pytorch(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    dtype = torch.promote_types(torch.promote_types(value.dtype, sampling_locations.dtype), attention_weights.dtype)
    spatial_shapes = spatial_shapes.to(device=value.device, dtype=torch.long).contiguous()
    level_start_index = level_start_index.to(device=value.device, dtype=torch.long).contiguous()
    return _CompiledMSDA.apply(
        impl,
        value.to(dtype).contiguous(),
        spatial_shapes,
        level_start_index,
        sampling_locations.to(dtype).contiguous(),
        attention_weights.to(dtype).contiguous(),
    )
