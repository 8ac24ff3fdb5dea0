"""HyCoCLIP's checkpoints: how they differ from MERU's, how they are recognised, and the loader.

HyCoCLIP (``PalAvik/hycoclip``, "Compositional Entailment Learning for Hyperbolic Vision-Language
Models") is built on MERU's code. Its released files (``hycoclip_vit_{s,b}.pth`` on Hugging Face
``avik-pal/hycoclip``; ``configs/train_hycoclip_vit_{s,b,l}.py`` also define a ViT-L) are what its
``CheckpointManager`` (``hycoclip/utils/checkpointing.py``) writes: a dict whose ``"model"`` entry
is the state dict of ``hycoclip.models.HyCoCLIP``; a training checkpoint also carries
``"optimizer"``, ``"scheduler"``, ``"scaler"`` (and ``"iteration"``), which are ignored here.

The state dict is **key for key and shape for shape MERU's** (see :mod:`models.meru_weights` for
every key and where it goes in our model; that mapping is reused as is):
``HyCoCLIP(MERU)`` adds no parameter or buffer. ``logit_scale``; ``curv`` = log c (``curv_init`` 1,
clamped to ``[log 0.1, log 10]`` in training); ``visual_alpha``, ``textual_alpha`` (log feature
scales); ``pixel_mean``, ``pixel_std`` ``(3, 1, 1)``; ``visual.*`` = the same timm ViT
(``build_timm_vit``: ViT-S is ``vit_small_mocov3_patch16_224`` with 12 heads, ViT-B
``vit_base_patch16_224``, ViT-L ``vit_large_patch16_224``; CLS pooling, LayerNorm eps 1e-5, fixed
2-D sin-cos position embedding); ``visual_proj.weight``, ``textual_proj.weight`` (embed 512);
``textual.*`` = MERU's ``TransformerTextEncoder`` (``L12_W512``, vocabulary 49408, context 77, with
the boolean ``attn_mask`` buffer). So at inference a HyCoCLIP model *is* a MERU-architecture model:
it loads into ``meru-vit-{s,b,l}``, inferred from the ViT width (384/768/1024) as for MERU.

What differs from MERU:

- Training only: HyCoCLIP's forward also encodes box crops and box captions; its loss is the mean
  of four contrastive terms (image/text and box image/box text against the batch's full texts and
  images) plus ``entail_weight`` (0.2) times four entailment-cone terms (text->image and box
  text->box image with aperture factor 0.7; box image->image and box text->text with 1.2). These
  factors, ``entail_weight`` and ``use_boxes`` are Python attributes or constants, not saved:
  nothing of the objective is in the file, and ``encode_image`` / ``encode_text`` are MERU's.
- The colour statistics: ``HyCoCLIP.__init__`` passes its arguments positionally to
  ``MERU.__init__``, whose signature has ``use_boxes`` before ``pixel_mean``; so a HyCoCLIP model's
  ``pixel_mean`` buffer holds ImageNet's *std* ``(0.229, 0.224, 0.225)``, equal to its
  ``pixel_std``, where MERU's holds ImageNet's mean. The buffers are saved, so loading them as
  stored (never substituting ImageNet's mean) reproduces HyCoCLIP's own outputs.

Recognising a HyCoCLIP file (:func:`is_hycoclip_file`): the weights' key set cannot tell it from
MERU's, so ``models.load_model_file`` decides by (1) the file name containing ``hycoclip`` (every
released name does), else (2) the colour-statistics fingerprint above (``pixel_mean`` equal to
``pixel_std`` equal to ``(0.229, 0.224, 0.225)``), which only HyCoCLIP's constructor produces and
which marks a renamed file such as a training run's ``checkpoint_final.pth``. A HyCoCLIP file that
is recognised by neither loads as a MERU file to the same weights and outputs; only its metadata
then lacks ``"format": "hycoclip"``.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Mapping

import torch

from .config import ModelConfig
from .factory import model_config
from .meru_weights import infer_released_model_name, released_model_from_payload
from .model import ImageTextModel
from .weights import CheckpointError, file_metadata, read_weights_file, state_dict_in, strip_module_prefix

WHAT = "HyCoCLIP checkpoint"
_NAME_MARK = "hycoclip"
_FILE_NAME = re.compile(r"hycoclip_vit_([sbl])(?![a-z0-9])")
# HyCoCLIP's constructor leaves ImageNet's std in both colour buffers (see the module docstring).
HYCOCLIP_PIXEL_STATISTIC = (0.229, 0.224, 0.225)
# The MERU keys a HyCoCLIP file must hold besides the towers: it is always a learned-curvature model.
_HYPERBOLIC_KEYS = ("curv", "visual_alpha", "textual_alpha")


def is_hycoclip_file(path, payload) -> bool:
    """Whether a loaded file (``payload``, read from ``path``) is a HyCoCLIP checkpoint: its name
    contains ``hycoclip``, or its ``"model"`` state dict carries HyCoCLIP's colour-statistics
    fingerprint (:func:`has_hycoclip_pixel_statistics`)."""
    if _NAME_MARK in Path(path).name.lower():
        return True
    state = payload.get("model") if isinstance(payload, Mapping) else None
    return isinstance(state, Mapping) and has_hycoclip_pixel_statistics(strip_module_prefix(state))


def has_hycoclip_pixel_statistics(state_dict: Mapping) -> bool:
    """``pixel_mean`` and ``pixel_std`` (any shape with 3 entries) both equal ``(0.229, 0.224,
    0.225)``: what HyCoCLIP's constructor stores, and MERU's or CLIP's never does."""
    expected = torch.tensor(HYCOCLIP_PIXEL_STATISTIC)
    for key in ("pixel_mean", "pixel_std"):
        value = state_dict.get(key)
        if not isinstance(value, torch.Tensor) or value.is_meta or value.numel() != 3:
            return False
        if not torch.allclose(value.detach().float().flatten().cpu(), expected, rtol=0.0, atol=1e-6):
            return False
    return True


def infer_hycoclip_model_name(state_dict: Mapping, path=None) -> str:
    """``meru-vit-{s,b,l}`` for a HyCoCLIP state dict (MERU key names): from the ViT width
    (384/768/1024, as for MERU), else from a ``hycoclip_vit_{s,b,l}`` file name; a file name that
    disagrees with the weights is warned about and the weights win."""
    match = _FILE_NAME.search(Path(path).name.lower()) if path is not None else None
    named = f"meru-vit-{match.group(1)}" if match else None
    try:
        # Without the path: MERU's file-name rule would read "hycoclip_vit_s" as "clip_vit_s".
        from_weights = infer_released_model_name(state_dict)
    except CheckpointError:
        if named:
            return named
        raise CheckpointError(
            f"{WHAT} {path}: cannot tell which model this is: ViT width {_vit_width(state_dict)} is none of "
            "384/768/1024 (ViT-S/B/L) and the file name has no hycoclip_vit_s|b|l; name its config with "
            "model_name= (--model in benchmarks.run), e.g. meru-vit-s"
        ) from None
    if named and named != from_weights:
        warnings.warn(f"{WHAT} {path}: the file name suggests {named} but the weights are {from_weights}; "
                      f"using {from_weights}", stacklevel=3)
    return from_weights


def _vit_width(state_dict: Mapping):
    """The ViT width the file's CLS token says, or ``None`` without one."""
    cls_token = state_dict.get("visual.cls_token")
    return int(cls_token.shape[-1]) if isinstance(cls_token, torch.Tensor) else None


def load_hycoclip_checkpoint(path, model_name: str | ModelConfig | None = None, *, map_location="cpu",
                             weights_only: bool = True) -> tuple:
    """Load a HyCoCLIP checkpoint (``hycoclip_vit_{s,b}.pth``, or a training run's
    ``checkpoint_*.pth``): ``(model, metadata)``, the model a :class:`models.MERU`.

    ``model_name`` (a registered name or a :class:`ModelConfig`, of the lorentz geometry) is
    inferred when omitted (:func:`infer_hycoclip_model_name`). The loaded model reproduces
    HyCoCLIP's ``encode_image(images, project=True)`` / ``encode_text(tokens, project=True)`` (as
    full Lorentz coordinates ``(n, 513)``, time first) for ``[0, 1]`` images ``(n, 3, 224, 224)``
    and tokens ``(n, 77)`` padded on the right. Metadata: :func:`hycoclip_metadata`.

    Raises :class:`CheckpointError` naming the file: unreadable, no ``"model"`` state dict, no
    ``curv``/alphas (not a hyperbolic model), a non-lorentz config, missing/unexpected/mis-shaped keys."""
    payload = read_weights_file(path, weights_only=weights_only, what=WHAT)
    model = hycoclip_model_from_payload(payload, path, model_name, map_location=map_location)
    return model, hycoclip_metadata(path, model, payload)


def hycoclip_model_from_payload(payload, path, model_name: str | ModelConfig | None = None, *,
                                map_location="cpu") -> ImageTextModel:
    """The model of :func:`load_hycoclip_checkpoint` from the file's loaded contents: HyCoCLIP's
    checks here, then MERU's loader (same keys, same mapping)."""
    raw = strip_module_prefix(state_dict_in(payload, "model", path, what=WHAT))
    absent = [key for key in _HYPERBOLIC_KEYS if key not in raw]
    if absent:
        raise CheckpointError(
            f"{WHAT} {path}: missing keys {absent}; expected MERU's layout with a learned curvature "
            f"('curv' = log c) and feature scales, as every HyCoCLIP model has (a CLIP baseline file "
            "loads with models.load_released_checkpoint)"
        )
    if model_name is None:
        model_name = infer_hycoclip_model_name(raw, path)
    config = model_name if isinstance(model_name, ModelConfig) else _named_config(model_name, path)
    if config.geometry != "lorentz":
        raise CheckpointError(
            f"{WHAT} {path}: HyCoCLIP embeds on the Lorentz hyperboloid, but {config.name!r} is a "
            f"{config.geometry} model; expected a lorentz config such as meru-vit-s|b|l"
        )
    return released_model_from_payload({"model": raw}, path, config, map_location=map_location)


def hycoclip_metadata(path, model: ImageTextModel, payload=None) -> dict:
    """:func:`file_metadata`'s record of a released file plus ``"format": "hycoclip"``, and the
    training ``"iteration"`` when the file records one."""
    metadata = {**file_metadata(path, model, "released"), "format": "hycoclip"}
    iteration = payload.get("iteration") if isinstance(payload, Mapping) else None
    if isinstance(iteration, int):
        metadata["iteration"] = iteration
    return metadata


def _named_config(name: str, path) -> ModelConfig:
    try:
        return model_config(name)
    except ValueError as error:
        raise CheckpointError(f"{WHAT} {path}: {error}") from None
