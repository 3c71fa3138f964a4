"""AdaptiveClick: click maps + image through a plain ViT, SimpleFPN, the MSDA pixel decoder and CAMD.

The calling convention is the reference ``AdaptiveClickModel`` one, so both can be compared on the same inputs:
``net(image, points)`` with ``image = [B, 4, H, W]`` (RGB in ``[0, 1]`` and the previous-mask channel) and
``points = [B, 2N, 3]`` (see :func:`model.click_maps.clicks_to_points`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .camd import ClickAwareMaskAdaptiveDecoder
from .click_maps import CLICK_RADIUS, disk_maps
from .pixel_decoder import PixelDecoder
from .vit import PatchEmbed, VisionTransformer

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class NoObjectWeight(nn.Module):
    """Holds the class weights of the cross-entropy loss (``[1, no_object_weight]``).

    It exists so that the state_dict carries ``criterion.empty_weight`` like the reference model, whose loss module
    is a child of the network; fine-tuning reads the weight from here.
    """

    def __init__(self, no_object_weight: float = 0.1) -> None:
        super().__init__()
        self.register_buffer("empty_weight", torch.tensor([1.0, no_object_weight]))


class AdaptiveClick(nn.Module):
    """The AdaptiveClick network. Build it with :func:`model.build.build_adaptiveclick`."""

    def __init__(
        self,
        backbone: VisionTransformer,
        pixel_decoder: PixelDecoder,
        click_aware_decoder: ClickAwareMaskAdaptiveDecoder,
        click_radius: float = CLICK_RADIUS,
        no_object_weight: float = 0.1,
    ) -> None:
        super().__init__()
        self.click_radius = click_radius
        # prev mask + positive disks + negative disks, embedded like image patches
        self.patch_embed_coords = PatchEmbed(backbone.patch_size, 3, backbone.embed_dim)
        self.backbone = backbone
        self.pixel_decoder = pixel_decoder
        self.click_aware_decoder = click_aware_decoder
        self.criterion = NoObjectWeight(no_object_weight)
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def patch_size(self) -> tuple[int, int]:
        return self.backbone.patch_size

    def click_maps(self, prev_mask: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]``: previous mask, positive disks, negative disks."""
        disks = disk_maps(points, prev_mask.shape[-2], prev_mask.shape[-1], self.click_radius)
        return torch.cat((prev_mask, disks.to(prev_mask.dtype)), dim=1)

    def normalize(self, rgb: torch.Tensor) -> torch.Tensor:
        return (rgb - self.pixel_mean.to(rgb.dtype)) / self.pixel_std.to(rgb.dtype)

    def forward(self, image: torch.Tensor, points: torch.Tensor) -> dict:
        """
        Args:
            image: ``[B, 4, H, W]``: RGB in ``[0, 1]`` and the previous mask (probabilities).
            points: ``[B, 2N, 3]`` clicks ``(y, x, index)`` in input pixels, N positive then N negative, -1 padding.

        Returns:
            ``{"instances": [B, 1, H, W] mask logits, "predictions": CAMD outputs}``.
        """
        rgb, prev_mask = image[:, :3], image[:, 3:4]
        maps = self.click_maps(prev_mask, points.to(image.device))
        return self.forward_encoded(self.normalize(rgb), maps)

    def forward_encoded(
        self, normalized_rgb: torch.Tensor, maps: torch.Tensor, image_tokens: torch.Tensor | None = None
    ) -> dict:
        """Forward pass from the normalised image ``[B, 3, H, W]`` and the click maps ``[B, 3, H, W]``;
        ``image_tokens`` is ``backbone.patch_embed(normalized_rgb)`` where the caller keeps it between clicks."""
        if image_tokens is None:
            image_tokens = self.backbone.patch_embed(normalized_rgb)
        return self.forward_tokens(image_tokens, maps)

    def forward_tokens(self, image_tokens: torch.Tensor, maps: torch.Tensor) -> dict:
        """Forward pass from the image's patch tokens ``[B, H/p * W/p, D]`` and the click maps ``[B, 3, H, W]``
        (which give the input size): the per-click part of the network, the graph the OpenVINO engine exports."""
        click_tokens = self.patch_embed_coords(maps)
        size = maps.shape[-2:]
        grid = self.backbone.token_grid(size[0], size[1])
        tokens = self.backbone.forward_tokens(image_tokens + click_tokens, grid)
        mask_features, multi_scale = self.pixel_decoder(tokens, grid)
        predictions = self.click_aware_decoder(multi_scale, mask_features, positive_map=maps[:, 1])
        return {"instances": combine_query_masks(predictions, size), "predictions": predictions}


def combine_query_masks(predictions: dict, size: tuple[int, int]) -> torch.Tensor:
    """Sum over queries of foreground probability x mask logits, upsampled to ``size``: ``[B, 1, H, W]``.

    The foreground probability is ``sigmoid`` of the class-1 logit, as in the reference ``segment_inference``.
    """
    masks = F.interpolate(predictions["pred_masks"], size=tuple(size), mode="bilinear", align_corners=True)
    foreground = predictions["pred_logits"].sigmoid()[..., 1:]  # [B, Q, 1]
    return torch.einsum("bqc,bqhw->bchw", foreground, masks)
