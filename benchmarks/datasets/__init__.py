"""Image-caption datasets annotated with concept hierarchies, for concept-unlearning benchmarks.

Entry point: :func:`load_dataset` takes a built-in name (see :func:`list_datasets`) or a path and
returns a :class:`ConceptDataset`. Nothing is downloaded: built-in data is generated (``shapes``) or
ships with scikit-learn (``digits``); everything else is read from files the user already has, in
one of these formats (auto-detected from a path):

- the project's folder format: ``pairs.jsonl`` + ``hierarchy.json`` (see ``README.md`` here);
- CIFAR-100 python pickles (``cifar-100-python/`` with ``train``, ``test``, ``meta``);
- COCO captions + instances annotations (``captions_*.json`` + ``instances_*.json``);
- an ImageFolder tree (``root/<class>/*.jpg`` or ``root/{train,test}/<class>/*.jpg``).

Before training, :func:`validate_images` decodes every image file once so that a corrupt one is
reported up front.

This package imports only numpy, torch, PIL, scikit-learn and tqdm, never the model or unlearning code.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path

from .base import ConceptDataset, ConceptHierarchy, DatasetError, fill_template, load_image_file, with_article
from .cifar import find_cifar100_folder, load_cifar100
from .coco import find_coco_annotations, load_coco
from .digits import digits_hierarchy, make_digits
from .folder import PAIRS_FILE, load_folder
from .imagefolder import load_imagefolder, looks_like_imagefolder
from .shapes import make_shapes, shapes_hierarchy
from .validate import validate_images

__all__ = [
    "ConceptDataset", "ConceptHierarchy", "DatasetError", "DATASETS", "list_datasets", "load_dataset",
    "make_shapes", "make_digits", "load_folder", "load_coco", "load_imagefolder", "load_cifar100",
    "shapes_hierarchy", "digits_hierarchy", "fill_template", "with_article", "load_image_file",
    "detect_format", "validate_images",
]

#: Built-in datasets: name -> factory ``(seed=..., image_size=..., **options) -> ConceptDataset``.
DATASETS: dict[str, Callable[..., ConceptDataset]] = {
    "shapes": make_shapes,
    "digits": make_digits,
}

_EXPECTED = (
    "expected a built-in name ({names}) or a folder holding pairs.jsonl + hierarchy.json, "
    "CIFAR-100 pickles (cifar-100-python/ with train, test, meta), COCO annotations "
    "(captions_*.json + instances_*.json) or class sub-folders of images"
)


def list_datasets() -> list[str]:
    """Names of the built-in datasets, sorted."""
    return sorted(DATASETS)


def detect_format(path: str | os.PathLike) -> str:
    """The format of the dataset at ``path``: ``"folder"``, ``"cifar100"``, ``"coco"`` or ``"imagefolder"``."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"dataset {str(path)!r} is neither a built-in name nor an existing path; "
                           + _EXPECTED.format(names=", ".join(list_datasets())))
    if not path.is_dir():
        raise DatasetError(f"dataset path {str(path)!r} is a file; " + _EXPECTED.format(names=", ".join(list_datasets())))
    if (path / PAIRS_FILE).is_file():
        return "folder"
    if find_cifar100_folder(path) is not None:
        return "cifar100"
    if find_coco_annotations(path) is not None:
        return "coco"
    if looks_like_imagefolder(path):
        return "imagefolder"
    raise DatasetError(f"cannot tell the format of dataset folder {str(path)!r}; "
                       + _EXPECTED.format(names=", ".join(list_datasets())))


def _call(loader: Callable[..., ConceptDataset], what: str, *args, **options) -> ConceptDataset:
    """Call ``loader`` with the options it accepts; unknown options raise :class:`DatasetError`."""
    accepted = inspect.signature(loader).parameters
    extra = [k for k in options if k not in accepted]
    if extra:
        allowed = [k for k in list(accepted)[len(args):] if k not in ("seed", "image_size")]
        raise DatasetError(
            f"option(s) {', '.join(extra)} are not understood by the {what} reader; it accepts "
            f"{', '.join(allowed) or 'no further options'}"
        )
    return loader(*args, **options)


def load_dataset(name_or_path: str | os.PathLike, seed: int = 0, image_size: int = 32, **kwargs) -> ConceptDataset:
    """Load a built-in dataset by name, or read a dataset folder in any supported format.

    ``seed`` fixes generated data and derived splits (built-in data and flat ImageFolder trees);
    further keyword options go to the reader (``per_leaf_train`` for shapes, ``images_dir`` and
    ``split_names`` for COCO, ``max_per_class`` for CIFAR-100, ...).
    """
    if isinstance(name_or_path, str) and name_or_path in DATASETS:
        return _call(DATASETS[name_or_path], name_or_path, seed=seed, image_size=image_size, **kwargs)
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise DatasetError(f"load_dataset needs a dataset name or path, got {type(name_or_path).__name__}")
    path = Path(name_or_path)
    fmt = detect_format(path)
    if fmt == "folder":
        return _call(load_folder, "folder-format", path, image_size=image_size, **kwargs)
    if fmt == "cifar100":
        return _call(load_cifar100, "CIFAR-100", path, image_size=image_size, **kwargs)
    if fmt == "coco":
        images_dir = kwargs.pop("images_dir", path / "images" if (path / "images").is_dir() else path)
        return _call(load_coco, "COCO", find_coco_annotations(path), images_dir, image_size=image_size, **kwargs)
    return _call(load_imagefolder, "ImageFolder", path, image_size=image_size, seed=seed, **kwargs)
