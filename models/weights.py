"""Reading weight files and loading them strictly: shared by our checkpoints, released MERU/CLIP
files and open_clip state dicts (one reader, one strict loader, one metadata form)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and the problem."""


def read_weights_file(path, *, weights_only: bool, what: str):
    """``torch.load`` of ``path`` on the CPU; a missing or unreadable file is a
    :class:`CheckpointError` naming ``what`` and the file (with a hint when only ``weights_only``
    refused it)."""
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


def is_state_dict(obj) -> bool:
    """A non-empty mapping of names to tensors."""
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def state_dict_in(payload, key: str, path, *, what: str) -> Mapping:
    """The state dict a loaded file holds: under ``payload[key]``, or the payload itself."""
    if isinstance(payload, Mapping) and isinstance(payload.get(key), Mapping):
        return payload[key]
    if is_state_dict(payload):
        return payload
    found = sorted(map(str, payload))[:10] if isinstance(payload, Mapping) else type(payload).__name__
    raise CheckpointError(f"{what} {path}: expected a state dict (or a dict with it under {key!r}), found {found}")


def strip_module_prefix(state_dict: Mapping) -> dict:
    """``module.`` prefixes left by DataParallel / DistributedDataParallel wrappers."""
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module."):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def short_list(keys, limit: int = 12) -> str:
    """``[a, b, ... (n more)]``: a key list short enough for one error line."""
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return f"[{shown}{f', ... ({len(keys) - limit} more)' if len(keys) > limit else ''}]"


def load_strictly(model, weights: dict, path, *, optional=()) -> None:
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
            problems.append(f"missing keys {short_list(missing)}")
        if unexpected:
            problems.append(f"unexpected keys {short_list(unexpected)}")
        if mismatched:
            problems.append(f"shape mismatches {short_list(mismatched, 6)}")
        raise CheckpointError(
            f"checkpoint {path}: weights do not fit model {model.config.name!r} "
            f"(keys in our naming): " + "; ".join(problems)
        )
    full = {key: own[key] for key in optional if key in own and key not in weights}
    full.update(weights)
    model.load_state_dict(full, strict=True)


def file_metadata(path, model, source: str) -> dict:
    """What a loader knows about a file that is not one of our checkpoints: where it came from
    (``source``: ``"released"`` or ``"open_clip"``), the file and the config it was read into. Such
    files record no dataset, classes or pretraining (our checkpoints' metadata does)."""
    return {"source": source, "file": str(path), "model": model.config.name}
