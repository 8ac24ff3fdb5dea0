"""Reader for the CIFAR-100 "python version" folder as distributed (``cifar-100-python/``).

The folder holds three pickles, written by Python 2 with ``bytes`` keys:

- ``train`` and ``test``: ``b'data'`` (N x 3072 uint8: the red, green and blue 32x32 planes of each
  image, row-major), ``b'fine_labels'`` and ``b'coarse_labels'`` (lists of ints), plus file names;
- ``meta``: ``b'fine_label_names'`` (100 names) and ``b'coarse_label_names'`` (20 names).

Hierarchy: root ``object`` -> the 20 superclasses -> the 100 classes; the class -> superclass map is
read off the (fine, coarse) label pairs of the data. Captions: "a photo of a <class>."

The pickles are read with a restricted unpickler that only builds plain containers and numpy
arrays, so a tampered file cannot run code.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from .base import ConceptDataset
from .errors import DatasetError
from .hierarchy import ConceptHierarchy
from .registry import register_format
from .text import fill_template

CIFAR_FOLDER = "cifar-100-python"
CIFAR_ROOT = "object"
CIFAR_TEMPLATES = ("a photo of a {}.", "a blurry photo of a {}.", "a low resolution photo of a {}.",
                   "a photo of the small {}.", "a photo of the big {}.")
CAPTION_TEMPLATE = "a photo of a {}."

# The only globals a CIFAR pickle may reference (numpy array reconstruction, bytes).
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how Python 3 writes bytes objects at protocol 2
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR pickle")


def _read_pickle(path: Path) -> dict:
    """Load one CIFAR pickle; keys come back as ``str`` whether they were stored as bytes or str."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"missing CIFAR-100 file {str(path)!r}; expected train, test and meta pickles") from None
    try:
        data = _ArrayOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a CIFAR pickle"
        raise DatasetError(f"{path}: not a readable CIFAR-100 pickle ({exc})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a pickled dict, got {type(data).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in data.items()}


def _names(values, path: Path, key: str) -> list[str]:
    try:
        return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]
    except (TypeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: {key!r} must be a list of names ({exc})") from None


def _require(data: dict, keys: tuple[str, ...], path: Path) -> None:
    missing = [k for k in keys if k not in data]
    if missing:
        raise DatasetError(f"{path}: missing key(s) {', '.join(missing)}; expected {', '.join(keys)}")


def find_cifar100_folder(root: str | os.PathLike) -> Path | None:
    """``root`` or ``root/cifar-100-python`` if it holds the ``train``, ``test`` and ``meta`` pickles."""
    root = Path(root)
    for candidate in (root, root / CIFAR_FOLDER):
        if all((candidate / name).is_file() for name in ("train", "test", "meta")):
            return candidate
    return None


@register_format("cifar100", detect=find_cifar100_folder, title="CIFAR-100", priority=20,
                 layout=f"CIFAR-100 pickles ({CIFAR_FOLDER}/ with train, test, meta)")
def load_cifar100(root: str | os.PathLike, image_size: int = 32, max_per_class: int | None = None) -> ConceptDataset:
    """Read CIFAR-100 from its python-pickle folder (``root`` or ``root/cifar-100-python``).

    ``max_per_class`` keeps only the first that many images of each class in each split.
    """
    folder = find_cifar100_folder(root)
    if folder is None:
        raise DatasetError(
            f"{str(root)!r} is not a CIFAR-100 folder; expected the pickles train, test and meta in it "
            f"or in its {CIFAR_FOLDER}/ sub-folder"
        )
    if max_per_class is not None and (not isinstance(max_per_class, (int, np.integer)) or max_per_class < 1):
        raise DatasetError(f"max_per_class must be a positive integer or None, got {max_per_class!r}")

    meta = _read_pickle(folder / "meta")
    _require(meta, ("fine_label_names", "coarse_label_names"), folder / "meta")
    fine_names = _names(meta["fine_label_names"], folder / "meta", "fine_label_names")
    coarse_names = _names(meta["coarse_label_names"], folder / "meta", "coarse_label_names")
    clash = sorted(set(fine_names) & (set(coarse_names) | {CIFAR_ROOT}))
    if clash:
        raise DatasetError(f"{folder / 'meta'}: name(s) {', '.join(clash)} are used for a class and a superclass (or the root)")

    pixels_parts, fine_parts, splits = [], [], []
    fine_to_coarse: dict[int, int] = {}
    for split in ("train", "test"):
        path = folder / split
        data = _read_pickle(path)
        _require(data, ("data", "fine_labels", "coarse_labels"), path)
        raw = np.asarray(data["data"])
        fine = np.asarray(data["fine_labels"], dtype=np.int64)
        coarse = np.asarray(data["coarse_labels"], dtype=np.int64)
        if raw.dtype != np.uint8 or raw.ndim != 2 or raw.shape[1] != 3 * 32 * 32:
            raise DatasetError(f"{path}: 'data' must be a uint8 array of shape (N, 3072), got {raw.dtype} {raw.shape}")
        if not len(raw) == len(fine) == len(coarse):
            raise DatasetError(f"{path}: {len(raw)} images but {len(fine)} fine and {len(coarse)} coarse labels")
        if len(fine) and (fine.min() < 0 or fine.max() >= len(fine_names) or coarse.min() < 0 or coarse.max() >= len(coarse_names)):
            raise DatasetError(f"{path}: label out of range of the names in meta ({len(fine_names)} fine, {len(coarse_names)} coarse)")
        for f, c in set(zip(fine.tolist(), coarse.tolist())):
            if fine_to_coarse.setdefault(f, c) != c:
                raise DatasetError(
                    f"{path}: class {fine_names[f]!r} appears under two superclasses "
                    f"({coarse_names[fine_to_coarse[f]]!r} and {coarse_names[c]!r})"
                )
        keep = np.arange(len(fine))
        if max_per_class is not None:
            rank = np.zeros(len(fine), dtype=np.int64)
            for cls in np.unique(fine):
                members = np.flatnonzero(fine == cls)
                rank[members] = np.arange(len(members))
            keep = np.flatnonzero(rank < max_per_class)
        pixels_parts.append(raw[keep].reshape(-1, 3, 32, 32))
        fine_parts.append(fine[keep])
        splits += [split] * len(keep)

    parent: dict[str, str | None] = {CIFAR_ROOT: None}
    for f, c in fine_to_coarse.items():
        parent[coarse_names[c]] = CIFAR_ROOT
        parent[fine_names[f]] = coarse_names[c]
    labels = [fine_names[f] for f in np.concatenate(fine_parts).tolist()]
    caption_of = {name: fill_template(CAPTION_TEMPLATE, name.replace("_", " ")) for name in set(labels)}
    return ConceptDataset(
        name="cifar100",
        hierarchy=ConceptHierarchy(parent),
        captions=[caption_of[l] for l in labels],
        labels=labels,
        splits=splits,
        image_size=image_size,
        pixels=torch.from_numpy(np.ascontiguousarray(np.concatenate(pixels_parts))),
        templates=CIFAR_TEMPLATES,
    )
