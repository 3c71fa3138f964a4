"""Synthetic multi-scale deformable attention inputs with the model's geometry, for tests and benchmarks.

The AdaptiveClick pixel decoder at 448x448 input attends over three levels of 14x14, 28x28 and 56x56 (strides
32/16/8) with 8 heads of 32 channels and 4 points per level; every position of every level is a query. Its
sampling locations are each query's reference point plus learned offsets of a few pixels, so the realistic inputs
here do the same (with a share of points falling outside the map, which samples zeros).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MODEL_LEVELS = ((14, 14), (28, 28), (56, 56))
MODEL_HEADS = 8
MODEL_CHANNELS = 32
MODEL_POINTS = 4


@dataclass
class MSDAInputs:
    """The five arguments of :func:`ops.ms_deform_attn`, in order (see its docstring for the shapes)."""

    value: torch.Tensor
    spatial_shapes: torch.Tensor
    level_start_index: torch.Tensor
    sampling_locations: torch.Tensor
    attention_weights: torch.Tensor

    def args(self) -> tuple[torch.Tensor, ...]:
        return (
            self.value,
            self.spatial_shapes,
            self.level_start_index,
            self.sampling_locations,
            self.attention_weights,
        )

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> MSDAInputs:
        """Float tensors cast to ``dtype`` and everything moved to ``device``."""

        def move(t: torch.Tensor, is_float: bool) -> torch.Tensor:
            return t.to(device=device, dtype=dtype if is_float and dtype is not None else t.dtype)

        return MSDAInputs(
            move(self.value, True),
            move(self.spatial_shapes, False),
            move(self.level_start_index, False),
            move(self.sampling_locations, True),
            move(self.attention_weights, True),
        )

    def requires_grad_(self) -> MSDAInputs:
        for t in (self.value, self.sampling_locations, self.attention_weights):
            t.requires_grad_(True)
        return self


def level_layout(levels: tuple[tuple[int, int], ...] | list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(spatial_shapes [L, 2], level_start_index [L])`` as int64 for levels given as ``(H, W)``."""
    spatial_shapes = torch.as_tensor(levels, dtype=torch.long).view(-1, 2)
    sizes = spatial_shapes.prod(1)
    return spatial_shapes, torch.cat((sizes.new_zeros(1), sizes.cumsum(0)[:-1]))


def reference_points(levels) -> torch.Tensor:
    """Pixel centres of every level, normalised ``(x, y)``: ``[S, 2]``."""
    points = []
    for h, w in levels:
        ys = (torch.arange(h, dtype=torch.float64) + 0.5) / h
        xs = (torch.arange(w, dtype=torch.float64) + 0.5) / w
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack((grid_x.reshape(-1), grid_y.reshape(-1)), -1))
    return torch.cat(points)


def random_inputs(
    batch: int = 1,
    levels=MODEL_LEVELS,
    heads: int = MODEL_HEADS,
    channels: int = MODEL_CHANNELS,
    points: int = MODEL_POINTS,
    queries: int | None = None,
    offset_pixels: float = 2.0,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> MSDAInputs:
    """Random inputs on the CPU.

    ``queries=None`` makes every position of every level a query (the encoder's self-attention, as in the model)
    with locations scattered ``offset_pixels`` (standard deviation, in each level's pixels) around its reference
    point; a number of queries gets uniformly random reference points instead. Attention weights are a softmax
    over the ``L * P`` points of each head, as the module computes them.
    """
    gen = torch.Generator().manual_seed(seed)
    levels = [tuple(int(x) for x in lvl) for lvl in levels]
    spatial_shapes, level_start_index = level_layout(levels)
    n_levels, size = len(levels), int(spatial_shapes.prod(1).sum())
    if queries is None:
        ref = reference_points(levels)
    else:
        ref = torch.rand(queries, 2, generator=gen, dtype=torch.float64)
    n_queries = ref.shape[0]
    value = torch.randn(batch, size, heads, channels, generator=gen, dtype=torch.float64)
    # offsets are in each level's pixels: normalise by (W, H)
    scale = spatial_shapes.flip(-1).to(torch.float64)[None, None, None, :, None, :]
    offsets = torch.randn(batch, n_queries, heads, n_levels, points, 2, generator=gen, dtype=torch.float64)
    locations = ref[None, :, None, None, None, :] + offsets * offset_pixels / scale
    logits = torch.randn(batch, n_queries, heads, n_levels * points, generator=gen, dtype=torch.float64)
    weights = logits.softmax(-1).view(batch, n_queries, heads, n_levels, points)
    return MSDAInputs(value.to(dtype), spatial_shapes, level_start_index, locations.to(dtype), weights.to(dtype))
