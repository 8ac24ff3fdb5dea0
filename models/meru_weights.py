"""MERU's released checkpoints: their layout, the key mapping to ours, and the loader.

Released MERU/CLIP checkpoints (``meru_vit_{s,b,l}.pth``, ``clip_vit_{s,b,l}.pth``; docs/SPEC.md section 2)
are a dict whose ``"model"`` entry is the state dict of MERU's ``MERU`` / ``CLIPBaseline`` module
(``facebookresearch/meru``: ``meru/models.py``, ``meru/encoders/{text,image}_encoders.py``).
Their keys, what they mean in MERU's code, and where they go in ours:

- ``logit_scale``: log temperature (MERU clamps it to ``<= log 100``) -> ``logit_scale``.
- ``curv`` (MERU only): ``nn.Parameter(log(curv_init))``, i.e. **log c**, used as ``curv.exp()`` and
  clamped to ``[log(c0/10), log(10 c0)]`` -> ``geometry.log_c``.
- ``visual_alpha``, ``textual_alpha`` (MERU only): log feature scales, used as ``alpha.exp()``
  (clamped to ``<= 0`` during training) -> the same names.
- ``pixel_mean``, ``pixel_std``: buffers ``view(-1, 1, 1)``, shape ``(3, 1, 1)``, in ``[0, 1]``
  units (images enter as ``[0, 1]`` pixels) -> the same names, shape ``(1, 3, 1, 1)``.
- ``visual.*``: a timm ViT (``num_classes=0``, CLS pooling, ``nn.LayerNorm`` eps 1e-5, fixed 2-D
  sin-cos position embedding) -> ``visual.trunk.*`` (timm's own names on both sides).
- ``visual_proj.weight``, ``textual_proj.weight``: ``nn.Linear(width, embed_dim, bias=False)``
  weights ``(embed_dim, width)`` -> ``visual_proj``, ``textual_proj`` (same layout, no transpose).
- ``textual.token_embed.weight`` (``nn.Embedding(vocab, width)``) -> ``textual.token_embedding.weight``.
- ``textual.posit_embed``: shape ``(context, width)`` -> ``textual.positional_embedding``.
- ``textual.attn_mask``: MERU's boolean causal-mask buffer -> dropped (open_clip builds its own).
- ``textual.resblocks.i.*``: MERU's pre-LN ``_TransformerBlock`` with ``ln_1``, ``attn`` (an
  ``nn.MultiheadAttention``: ``in_proj_weight``, ``in_proj_bias``, ``out_proj.{weight,bias}``),
  ``ln_2``, ``mlp.c_fc``, ``mlp.c_proj`` (exact GELU between) -> ``textual.transformer.resblocks.i.*``
  under the same names (open_clip's ``ResidualAttentionBlock`` has the same structure).
- ``textual.ln_final.*``: the LayerNorm before end-of-text (argmax) pooling -> the same names.

The CLIP baselines have no ``curv`` and no alphas (our CLIP's alphas are set to 0: it normalises
anyway); their file may also carry ``"root"`` besides ``"model"``, which is ignored.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from typing import Mapping

import torch

from .config import ModelConfig
from .factory import create_model, model_config
from .model import MAX_LOGIT_SCALE, ImageTextModel
from .weights import (CheckpointError, file_metadata, load_strictly, read_weights_file, state_dict_in,
                      strip_module_prefix)

# ViT width of MERU's released image encoders -> our config suffix.
_VIT_BY_WIDTH = {384: "vit-s", 768: "vit-b", 1024: "vit-l"}
_FILE_NAME = re.compile(r"(meru|clip)_vit_([sbl])(?![a-z0-9])")

# MERU's key -> ours, for keys renamed whole (the module docstring says what each one is).
_RENAMED = {
    "curv": "geometry.log_c",
    "visual_proj.weight": "visual_proj",
    "textual_proj.weight": "textual_proj",
    "textual.token_embed.weight": "textual.token_embedding.weight",
    "textual.posit_embed": "textual.positional_embedding",
}
# MERU's prefix -> ours, for whole sub-modules.
_RENAMED_PREFIXES = (
    ("visual.", "visual.trunk."),
    ("textual.resblocks.", "textual.transformer.resblocks."),
)
_DROPPED = ("textual.attn_mask",)  # MERU's causal-mask buffer: open_clip builds its own


def _reshaped(key: str, value: torch.Tensor) -> torch.Tensor:
    """A MERU value in our shape: scalars 0-dim, colour statistics ``(1, 3, 1, 1)``, the text
    position embedding ``(context, width)`` (a ``(1, context, width)`` copy is accepted too)."""
    if key in ("curv", "logit_scale", "visual_alpha", "textual_alpha"):
        return value.reshape(())
    if key in ("pixel_mean", "pixel_std"):
        return _pixel_statistic(value)
    if key == "textual.posit_embed":
        return value.reshape(value.shape[-2:])
    return value


def _our_key(key: str) -> str:
    """Our name for MERU's ``key``; a key that is not MERU's keeps its name (and is then reported
    as unexpected when loading)."""
    if key in _RENAMED:
        return _RENAMED[key]
    for theirs, ours in _RENAMED_PREFIXES:
        if key.startswith(theirs):
            return ours + key[len(theirs):]
    return key


def convert_meru_state_dict(state_dict: Mapping) -> dict:
    """Rename a MERU/CLIP state dict (MERU's own key names) to ours; see the module docstring.

    Keys that are not part of MERU's layout are kept under their own names, so that loading
    reports them as unexpected. ``textual.attn_mask`` is dropped."""
    return {_our_key(key): _reshaped(key, value) for key, value in state_dict.items() if key not in _DROPPED}


def _pixel_statistic(value: torch.Tensor) -> torch.Tensor:
    """MERU's ``(3, 1, 1)`` colour statistic in ``[0, 1]`` units -> ours, ``(1, 3, 1, 1)``.
    A statistic in ``[0, 255]`` units (some re-implementations) is rescaled to ``[0, 1]``."""
    value = value.detach().float().reshape(1, -1, 1, 1)
    if not value.is_meta and value.abs().max() > 2.0:
        value = value / 255.0
    return value


def infer_released_model_name(state_dict: Mapping, path=None) -> str:
    """``meru-vit-{s,b,l}`` / ``clip-vit-{s,b,l}`` for a released state dict (MERU key names):
    the geometry from the presence of ``curv``, the size from the ViT width (384/768/1024). When
    the weights do not say, the file name (``meru_vit_s.pth``...) decides."""
    geometry = "meru" if "curv" in state_dict else "clip"
    width = None
    width_keys = (("visual.cls_token", -1), ("visual.pos_embed", -1), ("visual.patch_embed.proj.weight", 0))
    for key, axis in width_keys:
        if key in state_dict:
            width = int(state_dict[key].shape[axis])
            break
    match = _FILE_NAME.search(Path(path).name.lower()) if path is not None else None
    if width in _VIT_BY_WIDTH:
        name = f"{geometry}-{_VIT_BY_WIDTH[width]}"
        if match and f"{match.group(1)}-vit-{match.group(2)}" != name:
            warnings.warn(
                f"checkpoint {path}: the file name suggests {match.group(1)}-vit-{match.group(2)} but "
                f"the weights are {name}; using {name}", stacklevel=3,
            )
        return name
    if match:
        return f"{match.group(1)}-vit-{match.group(2)}"
    raise CheckpointError(
        f"checkpoint {path}: cannot tell which released model this is (ViT width {width}, expected "
        f"one of {sorted(_VIT_BY_WIDTH)}); name its config with model_name= (--model in benchmarks.run), e.g. "
        "meru-vit-s|b|l, clip-vit-s|b|l"
    )


def load_released_checkpoint(path, model_name: str | ModelConfig | None = None, *, map_location="cpu",
                             weights_only: bool = True) -> tuple:
    """Load a released MERU or CLIP checkpoint (``meru_vit_{s,b,l}.pth``, ``clip_vit_{s,b,l}.pth``):
    ``(model, metadata)`` like every loader here (:func:`file_metadata`).

    ``model_name`` (a registered name or a :class:`ModelConfig` of the same layout) is inferred from
    the weights when omitted (see :func:`infer_released_model_name`). The loaded model reproduces
    MERU's ``encode_image(images, project=True)`` / ``encode_text(tokens, project=True)`` (as
    full Lorentz coordinates, time first; CLIP: unit vectors) for ``[0, 1]`` images and
    tokens padded to the context length. A released ViT's position embedding is frozen, as in MERU.

    Raises :class:`CheckpointError` (naming the file) for an unreadable file, a geometry or size
    mismatch, or missing/unexpected keys (listed)."""
    model = released_model_from_payload(read_weights_file(path, weights_only=weights_only, what="released checkpoint"),
                                        path, model_name, map_location=map_location)
    return model, file_metadata(path, model, "released")


def released_model_from_payload(payload, path, model_name: str | ModelConfig | None = None, *,
                                map_location="cpu") -> ImageTextModel:
    """The model of :func:`load_released_checkpoint` from the file's loaded contents."""
    raw = strip_module_prefix(state_dict_in(payload, "model", path, what="released checkpoint"))

    if model_name is None:
        model_name = infer_released_model_name(raw, path)
    config = model_name if isinstance(model_name, ModelConfig) else _released_config(model_name, path)
    is_meru = "curv" in raw  # MERU's files carry their learned curvature; CLIPBaseline's do not
    if config.learn_curvature and not is_meru:
        raise CheckpointError(
            f"checkpoint {path}: holds a CLIP (euclidean) model - no 'curv' key - but "
            f"{config.name!r} is a {config.geometry} model with a learned curvature; missing keys ['curv']"
        )
    if is_meru and not config.learn_curvature:
        raise CheckpointError(
            f"checkpoint {path}: holds a MERU (lorentz) model but {config.name!r} is a "
            f"{config.geometry} model without a curvature; unexpected keys ['curv']"
        )

    weights = convert_meru_state_dict(raw)
    model = create_model(config)
    optional = set()
    if not is_meru:
        # MERU's CLIPBaseline has no feature scales; CLIP normalises, so any scale works: use 1.
        optional |= {"visual_alpha", "textual_alpha"}
        with torch.no_grad():
            model.visual_alpha.zero_()
            model.textual_alpha.zero_()
    load_strictly(model, weights, path, optional=optional)
    pos_embed = getattr(getattr(model.visual, "trunk", None), "pos_embed", None)
    if config.vision.kind == "timm" and isinstance(pos_embed, torch.nn.Parameter):
        pos_embed.requires_grad_(False)  # MERU: a fixed 2-D sin-cos embedding
    _warn_out_of_range(model, raw, path)
    return model.to(map_location)


def _released_config(name: str, path) -> ModelConfig:
    try:
        return model_config(name)
    except ValueError as error:
        raise CheckpointError(f"checkpoint {path}: {error}") from None


def _warn_out_of_range(model: ImageTextModel, raw: Mapping, path) -> None:
    """Our model clamps these when read, as MERU does before every training step; MERU's inference
    code does not, so a stored value outside the range makes the two differ."""
    notes = []
    if "logit_scale" in raw and float(raw["logit_scale"]) > MAX_LOGIT_SCALE:
        notes.append(f"logit_scale {float(raw['logit_scale']):.4g} > log 100")
    for key in ("visual_alpha", "textual_alpha"):
        if key in raw and float(raw[key]) > 0:
            notes.append(f"{key} {float(raw[key]):.4g} > 0")
    if "curv" in raw and hasattr(model.geometry, "c_range"):
        low, high = model.geometry.c_range
        log_c = float(raw["curv"])
        if not math.log(low) <= log_c <= math.log(high):
            notes.append(f"curvature exp(curv) = {math.exp(log_c):.4g} outside [{low:.4g}, {high:.4g}]")
    if notes:
        message = f"checkpoint {path}: values will be clamped when used: " + "; ".join(notes)
        warnings.warn(message, stacklevel=3)
