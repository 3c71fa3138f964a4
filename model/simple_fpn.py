"""SimpleFPN: a single-scale ViT feature map to a stride 4/8/16/32 pyramid (ViTDet-style, as in SimpleClick)."""

from __future__ import annotations

import torch
from torch import nn


class SimpleFPN(nn.Module):
    """``[B, D, H/16, W/16]`` ViT tokens (patch 16; patch 14 for Huge) to four maps at 4x, 2x, 1x and 0.5x of the
    token grid, with ``out_dims`` channels (Base: 256/512/1024/2048, Huge: 512/1024/2048/4096)."""

    def __init__(self, in_dim: int, out_dims: tuple[int, int, int, int]) -> None:
        super().__init__()
        c4 = max(out_dims[0] * 2, in_dim // 2)
        self.down_4 = nn.Sequential(
            nn.ConvTranspose2d(in_dim, c4, 2, stride=2),
            nn.GroupNorm(1, c4),
            nn.GELU(),
            nn.ConvTranspose2d(c4, c4 // 2, 2, stride=2),
            nn.GroupNorm(1, c4 // 2),
            nn.Conv2d(c4 // 2, out_dims[0], 1),
            nn.GroupNorm(1, out_dims[0]),
            nn.GELU(),
        )
        c8 = max(out_dims[1], in_dim // 2)
        self.down_8 = nn.Sequential(
            nn.ConvTranspose2d(in_dim, c8, 2, stride=2),
            nn.GroupNorm(1, c8),
            nn.Conv2d(c8, out_dims[1], 1),
            nn.GroupNorm(1, out_dims[1]),
            nn.GELU(),
        )
        self.down_16 = nn.Sequential(
            nn.Conv2d(in_dim, out_dims[2], 1),
            nn.GroupNorm(1, out_dims[2]),
            nn.GELU(),
        )
        c32 = max(out_dims[3], in_dim * 2)
        self.down_32 = nn.Sequential(
            nn.Conv2d(in_dim, c32, 2, stride=2),
            nn.GroupNorm(1, c32),
            nn.Conv2d(c32, out_dims[3], 1),
            nn.GroupNorm(1, out_dims[3]),
            nn.GELU(),
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Returns ``[res2, res3, res4, res5]`` (strides 4, 8, 16, 32 of the input image for patch 16)."""
        return [self.down_4(x), self.down_8(x), self.down_16(x), self.down_32(x)]
