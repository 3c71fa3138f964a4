"""Pure-PyTorch multi-scale deformable attention: the reference and the last-resort fallback.

Semantics follow Deformable-DETR: for every query, head, level and point, bilinearly sample the value map of
that level at ``sampling_locations`` (normalised ``(x, y)`` in ``[0, 1]``, ``align_corners=False``, zeros outside)
and sum the samples weighted by ``attention_weights``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ms_deform_attn_pytorch(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Reference implementation built on ``F.grid_sample`` (differentiable through autograd).

    Args:
        value: ``[N, S, M, D]`` values of all levels, flattened and concatenated (S = sum of H_l * W_l).
        spatial_shapes: ``[L, 2]`` int64 ``(H_l, W_l)`` per level.
        level_start_index: ``[L]`` int64 offset of each level in ``S`` (unused here, kept for one signature).
        sampling_locations: ``[N, Lq, M, L, P, 2]`` normalised ``(x, y)``.
        attention_weights: ``[N, Lq, M, L, P]``.

    Returns:
        ``[N, Lq, M * D]``.
    """
    del level_start_index
    shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    return ms_deform_attn_static(value, shapes, sampling_locations, attention_weights)


def ms_deform_attn_static(
    value: torch.Tensor,
    level_shapes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """:func:`ms_deform_attn_pytorch` with the level shapes ``[(H_l, W_l), ...]`` as Python ints: the same
    arithmetic, and a static graph for ``torch.export`` (reading them from a tensor is data-dependent there)."""
    n, _, heads, dim = value.shape
    _, n_queries, _, n_levels, n_points, _ = sampling_locations.shape
    value_per_level = value.split([h * w for h, w in level_shapes], dim=1)
    grids = 2 * sampling_locations - 1  # grid_sample wants [-1, 1]
    samples = []
    for level, (h, w) in enumerate(level_shapes):
        # [N, H*W, M, D] -> [N*M, D, H, W]
        value_l = value_per_level[level].flatten(2).transpose(1, 2).reshape(n * heads, dim, h, w)
        # [N, Lq, M, P, 2] -> [N*M, Lq, P, 2]
        grid_l = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        # [N*M, D, Lq, P]
        samples.append(F.grid_sample(value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False))
    # [N, Lq, M, L, P] -> [N*M, 1, Lq, L*P]
    weights = attention_weights.transpose(1, 2).reshape(n * heads, 1, n_queries, n_levels * n_points)
    out = (torch.stack(samples, dim=-2).flatten(-2) * weights).sum(-1)  # [N*M, D, Lq]
    return out.view(n, heads * dim, n_queries).transpose(1, 2).contiguous()
