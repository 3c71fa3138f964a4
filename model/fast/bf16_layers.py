"""bf16 compute for linear and convolution layers, float32 in and out.

Only the matrix products run in bf16 (oneDNN with ``avx512_bf16``/AMX, float32 accumulation); normalisations,
softmax and the residual stream stay float32, which keeps the masks close to fp32 while halving the GEMM time.
The float weights stay in the state_dict under their usual names (a converted network saves, loads and compares
like the original); the bf16 copies used to compute are plain attributes.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


def _keep_float_params(module: nn.Module, layer: nn.Module) -> None:
    module.register_buffer("weight", layer.weight.detach())
    module.register_buffer("bias", None if layer.bias is None else layer.bias.detach())
    module.weight_bf16 = layer.weight.detach().to(torch.bfloat16)
    module.bias_bf16 = None if layer.bias is None else layer.bias.detach().to(torch.bfloat16)


class Bf16Linear(nn.Module):
    """Inference replacement for ``nn.Linear``: ``[..., in] -> [..., out]`` float32, computed in bf16."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        _keep_float_params(self, linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.to(torch.bfloat16), self.weight_bf16, self.bias_bf16).float()


class Bf16Conv(nn.Module):
    """Inference replacement for ``nn.Conv2d`` / ``nn.ConvTranspose2d``: float32 ``[B, C, H, W]`` in and out."""

    def __init__(self, conv: nn.Conv2d | nn.ConvTranspose2d) -> None:
        super().__init__()
        if conv.padding_mode != "zeros":
            raise ValueError(f"only zero padding is supported, not {conv.padding_mode!r}")
        self.transposed = isinstance(conv, nn.ConvTranspose2d)
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.output_padding = conv.output_padding
        _keep_float_params(self, conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.bfloat16)
        if self.transposed:
            y = F.conv_transpose2d(x, self.weight_bf16, self.bias_bf16, self.stride, self.padding,
                                   self.output_padding, self.groups, self.dilation)
        else:
            y = F.conv2d(x, self.weight_bf16, self.bias_bf16, self.stride, self.padding, self.dilation, self.groups)
        return y.float()


def convert_to_bf16(module: nn.Module, layer_types: tuple[type, ...],
                    include: Callable[[str, nn.Module], bool] = lambda name, layer: True) -> int:
    """Replace, in place, the layers of exactly ``layer_types`` under ``module`` (where ``include`` says so) by
    their bf16 wrappers. Returns how many were replaced."""
    targets = [(name, layer) for name, layer in module.named_modules()
               if type(layer) in layer_types and include(name, layer)]
    for name, layer in targets:
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, Bf16Linear(layer) if type(layer) is nn.Linear else Bf16Conv(layer))
    return len(targets)
