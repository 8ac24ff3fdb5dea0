"""Reader for image trees in the torchvision ``ImageFolder`` layout.

Two layouts are understood::

    root/train/<class>/*.png|jpg|...   root/test/<class>/...   (``val`` is read as ``test``)
    root/<class>/*.png|jpg|...         (split ~80/20 per class, deterministically from ``seed``)

Every class is a leaf below a single root concept (``object``), and every image gets the caption
"a photo of a <class>." (underscores read as spaces). An optional ``root/hierarchy.json`` in the
folder format (``{"child": "parent", ..., "root": null}``) adds parent concepts: classes it does not
mention hang directly below its root. An optional ``root/prompts.json`` sets the zero-shot prompts.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .base import ConceptDataset, stratified_test_mask
from .errors import DatasetError
from .folder import DEFAULT_TEMPLATES, HIERARCHY_FILE, PROMPTS_FILE, read_hierarchy_file, read_prompts_file
from .hierarchy import ConceptHierarchy
from .registry import register_format
from .text import fill_template

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
IMAGEFOLDER_ROOT = "object"
SPLIT_FOLDERS = {"train": "train", "test": "test", "val": "test", "validation": "test"}
CAPTION_TEMPLATE = "a photo of a {}."
TEST_SHARE = 0.2


def _class_images(folder: Path) -> dict[str, list[Path]]:
    """Map each class sub-folder of ``folder`` to its image files (sorted), skipping empty ones."""
    classes = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(
            p for p in sub.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if files:
            classes[sub.name] = files
    return classes


def looks_like_imagefolder(root: Path) -> bool:
    """Whether ``root`` has at least one sub-folder that holds image files."""
    try:
        return root.is_dir() and bool(_class_images(root))
    except OSError:
        return False


# The catch-all (any folder with a sub-folder of images), so it is tried after every other format.
@register_format("imagefolder", detect=looks_like_imagefolder, layout="class sub-folders of images",
                 title="ImageFolder", priority=-10)
def load_imagefolder(root: str | os.PathLike, image_size: int = 32, seed: int = 0,
                     test_share: float = TEST_SHARE) -> ConceptDataset:
    """Read an ImageFolder tree (with ``train``/``test`` sub-folders or one folder per class)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"image folder {str(root)!r} does not exist or is not a folder")
    if not 0.0 <= test_share < 1.0:
        raise DatasetError(f"test_share must be in [0, 1), got {test_share!r}")

    split_dirs = {name: SPLIT_FOLDERS[name.lower()] for name in os.listdir(root)
                  if name.lower() in SPLIT_FOLDERS and (root / name).is_dir()}
    files: list[Path] = []
    classes: list[str] = []
    splits: list[str] = []
    if split_dirs:
        for folder_name in sorted(split_dirs):
            for cls, images in _class_images(root / folder_name).items():
                files += images
                classes += [cls] * len(images)
                splits += [split_dirs[folder_name]] * len(images)
    else:
        for cls, images in _class_images(root).items():
            files += images
            classes += [cls] * len(images)
        is_test = stratified_test_mask(np.asarray(classes), test_share, np.random.default_rng(seed))
        splits = ["test" if t else "train" for t in is_test]
    if not files:
        raise DatasetError(
            f"image folder {str(root)!r} holds no images; expected root/<class>/*.png|jpg or "
            f"root/train/<class>/... and root/test/<class>/..."
        )

    class_names = sorted(set(classes))
    hierarchy_path = root / HIERARCHY_FILE
    if hierarchy_path.is_file():
        given = read_hierarchy_file(hierarchy_path)
        parent = given.as_dict()
        for cls in class_names:
            parent.setdefault(cls, given.root)
        hierarchy = ConceptHierarchy(parent)
        inner = [c for c in class_names if not hierarchy.is_leaf(c)]
        if inner:
            raise DatasetError(
                f"{hierarchy_path}: class folder(s) {', '.join(inner)} have children in the "
                f"hierarchy; every class must be a leaf"
            )
    else:
        if IMAGEFOLDER_ROOT in class_names:
            raise DatasetError(f"image folder {str(root)!r}: a class may not be called {IMAGEFOLDER_ROOT!r} (the root concept)")
        hierarchy = ConceptHierarchy({IMAGEFOLDER_ROOT: None, **{c: IMAGEFOLDER_ROOT for c in class_names}})
    templates, prompts = read_prompts_file(root / PROMPTS_FILE, hierarchy)

    return ConceptDataset(
        name=root.resolve().name,
        hierarchy=hierarchy,
        captions=[fill_template(CAPTION_TEMPLATE, c.replace("_", " ")) for c in classes],
        labels=classes,
        splits=splits,
        image_size=image_size,
        image_paths=[str(f) for f in files],
        templates=templates or DEFAULT_TEMPLATES,
        prompts=prompts,
    )
