"""bf16 compute for linear and convolution layers, float32 in and out.

Only the matrix products run in bf16 (oneDNN with ``avx512_bf16``/AMX, float32 accumulation); normalisations,
softmax and the residual stream stay float32, which keeps the masks close to fp32 while halving the GEMM time.
The float weights stay in the state_dict under their usual names (a converted network saves, loads and compares
like the original); the bf16 copies used to compute are plain attributes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def _keep_float_params(module: nn.Module, layer: nn.Module) -> None:
    module.register_buffer("weight", layer.weight.detach())
    module.register_buffer("bias", None if layer.bias is None else layer.bias.detach())
    module.weight_bf16 = layer.weight.detach().to(torch.bfloat16)
    if module.weight_bf16.dim() == 4:
        module.weight_bf16 = module.weight_bf16.contiguous(memory_format=torch.channels_last)
    module.bias_bf16 = None if layer.bias is None else layer.bias.detach().to(torch.bfloat16)


class Bf16Linear(nn.Module):
    """Inference replacement for ``nn.Linear``: ``[..., in] -> [..., out]`` computed in bf16, float32 out unless
    ``bf16_output`` (for a layer whose output only feeds another bf16 layer through an elementwise op: it saves two
    conversions of the widest activation, e.g. the 4116 x 1024 FFN hidden state of the deformable encoder)."""

    def __init__(self, linear: nn.Linear, bf16_output: bool = False) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.bf16_output = bf16_output
        _keep_float_params(self, linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x.to(torch.bfloat16), self.weight_bf16, self.bias_bf16)
        return y if self.bf16_output else y.float()


class Bf16Conv(nn.Module):
    """Inference replacement for ``nn.Conv2d`` / ``nn.ConvTranspose2d``: float32 ``[B, C, H, W]`` in and out.

    It computes in channels-last layout (oneDNN's native one: no reorder around each call; measured 3-5% of an int8
    click over the SimpleFPN and FPN convolutions) and returns a channels-last tensor, which the following group
    norms and activations take as it is.
    """

    def __init__(self, conv: nn.Conv2d | nn.ConvTranspose2d) -> None:
        super().__init__()
        if conv.padding_mode != "zeros":
            raise ValueError(f"only zero padding is supported, not {conv.padding_mode!r}")
        self.transposed = isinstance(conv, nn.ConvTranspose2d)
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.output_padding = conv.output_padding
        _keep_float_params(self, conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(dtype=torch.bfloat16, memory_format=torch.channels_last)
        if self.transposed:
            y = F.conv_transpose2d(
                x,
                self.weight_bf16,
                self.bias_bf16,
                self.stride,
                self.padding,
                self.output_padding,
                self.groups,
                self.dilation,
            )
        else:
            y = F.conv2d(x, self.weight_bf16, self.bias_bf16, self.stride, self.padding, self.dilation, self.groups)
        return y.float()


def convert_to_bf16(
    module: nn.Module,
    layer_types: tuple[type, ...],
    include: Callable[[str, nn.Module], bool] = lambda name, layer: True,
    bf16_output: Callable[[str], bool] = lambda name: False,
) -> int:
    """Replace, in place, the layers of exactly ``layer_types`` under ``module`` (where ``include`` says so) by
    their bf16 wrappers; linear layers named by ``bf16_output`` keep a bf16 output. Returns how many were
    replaced."""
    targets = [
        (name, layer) for name, layer in module.named_modules() if type(layer) in layer_types and include(name, layer)
    ]
    for name, layer in targets:
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, Bf16Linear(layer, bf16_output(name)) if type(layer) is nn.Linear else Bf16Conv(layer))
    return len(targets)
