"""Reader for MS-COCO caption and instance annotations (the 2014/2017 JSON files as distributed).

Files, for each part ``<part>`` such as ``train2017`` or ``val2017``:

- ``captions_<part>.json``: ``images`` (``id``, ``file_name``) and ``annotations`` (``image_id``,
  ``caption``);
- ``instances_<part>.json``: ``categories`` (``id``, ``name``, ``supercategory``) and ``annotations``
  (``image_id``, ``category_id``, ``area``).

Each caption becomes one pair. The concepts of a pair are the categories present in its image, their
supercategories and the root ``object``; its label is the category covering the largest total area.
A category whose supercategory is missing or is itself a category name (COCO's ``person`` has
supercategory ``person``) hangs directly below the root. Images without instance annotations are
skipped. Parts whose name contains ``train`` form the train split; ``val`` or ``test`` the test split
(override with ``split_names``). Image files are looked up as ``images_dir/<part>/<file_name>`` and
then ``images_dir/<file_name>``.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

from .base import SPLIT_NAMES, ConceptDataset
from .errors import DatasetError
from .folder import read_json_file
from .hierarchy import ConceptHierarchy
from .registry import register_format

COCO_ROOT = "object"
COCO_TEMPLATES = ("a photo of a {}.", "a picture of a {}.", "a photo containing a {}.", "a {}.")
CAPTIONS_PREFIX = "captions_"
INSTANCES_PREFIX = "instances_"


def _annotation_files(annotations: str | os.PathLike | Sequence[str | os.PathLike]) -> tuple[dict[str, Path], dict[str, Path]]:
    """``({part: captions file}, {part: instances file})`` from a folder or a list of files."""
    if isinstance(annotations, (str, os.PathLike)):
        folder = Path(annotations)
        if not folder.exists():
            raise DatasetError(f"COCO annotations {str(folder)!r} do not exist; expected a folder with captions_*.json and instances_*.json")
        files = sorted(folder.glob("*.json")) if folder.is_dir() else [folder]
    else:
        files = [Path(f) for f in annotations]
    captions, instances = {}, {}
    for f in files:
        if f.suffix != ".json":
            continue
        if f.name.startswith(CAPTIONS_PREFIX):
            captions[f.stem[len(CAPTIONS_PREFIX):]] = f
        elif f.name.startswith(INSTANCES_PREFIX):
            instances[f.stem[len(INSTANCES_PREFIX):]] = f
    return captions, instances


def find_coco_annotations(root: str | os.PathLike) -> Path | None:
    """``root`` or ``root/annotations`` when it holds a ``captions_*.json`` file."""
    root = Path(root)
    for candidate in (root, root / "annotations"):
        if candidate.is_dir() and any(candidate.glob(CAPTIONS_PREFIX + "*.json")):
            return candidate
    return None


def _default_split(part: str) -> str | None:
    lowered = part.lower()
    if "train" in lowered:
        return "train"
    if "val" in lowered or "test" in lowered:
        return "test"
    return None


def _field(record, key: str, path: Path, what: str):
    if not isinstance(record, dict) or key not in record:
        raise DatasetError(f"{path}: an entry of {what!r} lacks the key {key!r}")
    return record[key]


def load_coco(annotations: str | os.PathLike | Sequence[str | os.PathLike], images_dir: str | os.PathLike,
              split_names: Mapping[str, str] | None = None, image_size: int = 32,
              captions_per_image: int | None = None, skip_missing_images: bool = False) -> ConceptDataset:
    """Read COCO captions + instances annotations into a :class:`ConceptDataset`.

    Parameters
    ----------
    annotations:
        A folder holding ``captions_<part>.json`` and ``instances_<part>.json``, or a list of files.
    images_dir:
        Where the images are: ``images_dir/<part>/<file_name>`` or ``images_dir/<file_name>``.
    split_names:
        ``{part: "train" | "test"}``; parts not named default by their name (``train``/``val``/``test``).
    captions_per_image:
        Keep only the first that many captions of each image (all by default).
    skip_missing_images:
        Drop pairs whose image file is missing instead of raising :class:`DatasetError`.
    """
    caption_files, instance_files = _annotation_files(annotations)
    if not caption_files:
        raise DatasetError(f"no captions_*.json file in COCO annotations {annotations!r}")
    if captions_per_image is not None and (not isinstance(captions_per_image, int) or captions_per_image < 1):
        raise DatasetError(f"captions_per_image must be a positive integer or None, got {captions_per_image!r}")
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise DatasetError(f"COCO images folder {str(images_dir)!r} does not exist or is not a folder")

    split_of: dict[str, str] = {}
    for part in sorted(caption_files):
        split = (split_names or {}).get(part, _default_split(part))
        if split not in SPLIT_NAMES:
            raise DatasetError(
                f"cannot tell the split of COCO part {part!r} ({caption_files[part].name}); pass "
                f"split_names={{{part!r}: 'train' or 'test'}}"
            )
        if part not in instance_files:
            raise DatasetError(
                f"missing {INSTANCES_PREFIX}{part}.json next to {caption_files[part]}; the "
                f"categories of each image come from the instance annotations"
            )
        split_of[part] = split

    categories: dict[int, tuple[str, str | None]] = {}
    records = []  # (part, image file, caption, {category id: area})
    for part in sorted(split_of):
        inst_path = instance_files[part]
        instances = read_json_file(inst_path, "COCO instances")
        if not isinstance(instances, dict) or "categories" not in instances or "annotations" not in instances:
            raise DatasetError(f"{inst_path}: expected a JSON object with 'categories' and 'annotations'")
        for cat in instances["categories"]:
            cat_id = _field(cat, "id", inst_path, "categories")
            name = _field(cat, "name", inst_path, "categories")
            entry = (str(name), cat.get("supercategory"))
            if categories.setdefault(cat_id, entry) != entry:
                raise DatasetError(f"{inst_path}: category id {cat_id} is {entry} here but {categories[cat_id]} in another file")
        area_of: dict[int, dict[int, float]] = defaultdict(lambda: defaultdict(float))
        for ann in instances["annotations"]:
            image_id = _field(ann, "image_id", inst_path, "annotations")
            cat_id = _field(ann, "category_id", inst_path, "annotations")
            if cat_id not in categories:
                raise DatasetError(f"{inst_path}: annotation of image {image_id} names unknown category id {cat_id}")
            area_of[image_id][cat_id] += float(ann.get("area", 0.0))

        cap_path = caption_files[part]
        captions = read_json_file(cap_path, "COCO captions")
        if not isinstance(captions, dict) or "images" not in captions or "annotations" not in captions:
            raise DatasetError(f"{cap_path}: expected a JSON object with 'images' and 'annotations'")
        file_of = {
            _field(img, "id", cap_path, "images"): str(_field(img, "file_name", cap_path, "images"))
            for img in captions["images"]
        }
        by_image: dict[int, list[str]] = defaultdict(list)  # in file order
        for ann in captions["annotations"]:
            image_id = _field(ann, "image_id", cap_path, "annotations")
            text = _field(ann, "caption", cap_path, "annotations")
            if image_id not in file_of:
                raise DatasetError(f"{cap_path}: caption of unknown image id {image_id}")
            by_image[image_id].append(str(text).strip())
        for image_id in file_of:  # images in the order of the captions file
            if image_id not in area_of or image_id not in by_image:
                continue  # no instance annotations (no concepts to unlearn) or no caption
            texts = by_image[image_id]
            if captions_per_image is not None:
                texts = texts[:captions_per_image]
            for text in texts:
                records.append((part, file_of[image_id], text, dict(area_of[image_id])))

    if not records:
        raise DatasetError(f"COCO annotations {annotations!r}: no captioned image has instance annotations")

    names = {cat_id: name for cat_id, (name, _) in categories.items()}
    if COCO_ROOT in names.values():
        raise DatasetError(f"COCO category named {COCO_ROOT!r} clashes with the root concept")
    category_names = set(names.values())
    parent: dict[str, str | None] = {COCO_ROOT: None}
    for name, supercategory in categories.values():
        if not supercategory or supercategory in category_names or supercategory == COCO_ROOT:
            parent[name] = COCO_ROOT
        else:
            parent[name] = str(supercategory)
            parent[str(supercategory)] = COCO_ROOT
    hierarchy = ConceptHierarchy(parent)

    image_paths, texts, labels, pair_concepts, splits = [], [], [], [], []
    resolved: dict[tuple[str, str], Path | None] = {}
    for part, file_name, text, areas in records:
        key = (part, file_name)
        if key not in resolved:
            candidates = [Path(file_name)] if os.path.isabs(file_name) else [images_dir / part / file_name, images_dir / file_name]
            resolved[key] = next((c for c in candidates if c.is_file()), None)
            if resolved[key] is None and not skip_missing_images:
                raise DatasetError(
                    f"COCO image {file_name!r} of {part} not found; looked for "
                    f"{' and '.join(repr(str(c)) for c in candidates)}"
                )
        if resolved[key] is None:
            continue
        # Largest total area wins; ties go to the alphabetically first category.
        label = min(areas, key=lambda cid: (-areas[cid], names[cid]))
        image_paths.append(str(resolved[key]))
        texts.append(text)
        labels.append(names[label])
        pair_concepts.append([names[cid] for cid in areas])
        splits.append(split_of[part])
    if not texts:
        raise DatasetError(f"no COCO image file was found under {str(images_dir)!r}")

    return ConceptDataset(
        name="coco",
        hierarchy=hierarchy,
        captions=texts,
        labels=labels,
        splits=splits,
        image_size=image_size,
        image_paths=image_paths,
        pair_concepts=pair_concepts,
        templates=COCO_TEMPLATES,
    )


@register_format("coco", detect=find_coco_annotations, title="COCO", priority=10,
                 layout=f"COCO annotations ({CAPTIONS_PREFIX}*.json + {INSTANCES_PREFIX}*.json)")
def load_coco_folder(root: str | os.PathLike, image_size: int = 32, *, images_dir: str | os.PathLike | None = None,
                     split_names: Mapping[str, str] | None = None, captions_per_image: int | None = None,
                     skip_missing_images: bool = False) -> ConceptDataset:
    """Read a COCO folder: annotations in ``root`` or ``root/annotations``, images as :func:`load_coco` finds them.

    ``images_dir`` defaults to ``root/images`` when that folder exists, else ``root`` itself (the
    layouts the COCO archives unpack to).
    """
    annotations = find_coco_annotations(root)
    if annotations is None:
        raise DatasetError(f"{str(root)!r} is not a COCO folder; expected {CAPTIONS_PREFIX}*.json in it "
                           f"or in its annotations/ sub-folder")
    if images_dir is None:
        images_dir = Path(root) / "images" if (Path(root) / "images").is_dir() else Path(root)
    return load_coco(annotations, images_dir, split_names=split_names, image_size=image_size,
                     captions_per_image=captions_per_image, skip_missing_images=skip_missing_images)
