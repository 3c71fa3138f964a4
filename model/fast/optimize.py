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

from torch import nn

from ..adaptiveclick import AdaptiveClick
from ..spec import PRECISIONS
from .bf16_layers import convert_to_bf16
from .cpu_features import precision_support
from .int8_linear import quantize_linears

# fastest first (measured by `adaptiveclick benchmark cpu`: int8 ~2x, bf16 ~1.6x fp32 eager on a Zen 4 core pair)
CPU_PREFERENCE = ("int8", "bf16", "fp32")
# The CPU default is the fastest precision that runs natively here *and* has shown parity with fp32 (mean mask
# IoU >= 0.99, `adaptiveclick benchmark cpu-parity`). Measured with untrained weights, neither bf16 (~0.976)
# nor int8 (~0.96) reaches it: untrained networks make soft-edged masks whose boundary any rounding moves. No
# trained weights were available to measure; once a checkpoint shows parity (`cpu-parity --source W.pth --noc`),
# add its precision here and it becomes the default.
PARITY_MET = ("fp32",)

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
