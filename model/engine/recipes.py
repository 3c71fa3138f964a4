"""What each ``precision`` means for the OpenVINO engine: the IR it compiles and the CPU plugin's settings.

* ``fp32``: the exported f32 IR, ``INFERENCE_PRECISION_HINT=f32`` (the reference numerics, to float rounding).
* ``bf16``: the same IR with ``INFERENCE_PRECISION_HINT=bf16`` (matmuls and convolutions in bf16, f32
  accumulation); needs native bf16 (``avx512_bf16`` or AMX).
* ``int8``: the ViT blocks' linear layers (~70% of the compute) with int8 weights (``nncf.compress_weights``,
  INT8_ASYM, per output channel; no calibration data, seconds), their activations quantised per token group at run
  time (``DYNAMIC_QUANTIZATION_GROUP_SIZE=256``: int8 x int8 matmuls with VNNI or AMX), everything else in bf16
  where native (else f32); needs VNNI or AMX. Only the ViT: with CAMD's weights compressed too, openvino 2026.4.1
  fails to compile the model (``Check 'm_element_type.is_static()' failed at make_tensor.cpp``), and compressing
  the deformable encoder or the pixel decoder as well saved <2% for 0.8-1.3 IoU points. Refused without VNNI: there
  the plugin skips the dynamic quantisation and only decompresses the int8 weights to f32 for its f32 kernels
  (``brgemm:avx2`` with ``wei:u8`` under ``ONEDNN_MAX_CPU_ISA=AVX2``), slower than the fp32 recipe
  (:data:`AVX2_INT8_MEASURED`); torch's int8 (``engine=torch``) runs there with 7-bit activations.
* ``int8-static``: NNCF post-training quantisation (``nncf.quantize``, transformer preset with SmoothQuant) of the
  same ViT layers, weights and activations, calibrated on the network inputs of real NoC clicks (see
  :mod:`model.engine.calibration`), bf16 elsewhere where native.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adaptiveclick.ops.cpu_features import cpu_flags, cpu_name

from ..fast.cpu_features import BF16_FLAGS
from ..fast.int8_linear import INT8_FLAGS

OPENVINO_PRECISIONS = ("fp32", "bf16", "int8", "int8-static")
DYNAMIC_QUANTIZATION_GROUP = 256
#: module paths whose linear layers the ``int8`` recipe compresses
INT8_WEIGHT_MODULES = ("backbone.blocks.",)
INSTALL_HINT = "pip install '.[openvino]'"
#: the int8 recipe without VNNI, later click p50 (AdaptiveClick-B, 3 GrabCut images x 3 clicks; this Zen 5 capped
#: with ADAPTIVECLICK_MAX_CPU_ISA=avx2 ONEDNN_MAX_CPU_ISA=AVX2 OV_CPU_MAX_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
#: FBGEMM_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2 `adaptiveclick benchmark cpu --images 3 --clicks 3
#: --rounds 1`; mask IoU from `adaptiveclick benchmark cpu-parity --instances 2 --clicks 3` under the same caps)
AVX2_INT8_MEASURED = (
    "on AVX2 the plugin only decompresses the int8 weights to f32: measured 1.00 s per later click against 0.78 s for "
    "engine=openvino,precision=fp32 and 1.16 s for torch fp32 (capped to avx2), mask IoU 0.97 against fp32; "
    "engine=torch,precision=int8 runs here (7-bit activations)"
)
AVX2_INT8_STATIC = (
    "without VNNI, oneDNN's u8 x s8 kernels add pairs of products in saturating 16 bits (vpmaddubsw) unless the "
    "weights are quantised to 7 bits, which this recipe does not do (not measured)"
)


class EngineUnavailableError(RuntimeError):
    """The OpenVINO engine cannot run here (openvino missing, or a precision this CPU cannot run natively)."""


@dataclass(frozen=True)
class Recipe:
    precision: str
    #: how the IR is made from the exported f32 one: "export" (as is), "int8-weights" or "int8-static"
    ir: str
    #: quantise activations per token group at run time (int8 x int8 matmuls for int8 weights)
    dynamic_quantization: bool = False

    def ir_parts(self) -> dict[str, Any]:
        """What the IR depends on besides the exported graph (part of the cache key)."""
        if self.ir == "int8-weights":
            return {"ir": self.ir, "modules": list(INT8_WEIGHT_MODULES), "mode": "INT8_ASYM"}
        if self.ir == "int8-static":
            return {"ir": self.ir, "modules": list(INT8_WEIGHT_MODULES)}
        return {"ir": self.ir}


RECIPES = {
    "fp32": Recipe("fp32", "export"),
    "bf16": Recipe("bf16", "export"),
    "int8": Recipe("int8", "int8-weights", dynamic_quantization=True),
    "int8-static": Recipe("int8-static", "int8-static"),
}


def import_openvino():
    """The ``openvino`` module, or :class:`EngineUnavailableError` saying how to install it."""
    try:
        import openvino
    except ImportError as exc:
        raise EngineUnavailableError(
            f"engine=openvino needs the optional openvino dependency ({INSTALL_HINT}): {exc}"
        ) from exc
    return openvino


def openvino_support(precision: str, flags: frozenset[str] | None = None) -> str | None:
    """None when the OpenVINO engine runs ``precision`` natively on this CPU, else why not."""
    if precision not in RECIPES:
        raise ValueError(f"unknown precision {precision!r} for engine=openvino; expected one of {OPENVINO_PRECISIONS}")
    try:
        import_openvino()
    except EngineUnavailableError as exc:
        return str(exc)
    flags = cpu_flags() if flags is None else flags
    if precision == "bf16" and not flags & set(BF16_FLAGS):
        return f"instruction set missing: bf16 needs one of {', '.join(BF16_FLAGS)} ({cpu_name()})"
    if precision.startswith("int8") and not flags & set(INT8_FLAGS):
        why = AVX2_INT8_MEASURED if precision == "int8" else AVX2_INT8_STATIC
        return (
            f"instruction set missing: int8 needs one of {', '.join(INT8_FLAGS)} for int8 x int8 matmuls "
            f"({cpu_name()}); {why}"
        )
    return None


def activation_precision(recipe: Recipe, flags: frozenset[str] | None = None) -> str:
    """The plugin's inference precision: f32 for fp32, else bf16 where the CPU has it natively (else f32)."""
    if recipe.precision == "fp32":
        return "f32"
    flags = cpu_flags() if flags is None else flags
    return "bf16" if flags & set(BF16_FLAGS) else "f32"


def compile_config(recipe: Recipe, threads: int | None) -> dict[str, Any]:
    """The CPU plugin's settings for ``recipe``: one latency-optimised stream, ``threads`` threads."""
    config: dict[str, Any] = {
        "INFERENCE_PRECISION_HINT": activation_precision(recipe),
        "PERFORMANCE_HINT": "LATENCY",
    }
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    if recipe.dynamic_quantization:
        config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = DYNAMIC_QUANTIZATION_GROUP
    return config


def compress_weights(model):
    """``int8-weights``: int8 weights for the linear layers under :data:`INT8_WEIGHT_MODULES` (others untouched)."""
    import nncf

    return nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM, ignored_scope=outside_int8(model))


def outside_int8(model):
    """NNCF's ignored scope for every weighted layer outside :data:`INT8_WEIGHT_MODULES`: both int8 recipes keep the
    rest in float (with CAMD's or the decoder's layers quantised too, openvino 2026.4.1's CPU plugin fails to
    compile the model: ``Check 'any_of(scale.size(), OC, 1U)' failed at dnnl_postops_composer.cpp``)."""
    import nncf

    weighted = ("MatMul", "Convolution", "GroupConvolution", "ConvolutionBackpropData", "Gather", "Embedding")
    ignored = [
        op.get_friendly_name()
        for op in model.get_ops()
        if op.get_type_name() in weighted and not op.get_friendly_name().startswith(INT8_WEIGHT_MODULES)
    ]
    return nncf.IgnoredScope(names=ignored, validate=False)
