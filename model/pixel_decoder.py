"""Mask2Former pixel decoder: a multi-scale deformable-attention encoder on the three coarser pyramid levels plus
one FPN step to stride 4, preceded by the SimpleFPN neck that turns ViT tokens into that pyramid.

Module names mirror Mask2Former's ``MSDeformAttnPixelDecoder`` (with AdaptiveClick's ``neck`` inside it), including
the FPN convolutions being registered both as ``adapter_1``/``layer_1`` and in ``lateral_convs``/``output_convs``:
the released checkpoints store both names for the same tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from adaptiveclick.ops import MSDeformAttn

from .position_encoding import PositionEmbeddingSine
from .simple_fpn import SimpleFPN


def c2_xavier_fill(module: nn.Module) -> None:
    """Caffe2 ``XavierFill`` (kaiming uniform with a=1) used by detectron2 for these convolutions."""
    nn.init.kaiming_uniform_(module.weight, a=1)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


class DeformableEncoderLayer(nn.Module):
    """Post-norm encoder layer: deformable self-attention then a ReLU FFN."""

    def __init__(self, d_model: int, d_ffn: int, n_levels: int, n_heads: int, n_points: int) -> None:
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(
        self,
        src: torch.Tensor,
        pos: torch.Tensor,
        reference_points: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        level_shapes: list[tuple[int, int]] | None = None,
    ) -> torch.Tensor:
        """``src``/``pos``: ``[B, S, C]``; ``reference_points``: ``[B, S, L, 2]``; ``level_shapes``: the
        ``spatial_shapes`` as Python ints. Returns ``[B, S, C]``."""
        attended = self.self_attn(
            src + pos, reference_points, src, spatial_shapes, level_start_index, level_shapes=level_shapes
        )
        src = self.norm1(src + attended)
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


class DeformableEncoder(nn.Module):
    def __init__(self, num_layers: int, **layer_kwargs) -> None:
        super().__init__()
        self.layers = nn.ModuleList([DeformableEncoderLayer(**layer_kwargs) for _ in range(num_layers)])

    @staticmethod
    def reference_points(spatial_shapes: list[tuple[int, int]], batch: int, device: torch.device) -> torch.Tensor:
        """Pixel centres of every level, normalised to ``[0, 1]``: ``[B, S, L, 2]`` as ``(x, y)``."""
        points = []
        for h, w in spatial_shapes:
            ys = torch.linspace(0.5, h - 0.5, h, dtype=torch.float32, device=device) / h
            xs = torch.linspace(0.5, w - 0.5, w, dtype=torch.float32, device=device) / w
            ref_y, ref_x = torch.meshgrid(ys, xs, indexing="ij")
            points.append(torch.stack((ref_x.reshape(-1), ref_y.reshape(-1)), -1))
        ref = torch.cat(points, 0)  # [S, 2]
        return ref[None, :, None, :].expand(batch, -1, len(spatial_shapes), -1)

    def forward(self, src, pos, spatial_shapes, level_start_index, shapes_list):
        reference_points = self.reference_points(shapes_list, src.shape[0], src.device)
        for layer in self.layers:
            src = layer(src, pos, reference_points, spatial_shapes, level_start_index, shapes_list)
        return src


class DeformableTransformer(nn.Module):
    """Flattens the levels, adds level embeddings and runs the deformable encoder (``transformer.*`` keys)."""

    def __init__(
        self, d_model: int, nhead: int, num_layers: int, dim_feedforward: int, n_levels: int, n_points: int = 4
    ) -> None:
        super().__init__()
        self.encoder = DeformableEncoder(
            num_layers, d_model=d_model, d_ffn=dim_feedforward, n_levels=n_levels, n_heads=nhead, n_points=n_points
        )
        self.level_embed = nn.Parameter(torch.empty(n_levels, d_model))
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m.reset_parameters()
        nn.init.normal_(self.level_embed)

    def forward(self, srcs: list[torch.Tensor], pos_embeds: list[torch.Tensor]):
        """``srcs``/``pos_embeds``: per level ``[B, C, H_l, W_l]``. Returns per level ``[B, C, H_l, W_l]``."""
        shapes = [(s.shape[2], s.shape[3]) for s in srcs]
        src_flat = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        pos_flat = torch.cat(
            [p.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1) for lvl, p in enumerate(pos_embeds)],
            1,
        )
        spatial_shapes = torch.as_tensor(shapes, dtype=torch.long, device=src_flat.device)
        level_start_index = torch.cat((spatial_shapes.new_zeros(1), spatial_shapes.prod(1).cumsum(0)[:-1]))
        memory = self.encoder(src_flat, pos_flat, spatial_shapes, level_start_index, shapes)
        b, _, c = memory.shape
        levels = memory.split([h * w for h, w in shapes], dim=1)
        return [z.transpose(1, 2).reshape(b, c, h, w) for z, (h, w) in zip(levels, shapes)]


class PixelDecoder(nn.Module):
    """ViT tokens to mask features (stride 4) and three multi-scale features for the mask decoder.

    Args:
        in_dim: ViT embedding dimension.
        fpn_dims: SimpleFPN output channels for strides 4/8/16/32.
        conv_dim: decoder width (256).
        mask_dim: mask feature width (256).
        num_encoder_layers, nheads, dim_feedforward: deformable encoder (4 layers, 8 heads, FFN 1024).
    """

    in_features = ("res2", "res3", "res4", "res5")
    transformer_in_features = ("res3", "res4", "res5")

    def __init__(
        self,
        in_dim: int,
        fpn_dims: tuple[int, int, int, int],
        conv_dim: int = 256,
        mask_dim: int = 256,
        num_encoder_layers: int = 4,
        nheads: int = 8,
        dim_feedforward: int = 1024,
    ) -> None:
        super().__init__()
        channels = dict(zip(self.in_features, fpn_dims))
        # from low to high resolution: res5, res4, res3
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels[f], conv_dim, kernel_size=1), nn.GroupNorm(32, conv_dim))
            for f in reversed(self.transformer_in_features)
        )
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.zeros_(proj[0].bias)
        self.transformer = DeformableTransformer(
            conv_dim, nheads, num_encoder_layers, dim_feedforward, n_levels=len(self.transformer_in_features)
        )
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2)
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, kernel_size=1)
        c2_xavier_fill(self.mask_features)
        # one extra FPN level: stride 8 (the finest encoder level) -> stride 4
        lateral = nn.Sequential(
            nn.Conv2d(channels["res2"], conv_dim, 1), nn.GroupNorm(32, conv_dim), nn.ReLU(inplace=True)
        )
        output = nn.Sequential(
            nn.Conv2d(conv_dim, conv_dim, 3, padding=1), nn.GroupNorm(32, conv_dim), nn.ReLU(inplace=True)
        )
        c2_xavier_fill(lateral[0])
        c2_xavier_fill(output[0])
        self.adapter_1 = lateral
        self.layer_1 = output
        self.lateral_convs = nn.ModuleList([lateral])
        self.output_convs = nn.ModuleList([output])
        self.neck = SimpleFPN(in_dim, fpn_dims)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int]):
        """
        Args:
            tokens: ``[B, gh*gw, D]`` ViT output.
            grid: ``(gh, gw)`` token grid.

        Returns:
            mask_features ``[B, mask_dim, H/4, W/4]`` and the multi-scale features
            ``[[B, C, H/32, W/32], [B, C, H/16, W/16], [B, C, H/8, W/8]]`` (low to high resolution).
        """
        b, _, d = tokens.shape
        feats = dict(zip(self.in_features, self.neck(tokens.transpose(1, 2).reshape(b, d, grid[0], grid[1]))))
        srcs, pos = [], []
        for proj, name in zip(self.input_proj, reversed(self.transformer_in_features)):
            srcs.append(proj(feats[name]))
            pos.append(self.pe_layer(feats[name]))
        multi_scale = self.transformer(srcs, pos)
        lateral = self.adapter_1(feats["res2"])
        finest = self.layer_1(
            lateral + F.interpolate(multi_scale[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False)
        )
        return self.mask_features(finest), multi_scale
