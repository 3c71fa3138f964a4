"""Plain ViT backbone in MAE layout, with the click-map tokens added to the image patch tokens.

Parameter names follow MAE's ``models_vit.VisionTransformer`` (as AdaptiveClick/SimpleClick keep them), so both MAE
pre-training checkpoints and released AdaptiveClick checkpoints load without renaming. ``cls_token``, ``fc_norm``
and ``head`` are unused by segmentation but are part of the checkpoint format.

Attention is computed inside non-overlapping windows of 224x224 pixels (the MAE pre-training size) except in the
last block of every group of blocks, which attends globally, exactly as the reference ``forward_backbone``.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

PRETRAIN_WINDOW_PX = 224


class PatchEmbed(nn.Module):
    """Non-overlapping patches to tokens: ``[B, C, H, W] -> [B, H/p * W/p, D]``."""

    def __init__(self, patch_size: tuple[int, int], in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = tuple(patch_size)
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention over ``[B, N, D]`` tokens."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # [B, heads, N, D/heads]
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool) -> None:
        super().__init__()
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.norm1 = norm(dim)
        self.norm2 = norm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def window_partition(x: torch.Tensor, grid: tuple[int, int], windows: tuple[int, int]) -> torch.Tensor:
    """``[B, gh*gw, D] -> [B*wh*ww, gh/wh * gw/ww, D]`` (tokens of each window contiguous)."""
    b, _, d = x.shape
    (gh, gw), (wh, ww) = grid, windows
    x = x.view(b, wh, gh // wh, ww, gw // ww, d).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b * wh * ww, (gh // wh) * (gw // ww), d)


def window_unpartition(x: torch.Tensor, grid: tuple[int, int], windows: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`window_partition`."""
    (gh, gw), (wh, ww) = grid, windows
    d = x.shape[-1]
    b = x.shape[0] // (wh * ww)
    x = x.view(b, wh, ww, gh // wh, gw // ww, d).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, gh * gw, d)


def resize_pos_embed(pos_embed: torch.Tensor, new_grid: tuple[int, int], num_extra_tokens: int = 1) -> torch.Tensor:
    """Bicubically resize a ``[1, extra + g*g, D]`` position embedding to ``new_grid`` (extra tokens kept)."""
    extra, tokens = pos_embed[:, :num_extra_tokens], pos_embed[:, num_extra_tokens:]
    old = int(round(tokens.shape[1] ** 0.5))
    if old * old != tokens.shape[1]:
        raise ValueError(f"position embedding with {tokens.shape[1]} tokens is not a square grid")
    if (old, old) == tuple(new_grid):
        return pos_embed
    tokens = tokens.reshape(1, old, old, -1).permute(0, 3, 1, 2)
    tokens = F.interpolate(tokens.float(), size=tuple(new_grid), mode="bicubic", align_corners=False)
    tokens = tokens.to(pos_embed.dtype).permute(0, 2, 3, 1).flatten(1, 2)
    return torch.cat([extra, tokens], dim=1)


class VisionTransformer(nn.Module):
    """MAE ViT encoder used as a plain backbone.

    Args:
        img_size: training input size ``(H, W)``; sets the stored position-embedding grid.
        patch_size: ``(p, p)``.
        embed_dim, depth, num_heads, mlp_ratio, qkv_bias: the usual ViT hyper-parameters.
        num_classes: width of the (unused) classification head kept for checkpoint compatibility.
    """

    def __init__(
        self,
        img_size: tuple[int, int] = (448, 448),
        patch_size: tuple[int, int] = (16, 16),
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        if depth % 4:
            raise ValueError("depth must be a multiple of 4 (blocks are grouped for windowed attention)")
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.patch_size = tuple(patch_size)
        self.grid_size = (img_size[0] // patch_size[0], img_size[1] // patch_size[1])
        self.embed_dim = embed_dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid_size[0] * self.grid_size[1] + 1, embed_dim))
        self.blocks = nn.Sequential(*[Block(embed_dim, num_heads, mlp_ratio, qkv_bias) for _ in range(depth)])
        self.fc_norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes)
        # Base (12 blocks) attends globally in blocks 6 and 12; deeper models in every depth/4-th block.
        self.blocks_per_group = 6 if depth == 12 else depth // 4
        self.reset_parameters()

    def reset_parameters(self) -> None:
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def token_grid(self, height: int, width: int) -> tuple[int, int]:
        ph, pw = self.patch_size
        if height % ph or width % pw:
            raise ValueError(f"input {height}x{width} is not a multiple of the patch size {ph}x{pw}")
        return height // ph, width // pw

    def window_counts(self, grid: tuple[int, int]) -> tuple[int, int]:
        """Number of 224-pixel attention windows along each axis for a token grid."""
        counts = []
        for g, p in zip(grid, self.patch_size):
            n = max(1, g // (PRETRAIN_WINDOW_PX // p))
            if g % n:
                raise ValueError(f"token grid {grid} cannot be split into equal attention windows")
            counts.append(n)
        return counts[0], counts[1]

    def position_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        """``[1, gh*gw, D]`` position embedding for a token grid (interpolated away from the training grid)."""
        return resize_pos_embed(self.pos_embed, grid)[:, 1:]

    def forward(
        self, image: torch.Tensor, click_tokens: torch.Tensor | None = None, image_tokens: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Encode an image whose click tokens are added to its patch tokens.

        Args:
            image: ``[B, 3, H, W]`` normalised image.
            click_tokens: optional ``[B, H/p * W/p, D]`` embedded click maps.
            image_tokens: optional ``self.patch_embed(image)``, ``[B, H/p * W/p, D]``, when the caller already has
                it (the patch embedding is linear, so the image half is reused between clicks on one region).

        Returns:
            ``[B, H/p * W/p, D]`` tokens.
        """
        grid = self.token_grid(image.shape[-2], image.shape[-1])
        x = self.patch_embed(image) if image_tokens is None else image_tokens
        if click_tokens is not None:
            x = x + click_tokens
        return self.forward_tokens(x, grid)

    def forward_tokens(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Encode patch tokens ``[B, gh*gw, D]`` (image plus click tokens): add the position embedding, run the
        blocks."""
        return self.forward_blocks(x + self.position_embedding(grid), grid)

    def forward_blocks(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Run the blocks: windowed attention, with global attention in the last block of each group."""
        windows = self.window_counts(grid)
        partitioned = False
        for index, block in enumerate(self.blocks, start=1):
            is_global = index % self.blocks_per_group == 0
            if is_global and partitioned:
                x = window_unpartition(x, grid, windows)
                partitioned = False
            elif not is_global and not partitioned:
                x = window_partition(x, grid, windows)
                partitioned = True
            x = block(x)
        return window_unpartition(x, grid, windows) if partitioned else x
