"""The compiled OpenVINO network as the predictor calls it: ``engine(image_tokens, maps) -> logits``."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .export import INPUT_NAMES


class OpenVINOEngine:
    """A compiled per-click graph (batch 1, static shapes) with one infer request.

    Called like ``net.forward_tokens(image_tokens, maps)["instances"]``: ``image_tokens [B, N, D]`` and
    ``maps [B, 3, H, W]`` float32 to logits ``[B, 1, H, W]`` float32; a batch of two (flip averaging) runs as two
    requests one after the other. Requests are not thread-safe, so calls are serialised.

    Attributes:
        precision: the spec's precision (``fp32``, ``bf16``, ``int8``, ``int8-static``).
        facts: how it was made and loaded (``exported``, ``msda``, ``export_s``, ``compile_s``, ``load_s``, the
            plugin's ``inference_precision`` and threads, ...): the benchmark reports them.
    """

    def __init__(self, compiled: Any, precision: str, facts: dict[str, Any]) -> None:
        self.compiled = compiled
        self.precision = precision
        self.facts = facts
        self._request = compiled.create_infer_request()
        self._lock = threading.Lock()
        shapes = [tuple(port.get_shape()) for port in compiled.inputs]
        self.token_shape, self.maps_shape = shapes[0], shapes[1]

    def __call__(self, image_tokens: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        if image_tokens.shape[1:] != self.token_shape[1:] or maps.shape[1:] != self.maps_shape[1:]:
            raise ValueError(
                f"the OpenVINO engine was compiled for tokens {self.token_shape} and maps {self.maps_shape}, "
                f"got {tuple(image_tokens.shape)} and {tuple(maps.shape)}"
            )
        outputs = [self._infer(image_tokens[i : i + 1], maps[i : i + 1]) for i in range(image_tokens.shape[0])]
        return torch.from_numpy(np.concatenate(outputs)) if len(outputs) > 1 else torch.from_numpy(outputs[0])

    def _infer(self, image_tokens: torch.Tensor, maps: torch.Tensor) -> np.ndarray:
        inputs = {
            INPUT_NAMES[0]: np.ascontiguousarray(image_tokens.detach().float().numpy()),
            INPUT_NAMES[1]: np.ascontiguousarray(maps.detach().float().numpy()),
        }
        with self._lock:
            # share_inputs: no copy of the 2.4 MB of maps (the arrays live until infer returns)
            self._request.infer(inputs, share_inputs=True)
            return self._request.get_output_tensor(0).data.copy()

    def memory_bytes(self) -> int:
        """The engine's weights, as its IR's ``.bin`` holds them (what the model pool counts; 0 if unknown)."""
        ir = self.facts.get("ir")
        weights = Path(str(ir)).with_suffix(".bin") if ir else None
        return weights.stat().st_size if weights is not None and weights.is_file() else 0

    def describe(self) -> str:
        """``openvino bf16 (plugin bf16, MSDA custom op)``: what runs, for logs and benchmark tables."""
        return (
            f"openvino {self.precision} (plugin {self.facts.get('inference_precision', '?')}, "
            f"MSDA {self.facts.get('msda', '?')})"
        )
