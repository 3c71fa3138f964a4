"""A click: ``(y, x)`` in pixels of the frame it belongs to (the image, or the network input after a crop), positive
or negative, and its order. Imports no torch; the encoding for the network is :mod:`model.click_maps`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any


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

    def moved(self, y: float, x: float) -> Click:
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
