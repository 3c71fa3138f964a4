"""Clicks and their encoding for the network: the points tensor and the click disk maps.

Coordinates are ``(y, x)`` in pixels of the frame they belong to (the image, or the network input after a crop).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterable, Sequence

import torch

CLICK_RADIUS = 5  # disk radius in network-input pixels (reference configs: use_disks=True, norm_radius=5)


@dataclass(frozen=True)
class Click:
    """One click: ``y``/``x`` in pixels, positive (object) or negative (background), and its order index."""

    y: float
    x: float
    is_positive: bool
    index: int | None = None

    @property
    def coords(self) -> tuple[float, float]:
        return self.y, self.x

    def moved(self, y: float, x: float) -> "Click":
        return replace(self, y=y, x=x)


def as_click(obj: Any, index: int | None = None) -> Click:
    """Accept a :class:`Click`, a ``(y, x, is_positive)`` triple, or any object with ``y``/``x``/``is_positive``
    attributes (or RITM-style ``coords``/``is_positive``)."""
    if isinstance(obj, Click):
        return obj if obj.index is not None or index is None else replace(obj, index=index)
    if isinstance(obj, (tuple, list)):
        if len(obj) != 3:
            raise ValueError(f"a click tuple must be (y, x, is_positive), got {obj!r}")
        y, x, positive = obj
    elif hasattr(obj, "coords") and hasattr(obj, "is_positive"):
        (y, x), positive = obj.coords, obj.is_positive
    elif all(hasattr(obj, name) for name in ("y", "x", "is_positive")):
        y, x, positive = obj.y, obj.x, obj.is_positive
    else:
        raise TypeError(f"cannot interpret {obj!r} as a click: expected (y, x, is_positive) or such attributes")
    return Click(float(y), float(x), bool(positive), index)


def as_clicks(objs: Iterable[Any]) -> list[Click]:
    """Normalise a click sequence; each click's index is its position unless it carries one."""
    return [as_click(obj, i) for i, obj in enumerate(objs)]


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
