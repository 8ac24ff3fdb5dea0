"""Loaders for checkpoints that researchers actually have: MERU's released ``.pth`` files and
open_clip state dicts. Both return an :class:`~models.model.ImageTextModel` of our own layout.

Released MERU/CLIP checkpoints (``meru_vit_{s,b,l}.pth``, ``clip_vit_{s,b,l}.pth``; SPEC section 2)
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

from .checkpoint import CheckpointError, is_our_checkpoint, model_from_payload
from .config import ModelConfig
from .factory import create_model, model_config, open_clip_model_config
from .model import MAX_LOGIT_SCALE, ImageTextModel

__all__ = [
    "convert_meru_state_dict", "convert_open_clip_state_dict", "infer_released_model_name",
    "load_open_clip_state_dict", "load_released_checkpoint",
]

# ViT width of MERU's released image encoders -> our config suffix.
_VIT_BY_WIDTH = {384: "vit-s", 768: "vit-b", 1024: "vit-l"}
_FILE_NAME = re.compile(r"(meru|clip)_vit_([sbl])(?![a-z0-9])")
_TEXT_BLOCK_PARTS = (
    "ln_1.weight", "ln_1.bias", "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight",
    "attn.out_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
    "mlp.c_proj.weight", "mlp.c_proj.bias",
)
_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
_OPEN_CLIP_TEXT_TOP = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.",
                       "text_projection", "cls_emb")


# ----------------------------------------------------------------------------------- reading
def _read(path, *, weights_only: bool, what: str):
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as error:  # truncated zip, bad pickle, disallowed global under weights_only
        hint = ""
        if weights_only and "weights_only" in str(error):
            hint = " (if you trust this file, pass weights_only=False)"
        raise CheckpointError(
            f"{what} {path}: cannot be read ({type(error).__name__}: {str(error)[:300]}){hint}"
        ) from None


def _is_state_dict(obj) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def _state_dict_in(payload, key: str, path, *, what: str) -> Mapping:
    """The state dict a loaded file holds: under ``payload[key]``, or the payload itself."""
    if isinstance(payload, Mapping) and isinstance(payload.get(key), Mapping):
        return payload[key]
    if _is_state_dict(payload):
        return payload
    found = sorted(map(str, payload))[:10] if isinstance(payload, Mapping) else type(payload).__name__
    raise CheckpointError(f"{what} {path}: expected a state dict (or a dict with it under {key!r}), found {found}")


def _strip_module_prefix(state_dict: Mapping) -> dict:
    """``module.`` prefixes left by DataParallel / DistributedDataParallel wrappers."""
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module."):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def _short(keys, limit: int = 12) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return f"[{shown}{f', ... ({len(keys) - limit} more)' if len(keys) > limit else ''}]"


def _load_into(model: ImageTextModel, weights: dict, path, *, optional=()) -> None:
    """Load ``weights`` (our key names) strictly: every key of the model must be provided (except
    ``optional`` ones, which keep the model's own values), no extra keys, matching shapes;
    otherwise a :class:`CheckpointError` naming the file and listing the offending keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in weights and k not in optional]
    unexpected = [k for k in weights if k not in own]
    mismatched = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in weights.items() if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"missing keys {_short(missing)}")
        if unexpected:
            problems.append(f"unexpected keys {_short(unexpected)}")
        if mismatched:
            problems.append(f"shape mismatches {_short(mismatched, 6)}")
        raise CheckpointError(
            f"checkpoint {path}: weights do not fit model {model.config.name!r} "
            f"(keys in our naming): " + "; ".join(problems)
        )
    full = {key: own[key] for key in optional if key in own and key not in weights}
    full.update(weights)
    model.load_state_dict(full, strict=True)


# ------------------------------------------------------------------------------ released MERU
def convert_meru_state_dict(state_dict: Mapping) -> dict:
    """Rename a MERU/CLIP state dict (MERU's own key names) to ours; see the module docstring.

    Keys that are not part of MERU's layout are kept under their own names, so that loading
    reports them as unexpected. ``textual.attn_mask`` is dropped."""
    out = {}
    for key, value in state_dict.items():
        if key == "curv":
            out["geometry.log_c"] = value.reshape(())
        elif key in ("logit_scale", "visual_alpha", "textual_alpha"):
            out[key] = value.reshape(())
        elif key in ("pixel_mean", "pixel_std"):
            out[key] = _pixel_statistic(value)
        elif key == "visual_proj.weight":
            out["visual_proj"] = value
        elif key == "textual_proj.weight":
            out["textual_proj"] = value
        elif key.startswith("visual."):
            out["visual.trunk." + key[len("visual."):]] = value
        elif key == "textual.token_embed.weight":
            out["textual.token_embedding.weight"] = value
        elif key == "textual.posit_embed":
            # (context, width) in MERU; a (1, context, width) copy is accepted too
            out["textual.positional_embedding"] = value.reshape(value.shape[-2:])
        elif key == "textual.attn_mask":
            continue
        elif key.startswith("textual.resblocks."):
            out["textual.transformer.resblocks." + key[len("textual.resblocks."):]] = value
        elif key.startswith("textual.ln_final."):
            out[key] = value
        else:
            out[key] = value  # not MERU's: reported as unexpected
    return out


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
    model = released_model_from_payload(_read(path, weights_only=weights_only, what="released checkpoint"),
                                        path, model_name, map_location=map_location)
    return model, file_metadata(path, model, "released")


def file_metadata(path, model: ImageTextModel, source: str) -> dict:
    """What a loader knows about a file that is not one of our checkpoints: where it came from
    (``source``: ``"released"`` or ``"open_clip"``), the file and the config it was read into. Such
    files record no dataset, classes or pretraining (our checkpoints' metadata does)."""
    return {"source": source, "file": str(path), "model": model.config.name}


def released_model_from_payload(payload, path, model_name: str | ModelConfig | None = None, *,
                                map_location="cpu") -> ImageTextModel:
    """The model of :func:`load_released_checkpoint` from the file's loaded contents."""
    raw = _strip_module_prefix(_state_dict_in(payload, "model", path, what="released checkpoint"))

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
    _load_into(model, weights, path, optional=optional)
    pos_embed = getattr(getattr(model.visual, "trunk", None), "pos_embed", None)
    if config.vision.kind == "timm" and isinstance(pos_embed, torch.nn.Parameter):
        pos_embed.requires_grad_(False)  # MERU: a fixed 2-D sin-cos embedding
    _warn_out_of_range(model, raw, path)
    return model.to(map_location)


def load_model_file(path, model_name: str | ModelConfig | None = None, *, expected_geometry: str | None = None,
                    map_location="cpu", weights_only: bool = True):
    """Any model file this toolkit reads: one of our checkpoints, or a released MERU/CLIP ``.pth``
    (told apart by their contents, read once). Returns ``(model, metadata)``: a released file's
    metadata is :func:`file_metadata`'s. ``model_name`` only matters for a released file whose weights do not say its
    size (:func:`infer_released_model_name`); ``expected_geometry`` rejects the other geometry."""
    payload = _read(path, weights_only=weights_only, what="checkpoint")
    if is_our_checkpoint(payload):
        return model_from_payload(payload, path, expected_geometry=expected_geometry, map_location=map_location)
    model = released_model_from_payload(payload, path, model_name, map_location=map_location)
    if expected_geometry is not None and model.config.geometry != expected_geometry:
        raise CheckpointError(
            f"checkpoint {path}: holds a {model.config.geometry} model ({model.config.name}), "
            f"expected a {expected_geometry} model"
        )
    return model, file_metadata(path, model, "released")


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


# ------------------------------------------------------------------------------------ open_clip
def convert_open_clip_state_dict(state_dict: Mapping) -> dict:
    """Rename an open_clip ``CLIP`` (or ``CustomTextCLIP``) state dict to ours: ``visual.*`` ->
    ``visual.tower.*``; the text parts (top-level ``token_embedding``, ``positional_embedding``,
    ``transformer.*``, ``ln_final``, ``text_projection``, or ``text.*``) -> ``textual.*``;
    ``logit_scale`` kept (as a scalar); ``attn_mask`` buffers and ``logit_bias`` dropped."""
    out = {}
    for key, value in _strip_module_prefix(state_dict).items():
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

    payload = _read(path, weights_only=weights_only, what="open_clip state dict")
    raw = _state_dict_in(payload, "state_dict", path, what="open_clip state dict")

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
    _load_into(model, weights, path, optional=set())
    return model.to(map_location), file_metadata(path, model, "open_clip")
