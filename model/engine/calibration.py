"""``int8-static``: NNCF post-training quantisation calibrated on the network inputs of real clicks.

The calibration inputs are what the network sees in an annotation session: a torch predictor of the same weights
answers the NoC clicker on the shipped GrabCut images (the driver lives above this floor, where the clicker and
the datasets are: ``benchmarks.openvino_prepare``), and :func:`record_network_inputs` keeps every
``(image_tokens, maps)`` pair it passes to the network. The clicks come from the ground truth, so they are
realistic even for untrained weights (whose masks are not).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch

from .recipes import outside_int8

#: which clicks calibrate ``int8-static`` (part of its cache key): GrabCut images [0, images), NoC clicks each
CALIBRATION_RECIPE = {"dataset": "GrabCut", "images": 16, "clicks": 4, "predictor": "torch fp32 cvpr"}


@contextlib.contextmanager
def record_network_inputs(net) -> Iterator[list[tuple[torch.Tensor, torch.Tensor]]]:
    """Inside the block, every ``net.forward_tokens(image_tokens [B, N, D], maps [B, 3, H, W])`` call also appends
    its inputs, one ``([1, N, D], [1, 3, H, W])`` pair per batch element, to the yielded list."""
    records: list[tuple[torch.Tensor, torch.Tensor]] = []
    original = net.forward_tokens

    def recording(image_tokens: torch.Tensor, maps: torch.Tensor) -> dict:
        for i in range(image_tokens.shape[0]):
            records.append((image_tokens[i : i + 1].detach().clone(), maps[i : i + 1].detach().clone()))
        return original(image_tokens, maps)

    net.forward_tokens = recording
    try:
        yield records
    finally:
        del net.forward_tokens  # the instance attribute; the class's method shows through again


def quantize_static(model, inputs: Sequence[tuple[torch.Tensor, torch.Tensor]]):
    """NNCF static int8 of the ViT blocks (transformer preset: SmoothQuant, per-channel weights, per-tensor
    activations) from the calibration ``inputs``. Peak memory measured: < 4 GB for AdaptiveClick-B with 64 inputs
    (the ov.Model is quantised on its own, no torch model alongside)."""
    import nncf

    if not inputs:
        raise ValueError("int8-static calibration needs at least one network input")
    data = nncf.Dataset(list(inputs), lambda r: {"image_tokens": r[0].numpy(), "maps": r[1].numpy()})
    return nncf.quantize(
        model,
        data,
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(inputs),
        ignored_scope=outside_int8(model),
    )
