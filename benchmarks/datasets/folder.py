"""The project's own folder format for user data (documented in ``README.md`` beside this file).

::

    path/pairs.jsonl       one JSON object per line:
                           {"image": "imgs/0001.png", "caption": "a red fox", "concepts": ["fox"],
                            "split": "train"}
    path/hierarchy.json    {"fox": "animal", "animal": "object", "object": null}
    path/prompts.json      optional: {"templates": ["a photo of a {}."],
                                      "prompts": {"fox": ["a photo of a fox."]}}

Image paths are relative to ``path`` (or absolute). The first concept of a pair that is a leaf of
the hierarchy is its label; all listed concepts and their ancestors are the concepts it depicts.
"""

from __future__ import annotations

import codecs
import json
import os
from pathlib import Path

from .base import SPLIT_NAMES, ConceptDataset
from .errors import DatasetError
from .hierarchy import ConceptHierarchy
from .registry import register_format

DEFAULT_TEMPLATES = ("a photo of a {}.", "a {}.", "a picture of a {}.")
PAIRS_FILE = "pairs.jsonl"
HIERARCHY_FILE = "hierarchy.json"
PROMPTS_FILE = "prompts.json"


def _not_utf8(path: Path, error: UnicodeDecodeError, line_no: int | None = None) -> DatasetError:
    """The one-line error for a text file that is not UTF-8 (e.g. saved as Latin-1 or UTF-16)."""
    where = f"{path} line {line_no}" if line_no is not None else str(path)
    return DatasetError(f"{where}: byte {error.object[error.start]:#04x} at position {error.start} is "
                        f"not valid UTF-8; the file must be saved as UTF-8")


def read_json_file(path: Path, what: str):
    """Parse a UTF-8 JSON file, raising a one-line :class:`DatasetError` naming it on failure."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"missing {what} file {str(path)!r}") from None
    except OSError as exc:
        raise DatasetError(f"cannot read {what} file {str(path)!r}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")  # tolerate a byte-order mark
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, exc) from None
    if not text.strip():
        raise DatasetError(f"{path}: the {what} file is empty; expected JSON")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path} line {exc.lineno}: malformed JSON ({exc.msg})") from None


def read_text_lines(path: Path):
    """Yield ``(line number, text)`` of a UTF-8 text file; a non-UTF-8 line raises :class:`DatasetError`."""
    with open(path, "rb") as handle:  # bytes: a decoding error can then name its line
        for line_no, raw in enumerate(handle, start=1):
            if line_no == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]  # tolerate a byte-order mark
            try:
                yield line_no, raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _not_utf8(path, exc, line_no) from None


def read_hierarchy_file(path: Path) -> ConceptHierarchy:
    """Read ``{"child": "parent", ..., "root": null}`` into a :class:`ConceptHierarchy`."""
    data = read_json_file(path, "hierarchy")
    if not isinstance(data, dict):
        raise DatasetError(
            f"{path}: expected a JSON object mapping each concept to its parent (null for the root), "
            f"got {type(data).__name__}"
        )
    try:
        return ConceptHierarchy(data)
    except DatasetError as exc:
        raise DatasetError(f"{path}: {exc}") from None


def read_prompts_file(path: Path, hierarchy: ConceptHierarchy) -> tuple[list[str] | None, dict[str, list[str]]]:
    """Read an optional prompts file: ``(templates or None, {concept: [prompt, ...]})``."""
    if not path.exists():
        return None, {}
    data = read_json_file(path, "prompts")
    if not isinstance(data, dict) or not set(data) <= {"templates", "prompts"} or not data:
        raise DatasetError(
            f"{path}: expected a JSON object with 'templates' (a list of strings with '{{}}') and/or "
            f"'prompts' (concept -> list of strings)"
        )
    templates = data.get("templates")
    if templates is not None:
        if not isinstance(templates, list) or not templates or not all(
            isinstance(t, str) and "{}" in t for t in templates
        ):
            raise DatasetError(f"{path}: 'templates' must be a non-empty list of strings that each contain '{{}}'")
    prompts = data.get("prompts", {})
    if not isinstance(prompts, dict):
        raise DatasetError(f"{path}: 'prompts' must map concept names to lists of strings")
    for concept, texts in prompts.items():
        if concept not in hierarchy:
            raise DatasetError(f"{path}: prompts given for concept {concept!r}, which is not in the hierarchy")
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise DatasetError(f"{path}: the prompts of {concept!r} must be a non-empty list of strings")
    return templates, {c: list(t) for c, t in prompts.items()}


def primary_leaf(concepts: list[str], hierarchy: ConceptHierarchy) -> str | None:
    """The first of ``concepts`` that is a leaf of ``hierarchy`` (``None`` when there is none)."""
    for concept in concepts:
        if hierarchy.is_leaf(concept):
            return concept
    return None


def checked_concepts_and_split(concepts, split, hierarchy: ConceptHierarchy, where: str) -> tuple:
    """A pair's ``concepts`` (a name or a non-empty list of names of ``hierarchy``, at least one a
    leaf) and ``split`` checked: ``(concepts, label, split)`` with the label its first leaf. Errors
    name ``where`` (file and line, or shard and sample). Shared by every reader of pair records."""
    if isinstance(concepts, str):
        concepts = [concepts]
    if not isinstance(concepts, list) or not concepts or not all(isinstance(c, str) for c in concepts):
        raise DatasetError(f"{where}: 'concepts' must be a non-empty list of concept names, got {concepts!r}")
    unknown = [c for c in concepts if c not in hierarchy]
    if unknown:
        raise DatasetError(
            f"{where}: concept(s) {', '.join(map(repr, unknown))} not in {HIERARCHY_FILE} "
            f"(known: {', '.join(hierarchy.concepts()[:30])}{', ...' if len(hierarchy) > 30 else ''})"
        )
    label = primary_leaf(concepts, hierarchy)
    if label is None:
        raise DatasetError(f"{where}: none of the concepts {concepts!r} is a leaf of the hierarchy; name at least one leaf")
    if split not in SPLIT_NAMES:
        raise DatasetError(f"{where}: 'split' must be 'train' or 'test', got {split!r}")
    return concepts, label, split


def has_pairs_file(root: Path) -> bool:
    """Whether ``root`` holds ``pairs.jsonl``: the file that marks the folder format."""
    return (root / PAIRS_FILE).is_file()


@register_format("folder", detect=has_pairs_file, layout=f"{PAIRS_FILE} + {HIERARCHY_FILE}",
                 title="folder-format", priority=30)
def load_folder(path: str | os.PathLike, image_size: int = 32) -> ConceptDataset:
    """Read a dataset in the folder format (``pairs.jsonl`` + ``hierarchy.json`` [+ ``prompts.json``]).

    Images are read lazily (and cached) when :meth:`ConceptDataset.images` asks for them, but every
    image file must exist when the dataset is loaded.
    """
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {str(root)!r} does not exist or is not a folder")
    pairs_path = root / PAIRS_FILE
    if not pairs_path.is_file():
        raise DatasetError(f"missing file {str(pairs_path)!r}; the folder format needs {PAIRS_FILE} and {HIERARCHY_FILE}")
    hierarchy_path = root / HIERARCHY_FILE
    if not hierarchy_path.is_file():
        raise DatasetError(f"missing file {str(hierarchy_path)!r}; the folder format needs {PAIRS_FILE} and {HIERARCHY_FILE}")
    hierarchy = read_hierarchy_file(hierarchy_path)
    templates, prompts = read_prompts_file(root / PROMPTS_FILE, hierarchy)

    image_paths, captions, labels, pair_concepts, splits = [], [], [], [], []
    required = ("image", "caption", "concepts", "split")
    for line_no, line in read_text_lines(pairs_path):
        if not line.strip():
            continue
        where = f"{pairs_path} line {line_no}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{where}: malformed JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(record, dict):
            raise DatasetError(f"{where}: expected a JSON object with keys {', '.join(required)}")
        missing = [k for k in required if k not in record]
        if missing:
            raise DatasetError(f"{where}: missing key(s) {', '.join(missing)} (each line needs {', '.join(required)})")
        image, caption, concepts, split = (record[k] for k in required)
        if not isinstance(image, str) or not image:
            raise DatasetError(f"{where}: 'image' must be a non-empty path string, got {image!r}")
        if not isinstance(caption, str):
            raise DatasetError(f"{where}: 'caption' must be a string, got {caption!r}")
        concepts, label, split = checked_concepts_and_split(concepts, split, hierarchy, where)
        image_path = Path(image) if os.path.isabs(image) else root / image
        if not image_path.is_file():
            raise DatasetError(f"{where}: image file {str(image_path)!r} does not exist")
        image_paths.append(str(image_path))
        captions.append(caption)
        labels.append(label)
        pair_concepts.append(concepts)
        splits.append(split)
    if not captions:
        raise DatasetError(f"{pairs_path}: no pairs; expected one JSON object per line")

    return ConceptDataset(
        name=root.resolve().name,
        hierarchy=hierarchy,
        captions=captions,
        labels=labels,
        splits=splits,
        image_size=image_size,
        image_paths=image_paths,
        pair_concepts=pair_concepts,
        templates=templates or DEFAULT_TEMPLATES,
        prompts=prompts,
    )
