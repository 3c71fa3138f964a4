"""Deterministic, well-conditioned weights for any network, for golden-output tests.

The same function produced ``data/reference_outputs_base.json`` from the reference implementation
(lab206/AdaptiveClick) loaded with these weights, so a test can compare our network with it without the reference
code or a released checkpoint on the machine.
"""

from __future__ import annotations

import torch


def seeded_state_dict(net: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """One value per parameter (shared parameters once), in ``named_parameters`` order, plus the buffers."""
    gen = torch.Generator().manual_seed(seed)
    values = {}
    for name, param in net.named_parameters():
        shape = param.shape
        if param.dim() == 1 and ("norm" in name or name.endswith(".1.weight") or ".norm" in name):
            values[name] = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        elif param.dim() == 1:
            values[name] = 0.02 * torch.randn(shape, generator=gen)
        else:
            fan_in = max(1, param[0].numel()) if param.dim() > 1 else 1
            values[name] = torch.randn(shape, generator=gen) / fan_in**0.5
    state = {}
    for key, tensor in net.state_dict().items():
        state[key] = values.get(key, tensor.clone())
    # shared parameters appear under several keys: give every alias the value of the registered parameter
    by_id = {id(p): name for name, p in net.named_parameters()}
    for key, tensor in dict(net.named_parameters(remove_duplicate=False)).items():
        state[key] = values[by_id[id(tensor)]]
    return state


def golden_inputs(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``image [2, 4, 448, 448]`` and ``points [2, 4, 3]`` (2 positive + 2 negative slots per sample)."""
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(2, 4, 448, 448, generator=gen)
    image[:, 3] = (image[:, 3] > 0.7).float()
    points = torch.tensor(
        [
            [[100, 120, 0], [200, 210.5, 2], [300, 50, 1], [-1, -1, -1]],
            [[10, 400, 0], [-1, -1, -1], [-1, -1, -1], [-1, -1, -1]],
        ],
        dtype=torch.float32,
    )
    return image, points


def summarize(outputs: dict) -> dict:
    """Values stored in the golden file: a 16x16 subsample of the logits and the class logits."""
    return {
        "instances": outputs["instances"][:, 0, ::28, ::28].tolist(),
        "pred_logits": outputs["predictions"]["pred_logits"].tolist(),
    }
