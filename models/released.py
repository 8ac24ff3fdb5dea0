"""Every model file this toolkit reads, told apart by its contents: :func:`load_model_file`.

The format-specific loaders live in :mod:`models.meru_weights` (MERU's released ``.pth`` files),
:mod:`models.hycoclip_weights` (HyCoCLIP's, MERU's layout told apart by file name or colour
statistics) and :mod:`models.open_clip_weights` (open_clip state dicts); they are re-exported here."""

from __future__ import annotations

from .checkpoint import is_our_checkpoint, model_from_payload
from .config import ModelConfig
from .hycoclip_weights import hycoclip_metadata, hycoclip_model_from_payload, is_hycoclip_file, \
    load_hycoclip_checkpoint
from .meru_weights import convert_meru_state_dict, infer_released_model_name, load_released_checkpoint, \
    released_model_from_payload
from .open_clip_weights import convert_open_clip_state_dict, load_open_clip_state_dict
from .weights import CheckpointError, file_metadata, read_weights_file

__all__ = [
    "convert_meru_state_dict", "convert_open_clip_state_dict", "file_metadata", "infer_released_model_name",
    "load_hycoclip_checkpoint", "load_model_file", "load_open_clip_state_dict", "load_released_checkpoint",
]


def load_model_file(path, model_name: str | ModelConfig | None = None, *, expected_geometry: str | None = None,
                    map_location="cpu", weights_only: bool = True):
    """Any model file this toolkit reads: one of our checkpoints, a HyCoCLIP ``.pth``
    (:func:`is_hycoclip_file`: its name or colour statistics) or a released MERU/CLIP ``.pth``
    (told apart in that order, the file read once). Returns ``(model, metadata)``: a released file's
    metadata is :func:`file_metadata`'s, a HyCoCLIP file's adds ``"format": "hycoclip"``.
    ``model_name`` only matters for a released file whose weights do not say its size
    (:func:`infer_released_model_name`); ``expected_geometry`` rejects the other geometry."""
    payload = read_weights_file(path, weights_only=weights_only, what="checkpoint")
    if is_our_checkpoint(payload):
        return model_from_payload(payload, path, expected_geometry=expected_geometry, map_location=map_location)
    if is_hycoclip_file(path, payload):
        model = hycoclip_model_from_payload(payload, path, model_name, map_location=map_location)
        metadata = hycoclip_metadata(path, model, payload)
    else:
        model = released_model_from_payload(payload, path, model_name, map_location=map_location)
        metadata = file_metadata(path, model, "released")
    if expected_geometry is not None and model.config.geometry != expected_geometry:
        raise CheckpointError(
            f"checkpoint {path}: holds a {model.config.geometry} model ({model.config.name}), "
            f"expected a {expected_geometry} model"
        )
    return model, metadata
