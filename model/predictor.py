"""The predictor interface and the AdaptiveClick predictor.

In the spirit of SAM's ``SamPredictor``: ``set_image(rgb)`` once per image, then ``predict(clicks, prev_mask)``
per click. A prediction depends only on its inputs: the image, the clicks, the previous probabilities and (for the
"cvpr" zoom-in) the previous region of interest, which :meth:`Predictor.step` takes and returns explicitly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .adaptiveclick import AdaptiveClick
from .click_maps import clicks_to_points
from .clicks import Click, as_clicks
from .prediction import Prediction, Roi
from .spec import EVAL_MODES
from .zoom_in import clicks_to_roi_frame, next_roi, whole_image_roi


def check_image(image: Any) -> np.ndarray:
    """An ``[H, W, 3]`` uint8 RGB array, or a ValueError saying what is wrong."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape [H, W, 3], got {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if min(image.shape[:2]) < 1:
        raise ValueError("the image is empty")
    return np.ascontiguousarray(image)


def check_clicks(clicks: Sequence[Any], shape: tuple[int, int]) -> list[Click]:
    """Normalise clicks and make sure they lie inside an image of ``shape``."""
    clicks = as_clicks(clicks)
    if not clicks:
        raise ValueError("at least one click is needed")
    h, w = shape
    for c in clicks:
        if not (0 <= c.y < h and 0 <= c.x < w):
            raise ValueError(f"click at (y={c.y:g}, x={c.x:g}) is outside the {w}x{h} image")
    return clicks


class StepTimeout(TimeoutError):
    """A predictor step was stopped at its time limit."""


class Predictor(ABC):
    """Interface shared by every predictor (AdaptiveClick, the embedded baseline, ...)."""

    #: names the model and its weights; the backend reports it with every prediction
    model_version: str = "unknown"

    def __init__(self) -> None:
        self._image: np.ndarray | None = None
        self._time_limit: float | None = None  # of the step being run (see step)

    @property
    def image_shape(self) -> tuple[int, int]:
        if self._image is None:
            raise RuntimeError("call set_image() before predict()")
        return self._image.shape[:2]

    def set_image(self, image: np.ndarray) -> None:
        """Set the ``[H, W, 3]`` uint8 RGB image that the next predictions refer to."""
        self._image = check_image(image)
        self._prepare_image(self._image)

    def memory_bytes(self) -> int:
        """What the model itself holds (weights and buffers), for the backend's memory-bounded model pool."""
        return 0

    def _prepare_image(self, image: np.ndarray) -> None:  # noqa: B027 (an optional hook, not abstract)
        """Hook for per-image work worth doing once (decoding to tensors, moving to the device)."""

    def predict(self, clicks: Sequence[Any], prev_mask: np.ndarray | None = None) -> np.ndarray:
        """Probabilities ``[H, W]`` float32 for ``clicks`` (``(y, x, is_positive)`` in pixels, or Click objects)."""
        return self.step(clicks, prev_mask).probs

    def step(
        self,
        clicks: Sequence[Any],
        prev_mask: np.ndarray | None = None,
        prev_roi: Roi | None = None,
        time_limit: float | None = None,
    ) -> Prediction:
        """One interaction step: like :meth:`predict` but also taking and returning the zoom-in ROI.

        ``time_limit`` (seconds) bounds the step where the predictor can stop its work (the baseline's GrabCut;
        :class:`StepTimeout` when it is exceeded); a network forward pass runs to its end.
        """
        clicks = check_clicks(clicks, self.image_shape)
        if prev_mask is not None:
            prev_mask = np.asarray(prev_mask, dtype=np.float32)
            if prev_mask.shape != self.image_shape:
                raise ValueError(f"prev_mask has shape {prev_mask.shape}, the image {self.image_shape}")
        self._time_limit = time_limit
        try:
            return self._step(clicks, prev_mask, prev_roi)
        finally:
            self._time_limit = None

    @abstractmethod
    def _step(self, clicks: list[Click], prev_mask: np.ndarray | None, prev_roi: Roi | None) -> Prediction: ...


class AdaptiveClickPredictor(Predictor):
    """Runs AdaptiveClick on an image of any size and aspect.

    Args:
        net: the network (eval mode).
        model_version: name reported with predictions.
        device: where the network runs.
        mode: "cvpr" (zoom-in after the first click, as the paper evaluates) or "plain" (the whole image every time).
        with_flip: average the logits of the image and its horizontal mirror (as the reference evaluation does).
        input_size: side of the square network input (448 as trained; 672 is the reference choice for DAVIS).
    """

    def __init__(
        self,
        net: AdaptiveClick,
        model_version: str,
        device: str | torch.device = "cpu",
        mode: str = "cvpr",
        with_flip: bool = False,
        input_size: int = 448,
    ) -> None:
        super().__init__()
        if mode not in EVAL_MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(EVAL_MODES)}")
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.model_version = model_version
        self.mode = mode
        self.with_flip = with_flip
        self.input_size = (input_size, input_size)
        self._image_tensor: torch.Tensor | None = None

    def memory_bytes(self) -> int:
        tensors = [*self.net.parameters(), *self.net.buffers()]
        return int(sum(t.numel() * t.element_size() for t in tensors))

    def _prepare_image(self, image: np.ndarray) -> None:
        rgb = torch.tensor(image, device=self.device).permute(2, 0, 1)[None]  # a copy: the array may be read-only
        self._image_tensor = rgb.to(torch.float32).div_(255.0)  # [1, 3, H, W]
        self._region = None  # (roi, network RGB input, its normalised form, its patch tokens): see _region_input

    @torch.inference_mode()
    def _step(self, clicks: list[Click], prev_mask: np.ndarray | None, prev_roi: Roi | None) -> Prediction:
        h, w = self.image_shape
        if self.mode == "plain":
            roi = whole_image_roi(h, w)
        else:
            roi = next_roi(prev_mask, clicks, prev_roi, (h, w))
        rmin, rmax, cmin, cmax = roi
        if prev_mask is None:
            prev = torch.zeros((1, 1) + self.input_size, device=self.device)
        else:
            # a copy: the session cache hands out read-only arrays
            prev = torch.tensor(prev_mask, device=self.device)[None, None, rmin : rmax + 1, cmin : cmax + 1]
            prev = F.interpolate(prev, size=self.input_size, mode="bilinear", align_corners=True)
        net_clicks = clicks_to_roi_frame(clicks, roi, self.input_size)
        logits = self._run_net(roi, prev, net_clicks)
        probs = torch.sigmoid(logits)
        probs = F.interpolate(probs, size=(rmax - rmin + 1, cmax - cmin + 1), mode="bilinear", align_corners=True)
        full = torch.zeros((h, w), dtype=torch.float32, device=self.device)
        full[rmin : rmax + 1, cmin : cmax + 1] = probs[0, 0]
        return Prediction(full.cpu().numpy(), roi)

    def _region_input(self, roi: Roi) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The network's image input for ``roi``: RGB in ``[0, 1]`` ``[B, 3, h, w]`` and, for an
        :class:`AdaptiveClick` network, its normalised form and patch tokens ``[B, N, D]`` (B = 2 with flip
        averaging: the image and its mirror).

        Only the click half of the input changes between clicks while the zoom-in keeps its region, so the crop,
        resize, normalisation and the image's patch embedding are computed once per region and image (the patch
        embedding is linear: image tokens + click-map tokens).
        """
        if self._region is not None and self._region[0] == roi:
            return self._region[1:]
        rmin, rmax, cmin, cmax = roi
        crop = self._image_tensor[:, :, rmin : rmax + 1, cmin : cmax + 1]
        rgb = F.interpolate(crop, size=self.input_size, mode="bilinear", align_corners=True)
        if self.with_flip:
            rgb = torch.cat([rgb, torch.flip(rgb, dims=[3])], dim=0)
        normalized = image_tokens = None
        if isinstance(self.net, AdaptiveClick):
            normalized = self.net.normalize(rgb)
            image_tokens = self.net.backbone.patch_embed(normalized)
        self._region = (roi, rgb, normalized, image_tokens)
        return rgb, normalized, image_tokens

    def _run_net(self, roi: Roi, prev: torch.Tensor, clicks: list[Click]) -> torch.Tensor:
        """Mask logits ``[1, 1, h, w]`` for the region ``roi`` of the image, the previous probabilities resized to
        the input ``[1, 1, h, w]`` and the clicks in input pixels, flip-averaged if enabled.

        Any network with AdaptiveClick's calling convention (``net(image [B, 4, h, w], points)["instances"]``)
        works; an :class:`AdaptiveClick` gets the region's image tokens instead of the image.
        """
        rgb, normalized, image_tokens = self._region_input(roi)
        batches = [clicks]
        if self.with_flip:
            width = prev.shape[-1]
            prev = torch.cat([prev, torch.flip(prev, dims=[3])], dim=0)
            batches.append([c.moved(c.y, width - c.x - 1) for c in clicks])
        points = clicks_to_points(batches).to(self.device)
        if image_tokens is not None:
            maps = self.net.click_maps(prev, points)
            logits = self.net.forward_encoded(normalized, maps, image_tokens)["instances"]
        else:
            logits = self.net(torch.cat((rgb, prev), dim=1), points)["instances"]
        if self.with_flip:
            logits = 0.5 * (logits[:1] + torch.flip(logits[1:], dims=[3]))
        return logits
