"""Our checkpoint format: weights + model config + free-form metadata (e.g. the concept vocabulary).

Files are written atomically (temporary file in the same folder, fsync, ``os.replace``) so an
interrupted save never leaves a truncated checkpoint behind."""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

import torch

from .weights import CheckpointError, read_weights_file

FORMAT = "hyperbolic-unlearning-checkpoint/1"


_UMASK_GUARD = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where the system tells it (Linux's
    ``/proc/self/status``); elsewhere set and restored at once, under a lock against our own threads."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    with _UMASK_GUARD:
        umask = os.umask(0o077)
        os.umask(umask)
    return umask


def atomic_write(path, write, *, binary: bool = True) -> None:
    """Write ``path`` atomically: ``write(file)`` fills a temporary file in the same folder, which is
    fsynced and then renamed over ``path``; on any failure the old file is left untouched. The file
    gets the permissions of any newly created file (``0o666`` less the umask), not ``mkstemp``'s 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb" if binary else "w") as file:
            os.fchmod(file.fileno(), 0o666 & ~current_umask())
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj, path) -> None:
    """``torch.save`` to ``path`` atomically."""
    atomic_write(path, lambda file: torch.save(obj, file))


def save_checkpoint(path, model, metadata: dict | None = None, **extra) -> None:
    """Save ``model`` (weights and config) and ``metadata`` (JSON-like) to ``path`` atomically.

    ``extra`` entries (e.g. optimiser state, step) are stored alongside for resumable training."""
    payload = {
        "format": FORMAT,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": dict(metadata or {}),
        **extra,
    }
    atomic_torch_save(payload, path)


def read_checkpoint(path) -> dict:
    """Read the raw payload of one of our checkpoints, with clear errors."""
    payload = read_weights_file(path, weights_only=False, what="checkpoint")  # ours hold metadata and settings
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            f"checkpoint {path}: expected format {FORMAT!r}, found {found!r} "
            "(released MERU/CLIP .pth files load with models.load_released_checkpoint)"
        )
    return payload


def load_checkpoint(path, *, expected_geometry: str | None = None, map_location="cpu"):
    """Load one of our checkpoints: returns ``(model, metadata)``.

    ``expected_geometry`` (``"lorentz"``/``"euclidean"``) guards against loading, say, a CLIP file
    where a MERU model is needed."""
    return model_from_payload(read_checkpoint(path), path, expected_geometry=expected_geometry,
                              map_location=map_location)


def is_our_checkpoint(payload) -> bool:
    """Whether a loaded file's contents are in our format (rather than, say, a released state dict)."""
    return isinstance(payload, dict) and payload.get("format") == FORMAT


def model_from_payload(payload: dict, path, *, expected_geometry: str | None = None, map_location="cpu"):
    """``(model, metadata)`` from the contents of one of our checkpoint files (``path`` names it in
    errors)."""
    from .config import ModelConfig
    from .factory import create_model

    config = ModelConfig.from_dict(payload["config"])
    if expected_geometry is not None and config.geometry != expected_geometry:
        raise CheckpointError(
            f"checkpoint {path}: holds a {config.geometry} model ({config.name}), "
            f"expected a {expected_geometry} model"
        )
    model = create_model(config)
    # Files written before a constant buffer became non-persistent still hold it: not an error.
    constants = {name for name, _ in model.named_buffers()} - set(model.state_dict())
    weights = {key: value for key, value in payload["state_dict"].items() if key not in constants}
    result = model.load_state_dict(weights, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"checkpoint {path}: weights do not match config {config.name!r}: "
            f"missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
    return model.to(map_location), payload["metadata"]
