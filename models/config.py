"""Named model configurations and their registry (``models.create_model(name)`` reads these)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Dict

from manifolds import geometry_names, geometry_spec, geometry_specs
from manifolds.geometry import DEFAULT_MIN_RADIUS


@dataclass(frozen=True)
class VisionConfig:
    """Image tower. ``kind`` is ``"conv"`` (our small GroupNorm CNN), ``"timm"`` (a timm model by
    name, e.g. MERU's ViTs) or ``"open_clip"`` (an open_clip vision tower from ``open_clip_cfg``)."""

    kind: str = "conv"
    image_size: int = 32
    widths: tuple = (32, 64, 128, 256)  # conv: channels per stage; each stage halves the size
    timm_name: str = ""
    timm_kwargs: dict = field(default_factory=dict)
    open_clip_cfg: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TextConfig:
    """Text tower: open_clip's causal ``TextTransformer`` with argmax (end-of-text) pooling."""

    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    heads: int = 8
    layers: int = 12
    # A compact vocabulary: the model maps the BPE ids of its training text onto ``vocab_size`` rows
    # (see ImageTextModel.build_vocabulary). Tiny models use it: a 49408-row embedding dominated
    # their CPU step time and memory while the built-in captions use ~100 distinct tokens.
    compact_vocabulary: bool = False
    open_clip_cfg: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model; stored in our checkpoints.

    ``geometry`` names a registered geometry (``manifolds.geometry_names()``): ``"lorentz"`` (MERU:
    exponential-map head, learnable curvature, entailment loss) or ``"euclidean"`` (CLIP:
    L2-normalised head, cosine similarity, no entailment loss), ... ``min_radius`` is handed to the
    geometry object, whose cones the entailment loss, the objectives and the audits all read."""

    name: str
    geometry: str
    embed_dim: int
    vision: VisionConfig
    text: TextConfig
    curvature: float = 1.0
    learn_curvature: bool = True
    entailment_weight: float = 0.2
    min_radius: float = DEFAULT_MIN_RADIUS  # entailment cones' minimum radius K

    def __post_init__(self):
        if self.geometry not in geometry_names():
            raise ValueError(f"geometry must be one of {geometry_names()}, got {self.geometry!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        data = dict(data)
        data["vision"] = VisionConfig(**{**data["vision"], "widths": tuple(data["vision"]["widths"])})
        data["text"] = TextConfig(**data["text"])
        return cls(**data)

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


_CONFIGS: Dict[str, Callable[[], ModelConfig]] = {}


def register_config(name: str):
    """Decorator: register a zero-argument function returning a :class:`ModelConfig`."""

    def decorator(fn):
        if name in _CONFIGS:
            raise ValueError(f"model config {name!r} is already registered")
        _CONFIGS[name] = fn
        return fn

    return decorator


def get_config(name: str) -> ModelConfig:
    """The config registered as ``name``, or ``<family>-<size>`` of a registered geometry's model
    family (looked up when asked, so a geometry registered after this module still gets its sizes)."""
    if name in _CONFIGS:
        return _CONFIGS[name]()
    for spec in geometry_specs():
        for size, (embed_dim, vision, text) in _FAMILY_SIZES.items():
            if name == f"{spec.family}-{size}":
                return _family_config(name, spec.name, embed_dim, vision, text)
    raise KeyError(name)


def list_configs() -> list:
    """Registered config names and every ``<family>-<size>`` of the registered geometries."""
    family = [f"{spec.family}-{size}" for spec in geometry_specs() for size in _FAMILY_SIZES]
    return sorted({*_CONFIGS, *family})


def _family_config(name: str, geometry: str, embed_dim, vision, text) -> ModelConfig:
    """A named config of ``geometry``'s model family, with the geometry's pretraining loss settings."""
    spec = geometry_spec(geometry)
    return ModelConfig(
        name=name, geometry=geometry, embed_dim=embed_dim, vision=vision, text=text,
        entailment_weight=spec.entailment_weight, learn_curvature=spec.learn_curvature,
    )


# Tiny models for the built-in 32x32 datasets: a 4-stage CNN (a ViT learns far too slowly on a
# 2-core CPU) and a 2-layer text transformer with a short context.
_TINY_VISION = VisionConfig(kind="conv", image_size=32, widths=(16, 32, 64, 128))
_TINY_TEXT = TextConfig(context_length=20, vocab_size=1024, width=128, heads=4, layers=2, compact_vocabulary=True)

# MERU's released architectures (docs/SPEC.md section 2): timm ViTs with CLS pooling and LayerNorm eps 1e-5,
# 12-layer 512-wide text transformer, 512-d embeddings.
_MERU_TEXT = TextConfig(context_length=77, width=512, heads=8, layers=12)
_VITS = {
    "vit-s": VisionConfig(kind="timm", image_size=224, timm_name="vit_small_patch16_224",
                          timm_kwargs={"num_heads": 12}),
    "vit-b": VisionConfig(kind="timm", image_size=224, timm_name="vit_base_patch16_224"),
    "vit-l": VisionConfig(kind="timm", image_size=224, timm_name="vit_large_patch16_224"),
}

# Every registered geometry's model family comes in these sizes (``meru-tiny``, ``clip-vit-b``, ...):
# embedding width, vision tower, text tower.
_FAMILY_SIZES = {
    "tiny": (64, _TINY_VISION, _TINY_TEXT),
    **{vit: (512, vision, _MERU_TEXT) for vit, vision in _VITS.items()},
}
