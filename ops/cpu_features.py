"""The CPU's instruction sets as this project sees them: what Linux reports, capped by an override.

Every CPU-dependent choice of the project (the MSDA kernel's vector width, which precisions run natively, the
default CPU variant) reads :func:`cpu_flags`, so one variable makes a machine behave like an older CPU:

``ADAPTIVECLICK_MAX_CPU_ISA`` (or, when that is unset, oneDNN's own ``ONEDNN_MAX_CPU_ISA``) names the highest
instruction set to use, with oneDNN's names (case-insensitive): ``avx2``, ``avx2_vnni``, ``avx512_core``,
``avx512_core_vnni``, ``avx512_core_bf16``, ``avx512_core_amx`` (or ``all``). Flags above the cap are dropped.
Reading oneDNN's variable too keeps our detection and oneDNN's dispatch in agreement when only that one is set. To
emulate an AVX2 machine, cap each library (``make test-avx2`` sets all six), as measured with torch 2.14.1 and
openvino 2026.4.1 on a Zen 5:

* oneDNN in torch (convolutions, bf16): ``ONEDNN_MAX_CPU_ISA=AVX2`` (``isa:Intel AVX2``, ``jit:avx2`` kernels).
* torch's own vectorised kernels: ``ATEN_CPU_CAPABILITY=avx2``.
* fbgemm (torch's int8): ``FBGEMM_ENABLE_INSTRUCTIONS=AVX2`` (its AVX2 kernels then saturate full-range int8 as on
  a Zen 3: see :mod:`model.fast.int8_linear`).
* MKL (torch's fp32 GEMMs): ``MKL_ENABLE_INSTRUCTIONS=AVX2``; on AMD CPUs MKL runs its AVX2 Zen kernels
  (``mkl_blas_def_sgemm_kernel_0_zen``) whatever the variable says.
* OpenVINO's CPU plugin needs both ``OV_CPU_MAX_ISA=AVX2`` (its own checks: bf16 leaves
  ``OPTIMIZATION_CAPABILITIES``) and ``ONEDNN_MAX_CPU_ISA=AVX2`` (its oneDNN kernels: ``brgemm_avx2``); with only
  the latter, bf16 and int8 models fail to compile, with only the former its kernels stay AVX-512. Its MLAS GEMMs
  (``gemm_mlas_f32``, most f32 FullyConnected layers) and this project's MSDA custom op for OpenVINO pick their
  kernels from CPUID and stay AVX-512: OpenVINO's speed under the cap overstates an AVX2 CPU's
  (:data:`model.fast.defaults.CAP_IGNORED_BELOW`).
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

MAX_ISA_ENV = "ADAPTIVECLICK_MAX_CPU_ISA"
ONEDNN_MAX_ISA_ENV = "ONEDNN_MAX_CPU_ISA"

# flags (as /proc/cpuinfo spells them) that belong to each family of extensions
_AVX512 = "avx512"  # every avx512* flag
_AVX_VNNI = frozenset({"avx_vnni", "avx_vnni_int8", "avx_vnni_int16", "avx_ifma", "avx_ne_convert"})
_AVX512_VNNI = frozenset({"avx512_vnni"})
_AVX512_BF16 = frozenset({"avx512_bf16", "avx512_fp16"})
_AMX = "amx"  # every amx* flag

# oneDNN's ISA names, lowest first, with the families each one allows
ISA_LEVELS: dict[str, frozenset[str]] = {
    "avx2": frozenset(),
    "avx2_vnni": frozenset({"avx_vnni"}),
    "avx512_core": frozenset({_AVX512}),
    "avx512_core_vnni": frozenset({_AVX512, "avx512_vnni"}),
    "avx512_core_bf16": frozenset({_AVX512, "avx512_vnni", "avx512_bf16"}),
    "avx512_core_amx": frozenset({_AVX512, "avx512_vnni", "avx512_bf16", _AMX}),
}


def isa_cap() -> str | None:
    """The capped instruction set (a key of :data:`ISA_LEVELS`), or None when nothing is capped.

    Raises ValueError naming the variable when its value is not an ISA name."""
    for env in (MAX_ISA_ENV, ONEDNN_MAX_ISA_ENV):
        value = os.environ.get(env, "").strip().lower()
        if not value:
            continue
        if value in ("all", "default"):
            return None
        if value not in ISA_LEVELS:
            raise ValueError(f"{env}={value!r}: expected one of {', '.join(ISA_LEVELS)} or all")
        return value
    return None


def cap_flags(flags: frozenset[str], cap: str | None) -> frozenset[str]:
    """``flags`` without the extensions above ``cap`` (all of them when ``cap`` is None)."""
    if cap is None:
        return flags
    allowed = ISA_LEVELS[cap]

    def kept(flag: str) -> bool:
        if flag in _AVX_VNNI:
            return "avx_vnni" in allowed  # oneDNN's AVX-512 levels do not include the VEX-encoded VNNI
        if flag in _AVX512_VNNI:
            return "avx512_vnni" in allowed
        if flag in _AVX512_BF16:
            return "avx512_bf16" in allowed
        if flag.startswith(_AVX512):
            return _AVX512 in allowed
        if flag.startswith(_AMX):
            return _AMX in allowed
        return True

    return frozenset(flag for flag in flags if kept(flag))


@functools.lru_cache(maxsize=1)
def native_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux reports them (empty elsewhere: then no vector extension is assumed)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def cpu_flags() -> frozenset[str]:
    """The flags this process may use: :func:`native_flags` capped by ``ADAPTIVECLICK_MAX_CPU_ISA``."""
    return cap_flags(native_flags(), isa_cap())


def has_avx512(flags: frozenset[str] | None = None) -> bool:
    """Whether the AVX-512 foundation the MSDA kernel's wide path needs is usable."""
    flags = cpu_flags() if flags is None else flags
    return {"avx512f", "avx512vl", "avx512bw", "avx512dq"} <= flags


def cpu_name() -> str:
    """The CPU's model name, with the cap when one is set (it shows in refusal messages and benchmark headers)."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    cap = isa_cap()
    return name if cap is None else f"{name}, capped to {cap}"
