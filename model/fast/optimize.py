"""Turn a trained AdaptiveClick into its fastest CPU inference form at a given precision.

``fp32`` leaves the network as it is (eager float32: the reference numerics). The low-precision forms change only
the layers that carry the compute (measured on AdaptiveClick-B at 448x448, ~96 GMACs per click):

* ``int8``: dynamic int8 for the linear layers of the ViT blocks (~67 GMACs); the deformable encoder's linear
  layers (~12 GMACs) and the SimpleFPN/FPN convolutions (~15 GMACs) in bf16 where the CPU has native bf16, else
  fp32. The encoder mixes three pyramid levels of different scales in one token sequence, which int8's per-tensor
  activation scale serves poorly (measured: 3x the logit error of int8 ViT layers alone, for ~5% of the time).
* ``bf16``: the same linear layers and convolutions in bf16 (float32 accumulation and activations in between).

Everything else (layer norms, softmax, attention over 10 queries in CAMD, the mask head) stays float32: it is a
small part of the time and where low precision would cost the most accuracy. Parity with fp32 is measured by
``adaptiveclick benchmark cpu-parity``.
"""

from __future__ import annotations

import logging

from torch import nn

from ..adaptiveclick import AdaptiveClick
from ..spec import PRECISIONS
from . import defaults
from .bf16_layers import convert_to_bf16
from .cpu_features import precision_support
from .int8_linear import quantize_linears

# torch's precisions, fastest first (measured by `adaptiveclick benchmark cpu`: int8 ~2x, bf16 ~1.6x fp32 eager on a
# Zen 4 core pair); the default when a spec names engine=torch without a precision
CPU_PREFERENCE = ("int8", "bf16", "fp32")
# The CPU default is a precision that has shown parity with fp32 (mean mask IoU >= 0.99, `adaptiveclick benchmark
# cpu-parity`). Measured with untrained weights, neither bf16 (~0.976) nor int8 (~0.96) reaches it: untrained
# networks make soft-edged masks whose boundary any rounding moves. No trained weights were available to measure;
# once a checkpoint shows parity (`cpu-parity --source W.pth --noc`), add its precision here.
PARITY_MET = ("fp32",)

# Every (engine, precision) CPU variant. The default among them is chosen per instruction-set class from measured
# figures (model.fast.defaults: faster than torch fp32 by enough, at acceptable memory and start-up), among those that
# have shown parity with torch fp32 (VARIANTS_WITH_PARITY), for the network sizes they were measured on
# (DEFAULT_MEASURED_ON). OpenVINO fp32 is exact (mask IoU 1.0000 against torch fp32 eager, the same arithmetic to
# float rounding).
CPU_VARIANTS = (
    ("openvino", "int8-static"),
    ("openvino", "int8"),
    ("openvino", "bf16"),
    ("torch", "int8"),
    ("torch", "bf16"),
    ("openvino", "fp32"),
    ("torch", "fp32"),
)
VARIANTS_WITH_PARITY = (("openvino", "fp32"), ("torch", "fp32")) + tuple(("torch", p) for p in PARITY_MET)
DEFAULT_MEASURED_ON = ("base",)

log = logging.getLogger(__name__)
_fallback_logged: set[str] = set()

# qualified-name prefixes of the layers that carry the compute
VIT_PREFIXES = ("backbone.blocks.",)
ENCODER_PREFIXES = ("pixel_decoder.transformer.",)
CONV_PREFIXES = (
    "pixel_decoder.neck.",
    "pixel_decoder.adapter_1.",
    "pixel_decoder.layer_1.",
    "pixel_decoder.mask_features",
)
# the encoder FFN's first layer feeds only a ReLU and the second layer: its output stays bf16
BF16_OUTPUT_SUFFIX = ".linear1"
CONV_TYPES = (nn.Conv2d, nn.ConvTranspose2d)


def default_precision(device, parity_met: tuple[str, ...] = PARITY_MET) -> str:
    """The precision used when a spec names none: the first of :data:`CPU_PREFERENCE` that has shown parity and
    that this CPU runs natively; fp32 on GPUs."""
    for precision in CPU_PREFERENCE:
        if precision in parity_met and precision_support(precision, device) is None:
            return precision
    return "fp32"


def variant_support(engine: str, precision: str, device) -> str | None:
    """None when ``engine`` runs ``precision`` natively on ``device``, else why not."""
    if engine == "openvino":
        from ..engine.recipes import openvino_support

        if getattr(device, "type", str(device).split(":")[0]) != "cpu":
            return f"engine=openvino runs on the CPU, not on {device}"
        return openvino_support(precision)
    return precision_support(precision, device)


def default_variant(
    device, network: str | None, with_parity: tuple[tuple[str, str], ...] = VARIANTS_WITH_PARITY
) -> tuple[str, str]:
    """``(engine, precision)`` of a spec naming neither: for a network size in :data:`DEFAULT_MEASURED_ON` on a CPU,
    the first variant that qualifies in this CPU's class of :mod:`model.fast.defaults` (measured faster at
    acceptable memory and start-up, with parity) and runs here; else torch at :func:`default_precision` (GPUs:
    fp32). A default that cannot run (openvino not installed) falls back to the next, logged once."""
    torch_default = ("torch", default_precision(device, tuple(p for e, p in with_parity if e == "torch")))
    if getattr(device, "type", str(device).split(":")[0]) != "cpu" or network not in DEFAULT_MEASURED_ON:
        return torch_default
    entry = defaults.entry_for(defaults.isa_class())
    if entry is None:
        return torch_default
    for engine, precision in defaults.qualifying(entry, with_parity):
        reason = variant_support(engine, precision, device)
        if reason is None:
            return engine, precision
        if (engine, precision) != ("torch", "fp32") and f"{engine},{precision}" not in _fallback_logged:
            _fallback_logged.add(f"{engine},{precision}")
            log.warning(
                "the default CPU predictor would be engine=%s,precision=%s (measured faster on %s, parity shown) but "
                "it cannot run here: %s; using the next one",
                engine,
                precision,
                entry.isa,
                reason,
            )
    return torch_default


def explain_default(with_parity: tuple[tuple[str, str], ...] = VARIANTS_WITH_PARITY) -> str:
    """Which variant this CPU's class gets for AdaptiveClick-B, and why (from :mod:`model.fast.defaults`)."""
    isa = defaults.isa_class()
    return defaults.explain(defaults.entry_for(isa), isa, with_parity)


def check_precision(precision: str, device) -> None:
    """A ValueError with the reason when ``precision`` cannot run natively on ``device``."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    reason = precision_support(precision, device)
    if reason:
        raise ValueError(f"precision={precision} is not available: {reason}")


def optimize_for_inference(net: AdaptiveClick, precision: str, device="cpu") -> AdaptiveClick:
    """Convert ``net`` (in place; eval mode) for inference at ``precision`` on ``device`` and return it.

    The converted network has the same call signature and outputs (float32), but its low-precision layers hold no
    trainable parameters: use it for inference only.
    """
    check_precision(precision, device)
    net.eval()
    net.inference_precision = precision
    if precision == "fp32":
        return net
    under = lambda prefixes: lambda name, layer: name.startswith(prefixes)  # noqa: E731
    if precision == "int8":
        quantize_linears(net, under(VIT_PREFIXES))
    else:
        convert_to_bf16(net, (nn.Linear,), under(VIT_PREFIXES))
    if precision_support("bf16", device) is None:
        convert_to_bf16(net, (nn.Linear,), under(ENCODER_PREFIXES), lambda name: name.endswith(BF16_OUTPUT_SUFFIX))
        convert_to_bf16(net, CONV_TYPES, under(CONV_PREFIXES))
    return net
