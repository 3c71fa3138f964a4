"""Clicks encoded for the network: the points tensor and the click disk maps."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .clicks import Click

CLICK_RADIUS = 5  # disk radius in network-input pixels (reference configs: use_disks=True, norm_radius=5)


def clicks_to_points(clicks_lists: Sequence[Sequence[Click]], max_clicks: int | None = None) -> torch.Tensor:
    """Pack clicks for the network: ``[B, 2N, 3]`` rows of ``(y, x, index)``.

    The N positive clicks come first and the N negative clicks after, each group padded with ``-1`` rows, where N
    is the largest group over the batch (at least 1), as the reference predictor builds ``points_nd``.
    """
    lists = [list(c)[:max_clicks] for c in clicks_lists]
    n = max([1] + [sum(c.is_positive == sign for c in lst) for lst in lists for sign in (True, False)])
    rows = []
    for lst in lists:
        groups = []
        for sign in (True, False):
            group = [(c.y, c.x, -1 if c.index is None else c.index) for c in lst if c.is_positive == sign]
            groups += group + [(-1.0, -1.0, -1.0)] * (n - len(group))
        rows.append(groups)
    return torch.tensor(rows, dtype=torch.float32)


def disk_maps(points: torch.Tensor, height: int, width: int, radius: float = CLICK_RADIUS) -> torch.Tensor:
    """Binary click maps: 1 within ``radius`` (inclusive) of any click of the group.

    Args:
        points: ``[B, 2N, 3]`` as from :func:`clicks_to_points`; rows whose ``max(y, x) < 0`` are padding.
        height, width: size of the maps.

    Returns:
        ``[B, 2, H, W]`` float maps: channel 0 positive clicks, channel 1 negative clicks.
    """
    b, two_n, _ = points.shape
    n = two_n // 2
    yx = points[..., :2].to(torch.float32)
    valid = yx.max(dim=-1).values >= 0  # [B, 2N]
    rows = torch.arange(height, dtype=torch.float32, device=points.device)
    cols = torch.arange(width, dtype=torch.float32, device=points.device)
    dy = (rows.view(1, 1, -1) - yx[..., 0:1]) ** 2  # [B, 2N, H]
    dx = (cols.view(1, 1, -1) - yx[..., 1:2]) ** 2  # [B, 2N, W]
    inside = (dy[..., :, None] + dx[..., None, :]) <= radius**2  # [B, 2N, H, W]
    inside &= valid[..., None, None]
    return inside.view(b, 2, n, height, width).any(dim=2).to(torch.float32)
