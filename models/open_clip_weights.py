"""open_clip state dicts: the key mapping to our layout and the loader."""

from __future__ import annotations

from typing import Mapping

import torch

from .factory import create_model, model_config, open_clip_model_config
from .weights import CheckpointError, file_metadata, load_strictly, read_weights_file, state_dict_in, strip_module_prefix

_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
_OPEN_CLIP_TEXT_TOP = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.",
                       "text_projection", "cls_emb")


def convert_open_clip_state_dict(state_dict: Mapping) -> dict:
    """Rename an open_clip ``CLIP`` (or ``CustomTextCLIP``) state dict to ours: ``visual.*`` ->
    ``visual.tower.*``; the text parts (top-level ``token_embedding``, ``positional_embedding``,
    ``transformer.*``, ``ln_final``, ``text_projection``, or ``text.*``) -> ``textual.*``;
    ``logit_scale`` kept (as a scalar); ``attn_mask`` buffers and ``logit_bias`` dropped."""
    out = {}
    for key, value in strip_module_prefix(state_dict).items():
        if key in ("attn_mask", "text.attn_mask", "logit_bias"):
            continue
        if key == "logit_scale":
            out[key] = value.reshape(())
        elif key.startswith("visual."):
            out["visual.tower." + key[len("visual."):]] = value
        elif key.startswith("text."):
            out["textual." + key[len("text."):]] = value
        elif key.startswith(_OPEN_CLIP_TEXT_TOP):
            out["textual." + key] = value
        else:
            out[key] = value  # reported as unexpected
    return out


def load_open_clip_state_dict(path, arch, *, map_location="cpu", image_mean=None, image_std=None,
                              weights_only: bool = True) -> tuple:
    """Load an open_clip state dict from a local file into ``create_model("open_clip:" + arch)``:
    ``(model, metadata)`` like every loader here (:func:`file_metadata`).

    ``arch`` is an open_clip architecture name (``"ViT-B-32"``, with or without ``open_clip:``) or
    an open_clip model-config dict (``embed_dim``, ``vision_cfg``, ``text_cfg``, optionally
    ``quick_gelu`` and ``preprocess_cfg``). The file holds ``open_clip_model.state_dict()``, or a
    dict with it under ``"state_dict"`` (``module.`` prefixes are removed). Nothing is downloaded.

    Our projections become the identity and the feature scales 1, so ``encode_image`` /
    ``encode_text`` equal open_clip's ``encode_image(normalize=True)`` / ``encode_text(normalize=True)``
    for images that our model receives in ``[0, 1]`` and normalises with ``image_mean`` /
    ``image_std`` (default: the config's ``preprocess_cfg``, else OpenAI's statistics, as in
    open_clip's own preprocessing)."""
    if isinstance(arch, Mapping):
        cfg = dict(arch)
        config = open_clip_model_config(cfg, name=str(cfg.get("name", "open_clip:custom")))
    else:
        name = arch if str(arch).startswith("open_clip:") else f"open_clip:{arch}"
        try:
            config = model_config(name)
        except ValueError as error:
            raise CheckpointError(f"open_clip state dict {path}: {error}") from None
        import open_clip

        cfg = open_clip.get_model_config(name.split(":", 1)[1]) or {}

    payload = read_weights_file(path, weights_only=weights_only, what="open_clip state dict")
    raw = state_dict_in(payload, "state_dict", path, what="open_clip state dict")

    model = create_model(config)
    weights = convert_open_clip_state_dict(raw)
    preprocess = dict(cfg.get("preprocess_cfg") or {})
    mean = image_mean if image_mean is not None else preprocess.get("mean", _OPENAI_MEAN)
    std = image_std if image_std is not None else preprocess.get("std", _OPENAI_STD)
    eye = torch.eye(config.embed_dim)
    if model.visual_proj.shape != eye.shape or model.textual_proj.shape != eye.shape:
        raise CheckpointError(
            f"open_clip state dict {path}: towers of {config.name!r} do not output embed_dim "
            f"{config.embed_dim} (visual_proj {tuple(model.visual_proj.shape)}, "
            f"textual_proj {tuple(model.textual_proj.shape)})"
        )
    weights.update({
        "visual_proj": eye, "textual_proj": eye.clone(),
        "visual_alpha": torch.zeros(()), "textual_alpha": torch.zeros(()),
        "pixel_mean": torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1),
        "pixel_std": torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1),
    })
    load_strictly(model, weights, path, optional=set())
    return model.to(map_location), file_metadata(path, model, "open_clip")
