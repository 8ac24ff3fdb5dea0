"""Image and text towers. Each returns features of size ``tower.output_dim``; the model's own
projection (a geoopt ``ManifoldParameter``) maps them to the embedding dimension."""

from __future__ import annotations

import functools

import torch
from torch import nn

from .config import TextConfig, VisionConfig


class ConvTower(nn.Module):
    """A small CNN for low-resolution images: stages of (3x3 conv, GroupNorm, GELU) with a residual
    3x3 block, each stage halving the resolution, then global average pooling.

    GroupNorm instead of BatchNorm on purpose: BatchNorm's running statistics would keep moving on the
    mixed retain/forget batches of unlearning and make evaluation drift (docs/SPEC.md section 4).
    ``(n, 3, H, W) -> (n, widths[-1])``."""

    def __init__(self, widths=(32, 64, 128, 256)):
        super().__init__()
        layers = []
        in_channels = 3
        for index, width in enumerate(widths):
            stride = 1 if index == 0 else 2
            layers.append(_ConvBlock(in_channels, width, stride))
            layers.append(_Residual(_ConvBlock(width, width, 1)))
            in_channels = width
        self.stages = nn.Sequential(*layers)
        self.output_dim = in_channels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # Channels-last input makes every convolution, forward and backward, run in that layout
        # (oneDNN and cuDNN prefer it; on the 2-core CPU a whole `meru-tiny` pretraining ran 1-4%
        # faster, README "Measured defaults"), while the weights stay contiguous for checkpoints
        # and collectives.
        images = images.contiguous(memory_format=torch.channels_last)
        return self.stages(images).mean(dim=(-2, -1))


class _ConvBlock(nn.Sequential):
    def __init__(self, in_channels, out_channels, stride):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.GroupNorm(min(8, out_channels), out_channels),
            nn.GELU(),
        )


class _Residual(nn.Module):
    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, x):
        return x + self.block(x)


class TimmVisionTower(nn.Module):
    """A timm model without classifier (CLS-token pooling for ViTs, LayerNorm eps 1e-5 as in MERU).

    Exposes the network as ``trunk`` so that MERU's ``visual.*`` keys map to ``visual.trunk.*``."""

    def __init__(self, name: str, image_size: int, **kwargs):
        super().__init__()
        import timm

        kwargs = dict(kwargs)
        if name.startswith("vit"):
            kwargs.setdefault("global_pool", "token")
            kwargs.setdefault("norm_layer", functools.partial(nn.LayerNorm, eps=1e-5))
        self.trunk = timm.create_model(name, pretrained=False, num_classes=0, img_size=image_size, **kwargs)
        self.output_dim = self.trunk.num_features

    def forward(self, images):
        return self.trunk(images)


class OpenClipVisionTower(nn.Module):
    """An open_clip vision tower built from an open_clip ``vision_cfg`` (its own projection kept)."""

    def __init__(self, embed_dim: int, vision_cfg: dict):
        super().__init__()
        from open_clip.model import _build_vision_tower

        vision_cfg = dict(vision_cfg)
        quick_gelu = bool(vision_cfg.pop("quick_gelu", False))  # open_clip's model-level flag
        self.tower = _build_vision_tower(embed_dim, vision_cfg, quick_gelu=quick_gelu)
        self.output_dim = embed_dim

    def forward(self, images):
        return self.tower(images)


def build_vision_tower(config: VisionConfig, embed_dim: int) -> nn.Module:
    builders = {
        "conv": lambda: ConvTower(config.widths),
        "timm": lambda: TimmVisionTower(config.timm_name, config.image_size, **config.timm_kwargs),
        "open_clip": lambda: OpenClipVisionTower(embed_dim, config.open_clip_cfg),
    }
    if config.kind not in builders:
        raise ValueError(f"vision tower kind must be one of {sorted(builders)}, got {config.kind!r}")
    return builders[config.kind]()


def build_text_tower(config: TextConfig, embed_dim: int) -> nn.Module:
    """open_clip's ``TextTransformer``. Without an ``open_clip_cfg`` it has no projection of its own
    (``output_dim = width``); with one, it is exactly open_clip's tower (projection included)."""
    from open_clip.transformer import TextTransformer

    if config.open_clip_cfg:
        from open_clip.model import _build_text_tower

        text_cfg = dict(config.open_clip_cfg)
        quick_gelu = bool(text_cfg.pop("quick_gelu", False))  # open_clip's model-level flag
        tower = _build_text_tower(embed_dim, text_cfg, quick_gelu=quick_gelu)
        if type(tower) is TextTransformer:  # the subclass adds no state: weights and keys are open_clip's
            tower.__class__ = trimming_text_transformer()
        tower.output_dim = embed_dim
        return tower
    tower = trimming_text_transformer()(
        context_length=config.context_length, vocab_size=config.vocab_size, width=config.width,
        heads=config.heads, layers=config.layers, output_dim=None, proj_type="none",
    )
    tower.output_dim = config.width
    return tower


@functools.cache
def trimming_text_transformer() -> type:
    """open_clip's ``TextTransformer``, reading each batch only up to its last end-of-text token.

    With a causal mask and end-of-text (argmax) pooling, the output at position ``i`` depends on
    positions ``<= i`` only and the pooled feature is read at the end-of-text position, so the
    padding after a batch's last end-of-text token cannot change any result; cutting it changes
    only float rounding (products of another shape). Captions fill a fraction of the context (the
    built-in datasets at most 17 of 20 positions; short captions far less of MERU's 77), and every
    text forward and backward is shorter by that fraction. Towers with a class token or another
    pooling read the whole context as open_clip does. ``(n, context) -> (n, output_dim)``."""
    from open_clip.transformer import TextTransformer

    class TrimmingTextTransformer(TextTransformer):
        def forward(self, text: torch.Tensor) -> torch.Tensor:
            causal = self.attn_mask is not None and getattr(self, "cls_emb", None) is None
            if causal and getattr(self, "pool_type", "argmax") == "argmax" and text.shape[0] > 0:
                # one host read of the length per forward (a sync on a GPU), against a shorter tower pass
                text = text[:, : int(text.argmax(dim=-1).max()) + 1]
            return super().forward(text)

        def _embeds(self, text: torch.Tensor):
            x, attn_mask = super()._embeds(text)
            # open_clip slices its causal mask to the sequence only when it adds a padding mask
            if attn_mask is not None and attn_mask.dim() == 2:
                attn_mask = attn_mask[: x.shape[1], : x.shape[1]]
            return x, attn_mask

    TrimmingTextTransformer.__qualname__ = TrimmingTextTransformer.__name__
    return TrimmingTextTransformer
