"""What this CPU and this torch build can run fast: instruction sets behind each precision.

The low-precision paths only pay where the CPU has the instructions: torch's int8 (fbgemm) needs AVX2 for its
u8 x s8 dot products (full-range activations with AVX-512 VNNI, 7-bit ones without: see
:mod:`model.fast.int8_linear`), bf16 needs native bf16 dot products (``avx512_bf16`` or AMX); without them oneDNN
emulates bf16 with fp32 arithmetic plus conversions, which is slower than fp32 itself.
"""

from __future__ import annotations

import torch

from adaptiveclick.ops.cpu_features import cpu_flags, cpu_name

from .int8_linear import TORCH_INT8_FLAGS, int8_support

BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def precision_support(
    precision: str, device: torch.device | str = "cpu", flags: frozenset[str] | None = None
) -> str | None:
    """None when ``precision`` runs natively on ``device``, else why not (for the benchmark and error messages)."""
    device = torch.device(device)
    if precision == "fp32":
        return None
    if device.type != "cpu":
        return f"precision={precision} is a CPU path; on {device.type} the network runs in fp32"
    flags = cpu_flags() if flags is None else flags
    if precision == "int8":
        reason = int8_support()
        if reason:
            return reason
        if not flags & set(TORCH_INT8_FLAGS):
            return f"instruction set missing: int8 needs {', '.join(TORCH_INT8_FLAGS)} ({cpu_name()})"
        return None
    if precision == "bf16":
        if not torch.backends.mkldnn.is_available():
            return "this torch build has no oneDNN (mkldnn)"
        if not flags & set(BF16_FLAGS):
            return f"instruction set missing: bf16 needs one of {', '.join(BF16_FLAGS)} ({cpu_name()})"
        return None
    raise ValueError(f"unknown precision {precision!r}")
