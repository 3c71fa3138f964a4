"""Configurations of the released AdaptiveClick models and the builder.

Values are those of ``configs/adaptiveclick_plainvit_{base,huge}448.yaml`` in lab206/AdaptiveClick. ``tiny`` is a
small network of the same architecture for tests and smoke runs only; it is never a useful model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .adaptiveclick import AdaptiveClick
from .camd import ClickAwareMaskAdaptiveDecoder
from .pixel_decoder import PixelDecoder
from .vit import VisionTransformer


@dataclass(frozen=True)
class AdaptiveClickConfig:
    name: str
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    fpn_dims: tuple[int, int, int, int]
    input_size: int = 448
    mlp_ratio: float = 4.0
    conv_dim: int = 256
    mask_dim: int = 256
    encoder_layers: int = 4
    encoder_ffn: int = 1024  # MASK_FORMER.DIM_FEEDFORWARD // 2
    hidden_dim: int = 256
    num_queries: int = 10
    nheads: int = 8
    decoder_ffn: int = 2048
    decoder_layers: int = 9  # DEC_LAYERS - 1
    no_object_weight: float = 0.1
    click_radius: float = 5.0

    def to_dict(self) -> dict:
        return asdict(self)


CONFIGS = {
    "base": AdaptiveClickConfig(
        "base", patch_size=16, embed_dim=768, depth=12, num_heads=12, fpn_dims=(256, 512, 1024, 2048)
    ),
    "huge": AdaptiveClickConfig(
        "huge", patch_size=14, embed_dim=1280, depth=32, num_heads=16, fpn_dims=(512, 1024, 2048, 4096)
    ),
}


TINY_CONFIG = AdaptiveClickConfig(
    "tiny",
    patch_size=16,
    embed_dim=96,
    depth=4,
    num_heads=3,
    fpn_dims=(32, 64, 96, 128),
    conv_dim=64,
    mask_dim=64,
    encoder_layers=1,
    encoder_ffn=128,
    hidden_dim=64,
    nheads=4,
    decoder_ffn=128,
)
#: every size a spec or ``--init`` may name: the released ones and ``tiny``
SIZES = {**CONFIGS, "tiny": TINY_CONFIG}


def get_config(size: str | AdaptiveClickConfig) -> AdaptiveClickConfig:
    if isinstance(size, AdaptiveClickConfig):
        return size
    try:
        return SIZES[size]
    except KeyError:
        raise ValueError(f"unknown AdaptiveClick size {size!r}; expected one of {', '.join(SIZES)}") from None


def build_adaptiveclick(size: str | AdaptiveClickConfig = "base") -> AdaptiveClick:
    """A randomly initialised AdaptiveClick ("base", "huge", "tiny" or an explicit config) in eval mode."""
    cfg = get_config(size)
    backbone = VisionTransformer(
        img_size=(cfg.input_size, cfg.input_size),
        patch_size=(cfg.patch_size, cfg.patch_size),
        embed_dim=cfg.embed_dim,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_ratio,
    )
    pixel_decoder = PixelDecoder(
        cfg.embed_dim,
        cfg.fpn_dims,
        conv_dim=cfg.conv_dim,
        mask_dim=cfg.mask_dim,
        num_encoder_layers=cfg.encoder_layers,
        nheads=cfg.nheads,
        dim_feedforward=cfg.encoder_ffn,
    )
    decoder = ClickAwareMaskAdaptiveDecoder(
        hidden_dim=cfg.hidden_dim,
        num_queries=cfg.num_queries,
        nheads=cfg.nheads,
        dim_feedforward=cfg.decoder_ffn,
        dec_layers=cfg.decoder_layers,
        mask_dim=cfg.mask_dim,
    )
    net = AdaptiveClick(
        backbone, pixel_decoder, decoder, click_radius=cfg.click_radius, no_object_weight=cfg.no_object_weight
    )
    net.config = cfg
    return net.eval()
