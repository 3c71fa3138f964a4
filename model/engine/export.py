"""Export AdaptiveClick's per-click graph to an OpenVINO model: ``(image_tokens, maps) -> logits``, static shapes.

The graph boundary is :meth:`model.AdaptiveClick.forward_tokens`: the image's patch tokens ``[B, N, D]`` (the
predictor keeps them per zoom-in region, so the image half of the patch embedding stays in torch, once per region)
and the click maps ``[B, 3, H, W]`` (previous mask, positive and negative disks) to the mask logits
``[B, 1, H, W]``. Everything around it (zoom-in, disks, resizing, flip, sigmoid, paste-back) stays in the predictor.

Route: ``torch.export`` (faster than TorchScript tracing, and a smaller graph), then
``openvino.convert_model`` with the MSDA custom op library as an extension: the ``adaptiveclick::msda_sample``
nodes (:mod:`ops.exportable`) become one ``adaptiveclick::MSDeformAttn`` each. Without the library MSDA is
exported as grid_sample arithmetic instead (an order of magnitude slower per layer: see the performance docs).
Nodes are renamed ``<module path>/<exported name>`` so that weight compression can select layers by module and a
profile reads by module.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from adaptiveclick.ops.exportable import export_form

if TYPE_CHECKING:
    from ..adaptiveclick import AdaptiveClick

INPUT_NAMES = ("image_tokens", "maps")
OUTPUT_NAME = "logits"

#: how many exports this process ran (tests: a cached start exports nothing)
export_count = 0


class TokensToLogits(nn.Module):
    """``(image_tokens [B, N, D], maps [B, 3, H, W]) -> logits [B, 1, H, W]``: ``net.forward_tokens(...)``'s mask
    logits (the graph that is exported)."""

    def __init__(self, net: AdaptiveClick) -> None:
        super().__init__()
        self.net = net

    def forward(self, image_tokens: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        return self.net.forward_tokens(image_tokens, maps)["instances"]


def example_inputs(net: AdaptiveClick, input_size: int, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs of the exported graph's shapes: tokens ``[B, (S/p)^2, D]`` and maps ``[B, 3, S, S]``."""
    gh, gw = net.backbone.token_grid(input_size, input_size)
    tokens = torch.zeros(batch, gh * gw, net.backbone.embed_dim)
    maps = torch.zeros(batch, 3, input_size, input_size)
    maps[:, 1, input_size // 2, input_size // 2] = 1.0  # one positive click
    return tokens, maps


def module_paths(program: torch.export.ExportedProgram) -> dict[str, str]:
    """Exported node name -> the innermost module that made it (``backbone.blocks.0.attn.qkv``)."""
    paths = {}
    for node in program.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if node.op == "call_function" and stack:
            path = list(stack.values())[-1][0]
            paths[node.name] = path.removeprefix("net.")
    return paths


def export_network(
    net: AdaptiveClick, input_size: int, extension: Path | None, batch: int = 1
) -> tuple[Any, dict[str, Any]]:
    """The OpenVINO model of ``net``'s per-click graph at ``input_size`` (static shapes, f32), and facts about it
    (``msda``: ``custom-op`` or ``grid_sample``, ``ops``: the node count). ``extension`` is the MSDA custom op
    library (None: export MSDA as grid_sample)."""
    import openvino as ov

    global export_count
    export_count += 1
    net = net.eval()
    inputs = example_inputs(net, input_size, batch)
    with torch.no_grad(), export_form("op" if extension is not None else "grid_sample"):
        program = torch.export.export(TokensToLogits(net).eval(), inputs)
    kwargs = {"extension": [str(extension)]} if extension is not None else {}
    model = ov.convert_model(program, **kwargs)
    model.reshape({i: list(t.shape) for i, t in enumerate(inputs)})  # static: lets the plugin fold shape arithmetic
    for port, name in zip(model.inputs, INPUT_NAMES):
        port.get_tensor().set_names({name})
    model.outputs[0].get_tensor().set_names({OUTPUT_NAME})
    paths = module_paths(program)
    for op in model.get_ops():
        name = op.get_friendly_name()
        path = paths.get(name.split("/", 1)[0])
        if path:
            op.set_friendly_name(f"{path}/{name}")
    types = [op.get_type_name() for op in model.get_ops()]
    if extension is not None and "MSDeformAttn" not in types:
        raise RuntimeError("the MSDA custom op library was given but no MSDeformAttn node was made")
    return model, {"msda": "custom-op" if extension is not None else "grid_sample", "ops": len(types)}
