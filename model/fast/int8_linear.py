"""Dynamic int8 linear layers for CPU inference (fbgemm; full-range activations with VNNI, 7-bit without).

Weights are quantised once, symmetric per output channel; activations are quantised on the fly, per tensor, by the
kernel itself (``quantized::linear_dynamic`` measures the input's range, quantises to uint8, multiplies with
u8 x s8 dot products and rescales to float with the bias added). On the 2-core Zen 4 development machine a
ViT-B MLP layer (784 tokens, 768 -> 3072) took 5.3 ms against 20.2 ms for the fp32 MKL GEMM and 9.3 ms in bf16.

Without VNNI (AVX2 CPUs such as Zen 3, and AVX-512 without VNNI such as Skylake-SP) fbgemm multiplies with AVX2's
``vpmaddubsw``, which adds each pair of u8 x s8 products into a saturating int16: full-range activations (up to
255 x 127 x 2 = 64770 per pair) saturate. There the layer quantises activations to 7 bits (fbgemm's own remedy,
``reduce_range``), which cannot saturate. Measured on ``nn.Linear(96, 160)`` with ``randn`` inputs (relative error
of the output, ``tests/unit/test_cpu_inference.py``): full range 0.0093 with VNNI and 0.0874 on AVX2; 7-bit 0.0177 on
both (the AVX2 figures alike on this Zen 5 with ``FBGEMM_ENABLE_INSTRUCTIONS=AVX2`` and on an emulated Zen 3,
``qemu-x86_64 -cpu EPYC-Milan``). Which path fbgemm takes is asked of fbgemm itself (:func:`fbgemm_saturates`), so
that neither a cap (``FBGEMM_ENABLE_INSTRUCTIONS``) nor an emulator can make the layer pick the wrong range.

The ops live in ATen's ``quantized`` namespace; torch's Python wrappers around them (``torch.ao.quantization``) are
deprecated, so the layer calls the ops directly and :func:`int8_support` says why they cannot be used where a build
lacks them.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable, Iterator

import torch
from torch import nn

from adaptiveclick.ops.cpu_features import cpu_flags

# fbgemm's dynamic linear is the one tuned for VNNI; "x86" picks it (or oneDNN) per op, "fbgemm" is older builds.
PREFERRED_ENGINES = ("x86", "fbgemm")
# the instructions behind full-range u8 x s8 dot products with 32-bit sums (OpenVINO's int8 x int8 matmuls use any)
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
# fbgemm's int8 kernels: AVX2 at least (7-bit activations), full range only with AVX-512 VNNI (it has no AVX-VNNI
# kernels: an AVX2 CPU with AVX-VNNI, e.g. Alder Lake, runs its AVX2 kernels)
TORCH_INT8_FLAGS = ("avx2",)
FULL_RANGE_FLAGS = ("avx512_vnni",)


def quantized_engine() -> str | None:
    """The quantised CPU engine to pack weights for, or None where this torch build has none."""
    engines = torch.backends.quantized.supported_engines
    return next((e for e in PREFERRED_ENGINES if e in engines), None)


def int8_support() -> str | None:
    """None when dynamic int8 linear layers can run here, else the reason they cannot."""
    if quantized_engine() is None:
        return f"this torch build has no x86/fbgemm quantized engine (has {torch.backends.quantized.supported_engines})"
    for op in ("linear_prepack", "linear_dynamic"):
        if not hasattr(torch.ops.quantized, op):
            return f"this torch build lacks torch.ops.quantized.{op}"
    return None


@functools.lru_cache(maxsize=1)
def fbgemm_saturates() -> bool:
    """Whether this process's fbgemm sums u8 x s8 pairs in saturating 16 bits (no VNNI, or capped below it).

    One 4 x 64 product of ones: quantised at full range every pair is 255 x 127 x 2 = 64770 > 32767, so a
    saturating kernel returns ~32.4 instead of 64. Asked once per process (fbgemm reads its cap once too)."""
    with warnings.catch_warnings(), _engine(quantized_engine() or "x86"):
        warnings.simplefilter("ignore", UserWarning)
        weight = torch.ones(8, 64)
        scale = torch.full((8,), 1 / 127, dtype=torch.double)
        qweight = torch.quantize_per_channel(weight, scale, torch.zeros(8, dtype=torch.long), 0, torch.qint8)
        packed = torch.ops.quantized.linear_prepack(qweight, None)
        out = torch.ops.quantized.linear_dynamic(torch.ones(4, 64), packed, False)
    return bool(out.min() < 60.0)


def needs_reduced_range(flags: frozenset[str], saturates: bool) -> bool:
    """7-bit activations unless the flags this project may use include full-range VNNI and fbgemm does not
    saturate (either one is enough to reduce: a capped CPU then computes like the CPU it stands for)."""
    return saturates or not flags & set(FULL_RANGE_FLAGS)


def reduced_range(flags: frozenset[str] | None = None) -> bool:
    """Whether a :class:`DynamicInt8Linear` made now quantises its activations to 7 bits."""
    return needs_reduced_range(cpu_flags() if flags is None else flags, fbgemm_saturates())


@contextlib.contextmanager
def _engine(name: str) -> Iterator[None]:
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


class DynamicInt8Linear(nn.Module):
    """Drop-in inference replacement for an ``nn.Linear``: ``[..., in] -> [..., out]`` float32.

    Activations use the full uint8 range where fbgemm has VNNI, else 7 bits (see the module's docstring: AVX2's
    ``vpmaddubsw`` would saturate full-range products).

    Args:
        linear: the layer to quantise (its weights are read once; the layer itself is not kept).
        reduce_range: 7-bit activations; None (default): where needed (:func:`reduced_range`).
    """

    def __init__(self, linear: nn.Linear, reduce_range: bool | None = None) -> None:
        super().__init__()
        reason = int8_support()
        if reason:
            raise RuntimeError(f"int8 linear layers are not available: {reason}")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.engine = quantized_engine()
        self.reduce_range = reduced_range() if reduce_range is None else bool(reduce_range)
        weight = linear.weight.detach().float().cpu()
        bias = None if linear.bias is None else linear.bias.detach().float().cpu()
        # the float weights stay in the state_dict under their usual names, so a converted network saves, loads
        # and compares like the original; only the packed int8 copy is used to compute
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        scale = (weight.abs().amax(dim=1) / 127.0).clamp_min(1e-12).double()
        zero_point = torch.zeros(self.out_features, dtype=torch.long)
        with warnings.catch_warnings(), _engine(self.engine):
            # quantize_per_channel warns that quantized tensors are deprecated; the packed result is plain data
            warnings.simplefilter("ignore", UserWarning)
            qweight = torch.quantize_per_channel(weight, scale, zero_point, 0, torch.qint8)
            self._packed = torch.ops.quantized.linear_prepack(qweight, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32:
            x = x.float()
        shape = x.shape
        out = torch.ops.quantized.linear_dynamic(x.reshape(-1, shape[-1]), self._packed, self.reduce_range)
        return out.view(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        activations = "7-bit" if self.reduce_range else "8-bit"
        return f"in_features={self.in_features}, out_features={self.out_features}, engine={self.engine}, {activations}"


def quantize_linears(module: nn.Module, include: Callable[[str, nn.Linear], bool] = lambda name, layer: True) -> int:
    """Replace, in place, every ``nn.Linear`` under ``module`` for which ``include(qualified_name, layer)`` is true
    by a :class:`DynamicInt8Linear`. Returns how many were replaced."""
    targets = [
        (name, layer) for name, layer in module.named_modules() if type(layer) is nn.Linear and include(name, layer)
    ]  # exact type: MHA's out_proj stays as is
    for name, layer in targets:
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, DynamicInt8Linear(layer))
    return len(targets)
