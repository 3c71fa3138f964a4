"""Sine position encoding of a feature map (DETR / Mask2Former ``PositionEmbeddingSine`` with normalisation)."""

from __future__ import annotations

import math

import torch
from torch import nn


class PositionEmbeddingSine(nn.Module):
    """``[B, C, H, W] -> [B, 2 * num_pos_feats, H, W]``: (y, x) normalised to ``[0, 2*pi]``, sin/cos interleaved."""

    def __init__(self, num_pos_feats: int = 128, temperature: float = 10000.0) -> None:
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.scale = 2 * math.pi
        # The encoding depends only on the shape: computing it costs ~50 sin/cos passes over the map, which
        # showed up as ~5% of a CPU click, so each (shape, device, dtype) is computed once. Inference tensors are
        # kept apart from normal ones (an inference tensor cannot enter autograd).
        self._cache: dict[tuple, torch.Tensor] = {}

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_exporting():  # a constant subgraph of the export; never cache a tracing tensor
            return self._encode(x)
        key = (tuple(x.shape), x.device, x.dtype, torch.is_inference_mode_enabled())
        cached = self._cache.get(key)
        if cached is None:
            if len(self._cache) >= 16:  # a handful of input sizes in practice; never grow without bound
                self._cache.clear()
            cached = self._cache[key] = self._encode(x)
        return cached

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        eps = 1e-6
        y_embed = torch.arange(1, h + 1, dtype=torch.float32, device=x.device).view(1, h, 1).expand(b, h, w)
        x_embed = torch.arange(1, w + 1, dtype=torch.float32, device=x.device).view(1, 1, w).expand(b, h, w)
        y_embed = y_embed / (h + eps) * self.scale
        x_embed = x_embed / (w + eps) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=x.device)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_pos_feats)
        pos_x = x_embed[..., None] / dim_t
        pos_y = y_embed[..., None] / dim_t
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2).to(x.dtype)
