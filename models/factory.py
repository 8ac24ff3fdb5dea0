"""One factory for every model: our named configs and open_clip architectures by name."""

from __future__ import annotations

import functools

import torch

from .config import ModelConfig, TextConfig, VisionConfig, get_config, list_configs
from .model import ImageTextModel


def list_models() -> list:
    """Our named configs (``meru-tiny``, ``clip-vit-b``, ...); open_clip names are also accepted."""
    return list_configs()


def model_config(name: str, **overrides) -> ModelConfig:
    """The config of ``name``: one of :func:`list_models`, or an open_clip architecture
    (``"open_clip:ViT-B-32"`` or a bare open_clip name), which gives a CLIP (Euclidean) model."""
    try:
        config = get_config(name)
    except KeyError:
        config = _open_clip_config(name)
    return config.replace(**overrides) if overrides else config


def create_model(name_or_config, **overrides) -> ImageTextModel:
    """Build a freshly initialised model from a name (see :func:`model_config`) or a config."""
    if isinstance(name_or_config, ModelConfig):
        config = name_or_config.replace(**overrides) if overrides else name_or_config
    else:
        config = model_config(name_or_config, **overrides)
    return ImageTextModel.class_for(config.geometry)(config)


def _open_clip_config(name: str) -> ModelConfig:
    import open_clip

    arch = name.split(":", 1)[1] if name.startswith("open_clip:") else name
    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise ValueError(
            f"unknown model {name!r}: expected one of {list_models()} or an open_clip architecture "
            f"such as 'open_clip:ViT-B-32' (open_clip knows {len(open_clip.list_models())})"
        )
    return open_clip_model_config(cfg, name=f"open_clip:{arch}")


def open_clip_model_config(cfg: dict, name: str = "open_clip:custom") -> ModelConfig:
    """A CLIP (Euclidean) config on open_clip towers from an open_clip model-config dict
    (``embed_dim``, ``vision_cfg``, ``text_cfg`` and optionally ``quick_gelu``), as found in
    open_clip's ``model_configs/*.json`` or passed to ``open_clip.model.CLIP``.

    ``quick_gelu`` is kept inside both towers' ``open_clip_cfg`` (the towers read it back)."""
    vision_cfg, text_cfg = dict(cfg["vision_cfg"]), dict(cfg.get("text_cfg", {}))
    if cfg.get("quick_gelu"):
        vision_cfg["quick_gelu"] = text_cfg["quick_gelu"] = True
    image_size = vision_cfg.get("image_size", 224)
    image_size = image_size if isinstance(image_size, int) else image_size[0]
    text = TextConfig(
        context_length=text_cfg.get("context_length", 77), vocab_size=text_cfg.get("vocab_size", 49408),
        width=text_cfg.get("width", 512), heads=text_cfg.get("heads", 8), layers=text_cfg.get("layers", 12),
        open_clip_cfg=text_cfg,
    )
    vision = VisionConfig(kind="open_clip", image_size=image_size, open_clip_cfg=vision_cfg)
    return ModelConfig(
        name=name, geometry="euclidean", embed_dim=cfg["embed_dim"], vision=vision,
        text=text, learn_curvature=False, entailment_weight=0.0,
    )


@functools.lru_cache(maxsize=None)
def _simple_tokenizer(context_length: int):
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=context_length)


class Tokenizer:
    """open_clip's BPE tokenizer (the same vocabulary as MERU), bundled with open_clip (no download).

    ``tokenizer(["a red triangle"]) -> LongTensor (n, context_length)``; a cache makes repeated
    captions free."""

    def __init__(self, context_length: int):
        self.context_length = context_length
        self._cache: dict = {}

    def __call__(self, texts) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            encoded = _simple_tokenizer(self.context_length)(missing)
            self._cache.update(zip(missing, encoded))
        return torch.stack([self._cache[t] for t in texts])


def get_tokenizer(model_or_context_length) -> Tokenizer:
    length = getattr(model_or_context_length, "context_length", model_or_context_length)
    return Tokenizer(int(length))
