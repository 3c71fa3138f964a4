"""CAMD: the Clicks-aware Mask-adaptive Decoder.

A Mask2Former masked-attention decoder (10 queries, 9 layers cycling over the three feature levels, 2-way class head)
whose cross-attention masks are widened by the clicks: a query classified as foreground may always attend to the
neighbourhood of the positive clicks, even where its own mask is still background. In the attention-mask convention
(True = blocked) that is the *intersection* of the mask-prediction block and the click-aware block.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .position_encoding import PositionEmbeddingSine


class CrossAttentionLayer(nn.Module):
    """Post-norm masked cross-attention from queries ``[Q, B, C]`` to a feature level ``[HW, B, C]``."""

    def __init__(self, d_model: int, nhead: int) -> None:
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead)
        self.norm = nn.LayerNorm(d_model)
        _xavier(self)

    def forward(self, tgt, memory, memory_mask, pos, query_pos):
        out = self.multihead_attn(
            query=tgt + query_pos, key=memory + pos, value=memory, attn_mask=memory_mask, need_weights=False
        )[0]
        return self.norm(tgt + out)


class SelfAttentionLayer(nn.Module):
    """Post-norm self-attention among the queries ``[Q, B, C]``."""

    def __init__(self, d_model: int, nhead: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead)
        self.norm = nn.LayerNorm(d_model)
        _xavier(self)

    def forward(self, tgt, query_pos):
        q = k = tgt + query_pos
        return self.norm(tgt + self.self_attn(q, k, value=tgt, need_weights=False)[0])


class FFNLayer(nn.Module):
    def __init__(self, d_model: int, dim_feedforward: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)
        _xavier(self)

    def forward(self, tgt):
        return self.norm(tgt + self.linear2(F.relu(self.linear1(tgt))))


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, dims[1:] + [output_dim]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


def _xavier(module: nn.Module) -> None:
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


def click_aware_block_mask(
    class_logits: torch.Tensor, positive_map: torch.Tensor, target_size: tuple[int, int], num_heads: int
) -> torch.Tensor:
    """Where each query must *not* attend because of the clicks: ``[B * heads, Q, h * w]`` bool (True = blocked).

    A query classified as foreground (argmax of its 2-way logits is 1) is unblocked on the positive-click disks,
    grown by repeated 3x3/stride-2 max pooling down to the level's resolution; background queries are blocked
    everywhere by this mask (so only their own mask prediction can open positions).

    Args:
        class_logits: ``[B, Q, 2]``.
        positive_map: ``[B, H, W]`` positive click disks at network-input resolution.
        target_size: ``(h, w)`` of the feature level attended to.
    """
    return click_block_mask_from_level_map(class_logits, pooled_click_map(positive_map, target_size), num_heads)


def pooled_click_map(positive_map: torch.Tensor, target_size: tuple[int, int]) -> torch.Tensor:
    """The positive-click disks ``[B, H, W]`` grown and resized to a feature level: ``[B, h * w]``.

    The reference pools and resizes the per-query product ``is_foreground[q] * positive_map``; the factor is 0 or 1
    per query, and both max pooling and bilinear resizing commute with such a factor, so pooling the map once per
    level gives the same values at a tenth of the cost (no ``[B, Q, H, W]`` tensor at input resolution).
    """
    level_map = positive_map[:, None]  # [B, 1, H, W]
    num_pooling = int(math.log(level_map.shape[-1] / target_size[-1], 2))
    for _ in range(num_pooling):
        level_map = F.max_pool2d(level_map, kernel_size=3, stride=2, padding=1)
    level_map = F.interpolate(level_map, size=target_size, mode="bilinear", align_corners=False)
    return level_map.flatten(1)


def click_block_mask_from_level_map(
    class_logits: torch.Tensor, level_map: torch.Tensor, num_heads: int
) -> torch.Tensor:
    """:func:`click_aware_block_mask` from a :func:`pooled_click_map` ``[B, h * w]``: ``[B * heads, Q, h * w]``."""
    is_foreground = class_logits.argmax(-1).to(level_map.dtype)  # [B, Q]
    blocked = (is_foreground[:, :, None] * level_map[:, None, :]) < 0.5  # [B, Q, h * w]
    return blocked.unsqueeze(1).expand(-1, num_heads, -1, -1).flatten(0, 1).detach()


class ClickAwareMaskAdaptiveDecoder(nn.Module):
    """CAMD.

    Args:
        hidden_dim: query width C (256).
        num_queries: Q (10).
        nheads: attention heads (8).
        dim_feedforward: FFN width (2048).
        dec_layers: decoder layers (9).
        mask_dim: mask feature width (256).
        num_classes: foreground classes (1; the head predicts ``num_classes + 1`` logits).
        num_feature_levels: levels cycled through (3).
    """

    def __init__(
        self,
        hidden_dim: int = 256,
        num_queries: int = 10,
        nheads: int = 8,
        dim_feedforward: int = 2048,
        dec_layers: int = 9,
        mask_dim: int = 256,
        num_classes: int = 1,
        num_feature_levels: int = 3,
    ) -> None:
        super().__init__()
        self.num_heads = nheads
        self.num_layers = dec_layers
        self.num_feature_levels = num_feature_levels
        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2)
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden_dim, nheads) for _ in range(dec_layers)
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden_dim, nheads) for _ in range(dec_layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(FFNLayer(hidden_dim, dim_feedforward) for _ in range(dec_layers))
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(num_feature_levels, hidden_dim)
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    def prediction_heads(self, queries, mask_features, target_size, click_map):
        """Class logits ``[B, Q, 2]``, mask logits ``[B, Q, H/4, W/4]`` and the next attention mask
        ``[B * heads, Q, h * w]`` (True = blocked) for the level of size ``target_size``; ``click_map`` is that
        level's :func:`pooled_click_map` (None disables the click-aware masks)."""
        decoded = self.decoder_norm(queries).transpose(0, 1)  # [B, Q, C]
        class_logits = self.class_embed(decoded)
        mask_logits = torch.einsum("bqc,bchw->bqhw", self.mask_embed(decoded), mask_features)
        attn = F.interpolate(mask_logits, size=target_size, mode="bilinear", align_corners=False)
        attn_mask = attn.sigmoid().flatten(2).unsqueeze(1).expand(-1, self.num_heads, -1, -1).flatten(0, 1) < 0.5
        attn_mask = attn_mask.detach()
        if click_map is not None:
            attn_mask = attn_mask & click_block_mask_from_level_map(class_logits, click_map, self.num_heads)
        return class_logits, mask_logits, attn_mask

    def forward(
        self, features: list[torch.Tensor], mask_features: torch.Tensor, positive_map: torch.Tensor | None = None
    ) -> dict:
        """
        Args:
            features: three levels ``[B, C, h_l, w_l]``, low to high resolution.
            mask_features: ``[B, mask_dim, H/4, W/4]``.
            positive_map: ``[B, H, W]`` positive click disks (None disables the click-aware masks).

        Returns:
            ``{"pred_logits": [B, Q, 2], "pred_masks": [B, Q, H/4, W/4], "aux_outputs": [...9 earlier...]}``.
        """
        if len(features) != self.num_feature_levels:
            raise ValueError(f"expected {self.num_feature_levels} feature levels, got {len(features)}")
        sizes = [f.shape[-2:] for f in features]
        pos = [self.pe_layer(f).flatten(2).permute(2, 0, 1) for f in features]  # [HW, B, C]
        src = [
            (f.flatten(2) + self.level_embed.weight[i][None, :, None]).permute(2, 0, 1) for i, f in enumerate(features)
        ]
        batch = features[0].shape[0]
        query_pos = self.query_embed.weight.unsqueeze(1).repeat(1, batch, 1)  # [Q, B, C]
        queries = self.query_feat.weight.unsqueeze(1).repeat(1, batch, 1)

        click_maps = [None if positive_map is None else pooled_click_map(positive_map, size) for size in sizes]
        class_logits, mask_logits, attn_mask = self.prediction_heads(queries, mask_features, sizes[0], click_maps[0])
        all_logits, all_masks = [class_logits], [mask_logits]
        for i in range(self.num_layers):
            level = i % self.num_feature_levels
            # a query blocked everywhere would give NaNs: let it attend to the whole level instead (the reference's
            # `attn_mask[attn_mask.all(-1)] = False`, as an elementwise op that exporters convert: the same values)
            attn_mask = attn_mask & ~attn_mask.all(-1, keepdim=True)
            queries = self.transformer_cross_attention_layers[i](queries, src[level], attn_mask, pos[level], query_pos)
            queries = self.transformer_self_attention_layers[i](queries, query_pos)
            queries = self.transformer_ffn_layers[i](queries)
            next_level = (i + 1) % self.num_feature_levels
            class_logits, mask_logits, attn_mask = self.prediction_heads(
                queries, mask_features, sizes[next_level], click_maps[next_level]
            )
            all_logits.append(class_logits)
            all_masks.append(mask_logits)
        return {
            "pred_logits": all_logits[-1],
            "pred_masks": all_masks[-1],
            "aux_outputs": [{"pred_logits": a, "pred_masks": b} for a, b in zip(all_logits[:-1], all_masks[:-1])],
        }
