"""``MSDeformAttn``: the multi-scale deformable attention layer with Deformable-DETR's parameter names.

The parameter names (``sampling_offsets``, ``attention_weights``, ``value_proj``, ``output_proj``) are the ones the
released AdaptiveClick / Mask2Former checkpoints use, so weights load without renaming.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .dispatch import ms_deform_attn
from .exportable import exportable_msda


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention.

    Args:
        d_model: hidden dimension C.
        n_levels: number of feature levels L.
        n_heads: number of attention heads M (C must be divisible by M).
        n_points: sampling points P per head and level.
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4) -> None:
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable-DETR initialisation: offsets start on rays around the reference point, uniform weights."""
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.n_heads, 1, 1, 2)
        grid = grid.repeat(1, self.n_levels, self.n_points, 1)
        grid = grid * torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.constant_(self.value_proj.bias, 0.0)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.constant_(self.output_proj.bias, 0.0)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        input_flatten: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        level_shapes: Sequence[tuple[int, int]] | None = None,
    ) -> torch.Tensor:
        """Attend from every query to P points per level around its reference point.

        Args:
            query: ``[N, Lq, C]`` (already carrying its position embedding).
            reference_points: ``[N, Lq, L, 2]`` normalised ``(x, y)`` in ``[0, 1]``.
            input_flatten: ``[N, S, C]`` the flattened multi-level values.
            spatial_shapes: ``[L, 2]`` int64 ``(H_l, W_l)``.
            level_start_index: ``[L]`` int64.
            padding_mask: optional ``[N, S]``, True where the input is padding.
            level_shapes: ``spatial_shapes`` as Python ints, where the caller has them: no device-to-host read
                per layer, and the form ``torch.export`` needs (see :mod:`ops.exportable`; required there).

        Returns:
            ``[N, Lq, C]``.
        """
        n, n_queries, _ = query.shape
        _, n_in, _ = input_flatten.shape
        if level_shapes is None:
            n_total = int((spatial_shapes[:, 0] * spatial_shapes[:, 1]).sum())
        else:
            n_total = sum(h * w for h, w in level_shapes)
        if n_total != n_in:
            raise ValueError("spatial_shapes do not add up to the length of input_flatten")
        value = self.value_proj(input_flatten)
        if padding_mask is not None:
            value = value.masked_fill(padding_mask[..., None], 0.0)
        value = value.view(n, n_in, self.n_heads, self.d_model // self.n_heads)
        offsets = self.sampling_offsets(query).view(n, n_queries, self.n_heads, self.n_levels, self.n_points, 2)
        weights = self.attention_weights(query).view(n, n_queries, self.n_heads, self.n_levels * self.n_points)
        weights = weights.softmax(-1).view(n, n_queries, self.n_heads, self.n_levels, self.n_points)
        # offsets are in pixels of each level; reference points are (x, y) so normalise by (W, H)
        if level_shapes is None:
            normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1).to(offsets.dtype)
        else:  # the same values, as a constant
            normalizer = torch.tensor([[w, h] for h, w in level_shapes], dtype=offsets.dtype, device=offsets.device)
        locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        if torch.compiler.is_exporting():
            if level_shapes is None:
                raise ValueError("exporting MSDeformAttn needs level_shapes (static level sizes)")
            output = exportable_msda(value, level_shapes, locations, weights)
        else:
            output = ms_deform_attn(value, spatial_shapes, level_start_index, locations, weights)
        return self.output_proj(output)
