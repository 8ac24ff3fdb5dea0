"""The registry of dataset sources: ``@register_builtin(name)`` and ``@register_format(name, ...)``.

Two kinds of source, each registered by the module that implements it (as objectives are with
``unlearning.registry.register_objective``):

- a *built-in* dataset is generated or bundled and loaded by name: its factory takes ``seed``,
  ``image_size`` and its own keyword options;
- a *folder format* is read from files the user has: its reader takes the folder, ``image_size``
  (and ``seed`` when it declares one) and its own keyword options; its detector says whether a
  folder is in the format.

:func:`load_dataset` is a lookup: a built-in name, else the first format (highest ``priority``
first) whose detector accepts the folder.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from .base import ConceptDataset
from .errors import DatasetError

Factory = Callable[..., ConceptDataset]


@dataclass(frozen=True)
class FolderFormat:
    """A registered folder format: how to recognise a folder in it and how to read one."""

    name: str
    read: Factory  # (folder, *, image_size, [seed,] **options) -> ConceptDataset
    detect: Callable[[Path], object]  # truthy when the folder is in this format
    layout: str  # what such a folder holds, for "expected ..." in error messages
    title: str  # the reader's name in error messages ("the COCO reader")
    priority: int


_BUILTINS: dict[str, Factory] = {}
_FORMATS: dict[str, FolderFormat] = {}

#: Built-in datasets, name -> factory (a read-only view of the registry).
DATASETS = MappingProxyType(_BUILTINS)


def register_builtin(name: str):
    """Function decorator: register a built-in dataset factory under ``name``.

    The factory is called as ``factory(seed=..., image_size=..., **options)``; ``seed`` must fix
    everything it generates, so that the same name and seed give the same data.
    """

    def decorator(factory: Factory) -> Factory:
        if name in _BUILTINS:
            raise ValueError(f"built-in dataset {name!r} is already registered")
        if not callable(factory):
            raise TypeError(f"built-in dataset {name!r} must be a function returning a ConceptDataset")
        _BUILTINS[name] = factory
        return factory

    return decorator


def register_format(name: str, *, detect: Callable[[Path], object], layout: str, title: str | None = None,
                    priority: int = 0):
    """Function decorator: register the reader of folder format ``name``.

    The reader is called as ``read(folder, image_size=..., **options)``, plus ``seed=...`` when it
    has a ``seed`` parameter. ``detect(folder)`` is truthy when ``folder`` (an existing directory)
    is in this format; formats are tried from the highest ``priority`` down (equal priorities in
    registration order), so a format that accepts almost any folder (ImageFolder) registers a
    negative priority and is tried last. ``layout`` says what such a folder holds ("pairs.jsonl +
    hierarchy.json") and ``title`` names the reader ("COCO"; default ``name``) in error messages.
    """

    def decorator(read: Factory) -> Factory:
        if name in _FORMATS:
            raise ValueError(f"dataset format {name!r} is already registered")
        if not callable(read) or not callable(detect):
            raise TypeError(f"dataset format {name!r} needs a callable reader and a callable detect")
        _FORMATS[name] = FolderFormat(name=name, read=read, detect=detect, layout=layout,
                                      title=title or name, priority=priority)
        return read

    return decorator


def list_datasets() -> list[str]:
    """Names of the built-in datasets, sorted."""
    return sorted(_BUILTINS)


def list_formats() -> list[str]:
    """Names of the folder formats, in the order :func:`detect_format` tries them."""
    return [fmt.name for fmt in _formats_in_detection_order()]


def _formats_in_detection_order() -> list[FolderFormat]:
    # sorted() is stable, so equal priorities keep their registration order.
    return sorted(_FORMATS.values(), key=lambda fmt: -fmt.priority)


def _expected() -> str:
    """What a dataset argument may be: every built-in name and every format's layout."""
    *layouts, last = [fmt.layout for fmt in _formats_in_detection_order()]
    folders = f"{', '.join(layouts)} or {last}" if layouts else last
    return f"expected a built-in name ({', '.join(list_datasets())}) or a folder holding {folders}"


def detect_format(path: str | os.PathLike) -> str:
    """The name of the first registered format (see :func:`list_formats`) that accepts folder ``path``."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"dataset {str(path)!r} is neither a built-in name nor an existing path; " + _expected())
    if not path.is_dir():
        raise DatasetError(f"dataset path {str(path)!r} is a file; " + _expected())
    for fmt in _formats_in_detection_order():
        if fmt.detect(path):
            return fmt.name
    raise DatasetError(f"cannot tell the format of dataset folder {str(path)!r}; " + _expected())


def _call(factory: Factory, title: str, *args, **options) -> ConceptDataset:
    """Call ``factory`` with the options it accepts; unknown options raise :class:`DatasetError`."""
    accepted = inspect.signature(factory).parameters
    extra = [k for k in options if k not in accepted]
    if extra:
        allowed = [k for k in list(accepted)[len(args):] if k not in ("seed", "image_size")]
        raise DatasetError(
            f"option(s) {', '.join(extra)} are not understood by the {title} reader; it accepts "
            f"{', '.join(allowed) or 'no further options'}"
        )
    return factory(*args, **options)


def load_dataset(name_or_path: str | os.PathLike, seed: int = 0, image_size: int = 32, **kwargs) -> ConceptDataset:
    """Load a built-in dataset by name, or read a dataset folder in any registered format.

    ``seed`` fixes generated data and derived splits (built-in data, and readers that take a
    ``seed`` such as ImageFolder's for flat trees); further keyword options go to the factory or
    reader (``per_leaf_train`` for shapes, ``images_dir`` and ``split_names`` for COCO,
    ``max_per_class`` for CIFAR-100, ...).
    """
    if isinstance(name_or_path, str) and name_or_path in _BUILTINS:
        return _call(_BUILTINS[name_or_path], name_or_path, seed=seed, image_size=image_size, **kwargs)
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise DatasetError(f"load_dataset needs a dataset name or path, got {type(name_or_path).__name__}")
    path = Path(name_or_path)
    fmt = _FORMATS[detect_format(path)]
    if "seed" in inspect.signature(fmt.read).parameters:
        kwargs["seed"] = seed
    return _call(fmt.read, fmt.title, path, image_size=image_size, **kwargs)
