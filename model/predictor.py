"""The predictor interface and the AdaptiveClick predictor.

In the spirit of SAM's ``SamPredictor``: ``set_image(rgb)`` once per image, then ``predict(clicks, prev_mask)``
per click. A prediction depends only on its inputs: the image, the clicks, the previous probabilities and (for the
"cvpr" zoom-in) the previous region of interest, which :meth:`Predictor.step` takes and returns explicitly.

:meth:`Predictor.step_many` runs several independent steps on the same image (several objects, e.g. one per box);
AdaptiveClick runs them in one forward pass (a batch of their regions), which on a GPU costs little more than one.
Each step's answer is what :meth:`Predictor.step` gives for it alone.

A box prompt reaches a predictor as its clicks (:func:`model.prompts.box_to_clicks`) and, beside them, the box
itself: AdaptiveClick goes by the clicks alone; a predictor that can use the box (:attr:`Predictor.takes_box`: the
baseline, whose GrabCut starts from the rectangle) answers the box's clicks from the box.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .adaptiveclick import AdaptiveClick
from .click_maps import clicks_to_points
from .clicks import Click, as_clicks
from .prediction import Prediction, Roi, StepInput
from .prompts import Box
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


#: regions per forward pass of :meth:`Predictor.step_many` on a GPU (on a CPU a batch takes as long as its steps
#: one after another, so one at a time there); see ``adaptiveclick benchmark boxes --batch``
GPU_BATCH = 8


def check_box(box: Box | None, shape: tuple[int, int]) -> Box | None:
    """``box`` ``(top, bottom, left, right)`` (inclusive pixels) if it is ordered and lies inside an image of
    ``shape``, else a ValueError saying what is wrong."""
    if box is None:
        return None
    top, bottom, left, right = (int(v) for v in box)
    h, w = shape
    if not (0 <= top <= bottom < h and 0 <= left <= right < w):
        raise ValueError(
            f"box (top, bottom, left, right) = {tuple(box)} is not an ordered box inside the {w}x{h} image"
        )
    return top, bottom, left, right


class StepTimeout(TimeoutError):
    """A predictor step was stopped at its time limit."""


class Predictor(ABC):
    """Interface shared by every predictor (AdaptiveClick, the embedded baseline, ...)."""

    #: names the model and its weights; the backend reports it with every prediction
    model_version: str = "unknown"
    #: whether :meth:`step` uses a box prompt itself, beyond the box's clicks (the baseline's rectangle
    #: initialisation); a predictor without it gives the same answer with or without the box
    takes_box: bool = False

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
        box: Box | None = None,
    ) -> Prediction:
        """One interaction step: like :meth:`predict` but also taking and returning the zoom-in ROI.

        ``time_limit`` (seconds) bounds the step where the predictor can stop its work (the baseline's GrabCut;
        :class:`StepTimeout` when it is exceeded); a network forward pass runs to its end. ``box`` ``(top, bottom,
        left, right)``: the box prompt the clicks came with, its clicks among ``clicks`` (see the module docstring).
        """
        clicks = check_clicks(clicks, self.image_shape)
        prev_mask = self._check_prev(prev_mask)
        box = check_box(box, self.image_shape)
        self._time_limit = time_limit
        try:
            return self._step(clicks, prev_mask, prev_roi, box)
        finally:
            self._time_limit = None

    @abstractmethod
    def _step(
        self, clicks: list[Click], prev_mask: np.ndarray | None, prev_roi: Roi | None, box: Box | None
    ) -> Prediction: ...

    #: steps :meth:`step_many` runs per forward pass by default (AdaptiveClick on a GPU batches them)
    max_batch: int = 1

    def step_many(self, steps: Sequence[StepInput], time_limit: float | None = None) -> list[Prediction]:
        """Several independent steps on the current image, each as :meth:`step` would answer it alone. The base
        class runs them one at a time (``time_limit`` bounds each); a predictor that can batch overrides
        :meth:`_step_many`."""
        checked = [
            StepInput(
                check_clicks(s.clicks, self.image_shape),
                self._check_prev(s.prev_mask),
                s.prev_roi,
                check_box(s.box, self.image_shape),
            )
            for s in steps
        ]
        if not checked:
            return []
        self._time_limit = time_limit
        try:
            return self._step_many(checked)
        finally:
            self._time_limit = None

    def _step_many(self, steps: list[StepInput]) -> list[Prediction]:
        return [self._step(list(s.clicks), s.prev_mask, s.prev_roi, s.box) for s in steps]

    def _check_prev(self, prev_mask: np.ndarray | None) -> np.ndarray | None:
        if prev_mask is None:
            return None
        prev_mask = np.asarray(prev_mask, dtype=np.float32)
        if prev_mask.shape != self.image_shape:
            raise ValueError(f"prev_mask has shape {prev_mask.shape}, the image {self.image_shape}")
        return prev_mask


class AdaptiveClickPredictor(Predictor):
    """Runs AdaptiveClick on an image of any size and aspect.

    Args:
        net: the network (eval mode).
        model_version: name reported with predictions.
        device: where the network runs.
        mode: "cvpr" (zoom-in after the first click, as the paper evaluates) or "plain" (the whole image every time).
        with_flip: average the logits of the image and its horizontal mirror (as the reference evaluation does).
        input_size: side of the square network input (448 as trained; 672 is the reference choice for DAVIS).
        engine: runs the per-click network instead of torch: ``engine(image_tokens [B, N, D], maps [B, 3, h, w])
            -> logits [B, 1, h, w]``, as ``net.forward_tokens(...)["instances"]`` (the OpenVINO engine,
            :mod:`model.engine`); the image tokens, click maps and everything around the network stay here.
    """

    def __init__(
        self,
        net: AdaptiveClick,
        model_version: str,
        device: str | torch.device = "cpu",
        mode: str = "cvpr",
        with_flip: bool = False,
        input_size: int = 448,
        engine: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
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
        if engine is not None and not isinstance(net, AdaptiveClick):
            raise ValueError("an engine runs an AdaptiveClick network's per-click part (from its image tokens)")
        self.engine = engine
        self.max_batch = GPU_BATCH if self.device.type == "cuda" else 1
        self._image_tensor: torch.Tensor | None = None

    @property
    def runs_as(self) -> str:
        """What computes the network: ``torch fp32``, ``openvino bf16 (plugin bf16, MSDA custom op)``, ..."""
        if self.engine is not None:
            describe = getattr(self.engine, "describe", None)
            return describe() if describe else type(self.engine).__name__
        return f"torch {getattr(self.net, 'inference_precision', 'fp32')}"

    def memory_bytes(self) -> int:
        """The torch network's tensors, plus an engine's compiled weights (it holds its own copy)."""
        tensors = [*self.net.parameters(), *self.net.buffers()]
        engine = getattr(self.engine, "memory_bytes", None)
        return int(sum(t.numel() * t.element_size() for t in tensors)) + (engine() if engine else 0)

    def _prepare_image(self, image: np.ndarray) -> None:
        rgb = torch.tensor(image, device=self.device).permute(2, 0, 1)[None]  # a copy: the array may be read-only
        self._image_tensor = rgb.to(torch.float32).div_(255.0)  # [1, 3, H, W]
        self._region = None  # (roi, network RGB input, its normalised form, its patch tokens): see _region_input

    @torch.inference_mode()
    def _step(
        self, clicks: list[Click], prev_mask: np.ndarray | None, prev_roi: Roi | None, box: Box | None
    ) -> Prediction:
        return self._step_many([StepInput(clicks, prev_mask, prev_roi)])[0]  # a box goes by its clicks

    @torch.inference_mode()
    def _step_many(self, steps: list[StepInput]) -> list[Prediction]:
        """Every step's region through the network in one batch: ``[B, 3, h, w]`` images (``2B`` with flip),
        ``[B, 1, h, w]`` previous probabilities and the clicks of each, then each answer pasted back into its
        region."""
        prepared = [self._prepare_step(s) for s in steps]
        logits = self._run_net([p[0] for p in prepared], torch.cat([p[1] for p in prepared]), [p[2] for p in prepared])
        return [self._finish_step(logits[i : i + 1], p[0]) for i, p in enumerate(prepared)]

    def _prepare_step(self, step: StepInput) -> tuple[Roi, torch.Tensor, list[Click]]:
        """The step's region, its previous probabilities resized to the input ``[1, 1, h, w]``, and its clicks in
        input pixels."""
        h, w = self.image_shape
        clicks = list(step.clicks)
        if self.mode == "plain":
            roi = whole_image_roi(h, w)
        else:
            roi = next_roi(step.prev_mask, clicks, step.prev_roi, (h, w))
        rmin, rmax, cmin, cmax = roi
        if step.prev_mask is None:
            prev = torch.zeros((1, 1) + self.input_size, device=self.device)
        else:
            # a copy: the session cache hands out read-only arrays
            prev = torch.tensor(step.prev_mask, device=self.device)[None, None, rmin : rmax + 1, cmin : cmax + 1]
            prev = F.interpolate(prev, size=self.input_size, mode="bilinear", align_corners=True)
        return roi, prev, clicks_to_roi_frame(clicks, roi, self.input_size)

    def _finish_step(self, logits: torch.Tensor, roi: Roi) -> Prediction:
        """Probabilities ``[H, W]`` of the image from one region's logits ``[1, 1, h, w]``."""
        h, w = self.image_shape
        rmin, rmax, cmin, cmax = roi
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

    def _run_net(self, rois: list[Roi], prev: torch.Tensor, clicks: list[list[Click]]) -> torch.Tensor:
        """Mask logits ``[B, 1, h, w]`` for B regions ``rois`` of the image, their previous probabilities resized to
        the input ``[B, 1, h, w]`` and each one's clicks in input pixels, flip-averaged if enabled.

        Any network with AdaptiveClick's calling convention (``net(image [B, 4, h, w], points)["instances"]``)
        works; an :class:`AdaptiveClick` gets the regions' image tokens instead of the images. With flip, each
        region is followed by its mirror (``[x1, x1', x2, x2', ...]``), so one region alone is exactly the batch
        the single-step path has always run.
        """
        inputs = [self._region_input(roi) for roi in rois]
        rgb = torch.cat([i[0] for i in inputs])
        batches: list[list[Click]] = []
        if self.with_flip:
            width = prev.shape[-1]
            prev = torch.stack([prev, torch.flip(prev, dims=[3])], dim=1).flatten(0, 1)
            for lst in clicks:
                batches += [lst, [c.moved(c.y, width - c.x - 1) for c in lst]]
        else:
            batches = clicks
        points = clicks_to_points(batches).to(self.device)
        if inputs[0][2] is not None:
            normalized = torch.cat([i[1] for i in inputs])
            image_tokens = torch.cat([i[2] for i in inputs])
            maps = self.net.click_maps(prev, points)
            if self.engine is not None:
                logits = self.engine(image_tokens, maps).to(self.device)
            else:
                logits = self.net.forward_encoded(normalized, maps, image_tokens)["instances"]
        else:
            logits = self.net(torch.cat((rgb, prev), dim=1), points)["instances"]
        if self.with_flip:
            logits = 0.5 * (logits[0::2] + torch.flip(logits[1::2], dims=[3]))
        return logits
