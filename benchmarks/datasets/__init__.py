"""Image-caption datasets annotated with concept hierarchies, for concept-unlearning benchmarks.

Entry point: :func:`load_dataset` takes a built-in name (see :func:`list_datasets`) or a path and
returns a :class:`ConceptDataset`. Nothing is downloaded: built-in data is generated (``shapes``;
``glyphs``, drawn with Pillow's bundled font) or ships with scikit-learn (``digits``); everything else
is read from files the user already has, in one of these formats (auto-detected from a path, tried
in the order of :func:`list_formats`):

- the project's folder format: ``pairs.jsonl`` + ``hierarchy.json`` (see ``README.md`` here);
- CIFAR-100 python pickles (``cifar-100-python/`` with ``train``, ``test``, ``meta``);
- COCO captions + instances annotations (``captions_*.json`` + ``instances_*.json``);
- an ImageFolder tree (``root/<class>/*.jpg`` or ``root/{train,test}/<class>/*.jpg``);
- WebDataset tar shards (``*.tar`` of ``<key>.jpg`` + ``<key>.txt`` + ``<key>.json``) + ``hierarchy.json``,
  read by index without extracting (``python -m benchmarks.datasets.to_webdataset`` writes them).

Each source module registers itself (``registry.register_builtin`` / ``registry.register_format``);
importing it below is what makes it known.

Before training, :func:`validate_images` decodes every image file once so that a corrupt one is
reported up front.

This package imports only numpy, torch, PIL, scikit-learn, tqdm and (when shards are read or written)
webdataset, never the model or unlearning code.
"""

from __future__ import annotations

from .base import ConceptDataset, ImageSource
from .errors import DatasetError
from .hierarchy import ConceptHierarchy
from .images import load_image_file
from .registry import (DATASETS, detect_format, list_datasets, list_formats, load_dataset, register_builtin,
                       register_format)
from .text import fill_template, with_article
from .validate import validate_images

# The source modules register themselves on import; the order of the imports does not matter
# (detection follows each format's priority).
from .shapes import make_shapes, shapes_hierarchy
from .digits import digits_hierarchy, make_digits
from .glyphs import glyphs_hierarchy, make_glyphs
from .taxonomy import make_taxonomy, taxonomy_hierarchy
from .folder import load_folder
from .cifar import load_cifar100
from .coco import load_coco, load_coco_folder
from .imagefolder import load_imagefolder
from .webdataset import TarMemberImages, load_webdataset

__all__ = [
    "ConceptDataset", "ConceptHierarchy", "DatasetError", "DATASETS", "list_datasets", "list_formats",
    "load_dataset", "register_builtin", "register_format", "detect_format", "validate_images",
    "make_shapes", "make_digits", "make_glyphs", "make_taxonomy", "load_folder", "load_coco", "load_coco_folder",
    "load_imagefolder", "load_webdataset", "load_cifar100", "shapes_hierarchy", "digits_hierarchy",
    "glyphs_hierarchy", "taxonomy_hierarchy", "fill_template", "with_article", "load_image_file", "ImageSource",
    "TarMemberImages",
]
