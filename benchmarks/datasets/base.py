"""The image-caption dataset every reader returns, annotated with concepts of a hierarchy.

Every image-caption pair of a :class:`ConceptDataset` carries the set of concepts it depicts: its
leaf concept(s) and all of their ancestors. Unlearning a concept removes every training pair whose
concept set contains it, so forgetting a parent concept forgets all of its descendants.

The pieces it is built from live by concern: the concept tree in ``hierarchy``, image decoding in
``images``, articles and prompt templates in ``text``, the error type in ``errors``. Their public
names are re-exported here because callers imported them from this module before it was split.

This module imports only numpy, torch and PIL; it never imports the model or unlearning code.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import BinaryIO, Protocol, runtime_checkable

import numpy as np
import torch

from .errors import DatasetError, short_list
from .hierarchy import ConceptHierarchy
from .images import TRANSPARENT_BACKGROUND, load_image_file, resize_square
from .text import fill_template, starts_with_vowel_sound, with_article

__all__ = [
    "SPLIT_NAMES", "ConceptDataset", "ImageSource", "stratified_test_mask",
    # Defined in the modules above; kept importable from here for callers of the unsplit module.
    "DatasetError", "ConceptHierarchy", "TRANSPARENT_BACKGROUND", "load_image_file", "resize_square",
    "fill_template", "starts_with_vowel_sound", "with_article",
]

SPLIT_NAMES = ("train", "test")


def stratified_test_mask(classes: np.ndarray, test_share: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask choosing about ``test_share`` of the items of every class as test items.

    A class with two or more items keeps at least one item on each side (when ``test_share > 0``).
    """
    is_test = np.zeros(len(classes), dtype=bool)
    for cls in np.unique(classes):
        members = np.flatnonzero(classes == cls)
        n_test = int(round(test_share * len(members)))
        if len(members) < 2 or test_share <= 0:
            n_test = 0
        else:
            n_test = min(max(n_test, 1), len(members) - 1)
        is_test[rng.permutation(members)[:n_test]] = True
    return is_test


@runtime_checkable
class ImageSource(Protocol):
    """Encoded images stored somewhere other than one file per pair (e.g. members of tar shards).

    What :class:`ConceptDataset` takes as ``image_source=``: image ``i`` belongs to pair ``i``.
    Data loaders call :meth:`open` from worker processes (forked on Linux, spawned elsewhere), so
    a source must be picklable and must open its OS file handles lazily in each process, never
    sharing one open handle between processes.
    """

    def __len__(self) -> int:
        """The number of images (one per pair)."""

    def open(self, index: int) -> BinaryIO:
        """A readable binary file object holding the encoded image ``index`` (JPEG, PNG, ...)."""

    def describe(self, index: int) -> str:
        """Where image ``index`` lives, e.g. ``"/data/shard-000001.tar:abc.jpg"``: names it in
        error messages and identifies it (pairs with the same description share an image)."""

    def files(self) -> list[str]:
        """The files the images are read from; fingerprints use their path, size and mtime."""


def _check_image_size(image_size) -> int:
    """``image_size`` as an int; anything but a positive integer raises :class:`DatasetError`."""
    if not isinstance(image_size, (int, np.integer)) or isinstance(image_size, bool) or image_size < 1:
        raise DatasetError(f"image_size must be a positive integer, got {image_size!r}")
    return int(image_size)


class ConceptDataset:
    """An in-memory image-caption dataset whose pairs are annotated with concepts of a hierarchy.

    Parameters
    ----------
    name:
        A short name for reports (``"shapes"``, a folder name, ...).
    hierarchy:
        The concept tree.
    captions:
        One caption per pair.
    labels:
        The primary leaf concept of each pair (the zero-shot class of its image).
    splits:
        ``"train"`` or ``"test"`` for each pair.
    image_size:
        Side length of the square images returned by :meth:`images`.
    pixels:
        Built-in data: a uint8 tensor ``(n, 3, s, s)`` of square RGB images, kept in memory
        (resized to ``image_size`` on access when ``s != image_size``).
    image_paths:
        File-based data: one image path per pair, read with PIL when an image is asked for (never
        cached: see :meth:`load_pixels`).
    image_source:
        Images stored elsewhere (e.g. members of tar shards): an :class:`ImageSource` holding one
        encoded image per pair, decoded like files when asked for.
        Exactly one of ``pixels``, ``image_paths`` and ``image_source`` must be given.
    pair_concepts:
        The concepts each pair depicts beyond its label (e.g. several objects in one photo); the
        stored value is always closed under ancestors and contains the label. Defaults to the
        label and its ancestors.
    templates:
        Zero-shot prompt templates, each containing ``{}`` for the concept's display name.
    prompts:
        Explicit prompts for some concepts; they replace the templates for those concepts.
    display_names:
        Text used for a concept in prompts; defaults to the name with underscores as spaces.
    """

    def __init__(
        self,
        name: str,
        hierarchy: ConceptHierarchy,
        captions: Sequence[str],
        labels: Sequence[str],
        splits: Sequence[str] | np.ndarray,
        image_size: int,
        *,
        pixels: torch.Tensor | None = None,
        image_paths: Sequence[str] | None = None,
        image_source: ImageSource | None = None,
        pair_concepts: Sequence[Iterable[str]] | None = None,
        templates: Sequence[str] = ("a {}.", "a photo of a {}."),
        prompts: Mapping[str, Sequence[str]] | None = None,
        display_names: Mapping[str, str] | None = None,
    ):
        if not isinstance(hierarchy, ConceptHierarchy):
            raise DatasetError(f"hierarchy must be a ConceptHierarchy, got {type(hierarchy).__name__}")
        self.image_size = _check_image_size(image_size)
        self.name = str(name)
        self.hierarchy = hierarchy
        self.captions: list[str] = [str(c) for c in captions]
        self.labels: list[str] = self._checked_labels(labels)
        self.splits: np.ndarray = self._checked_splits(splits)
        self.pair_concepts: list[frozenset[str]] = self._closed_concept_sets(pair_concepts)
        self._check_one_image_store(pixels, image_paths, image_source)
        self._pixels: torch.Tensor | None = self._checked_pixels(pixels)
        self._image_paths: list[str] | None = self._checked_paths(image_paths)
        self._image_source: ImageSource | None = self._checked_source(image_source)
        self.templates: list[str] = self._checked_templates(templates)
        self.explicit_prompts: dict[str, list[str]] = self._checked_prompts(prompts)
        self._display_names = dict(display_names or {})

    # -- construction steps: each checks one argument against the captions and the hierarchy -------

    def _checked_labels(self, labels: Sequence[str]) -> list[str]:
        """One leaf concept of the hierarchy per caption."""
        labels = [str(l) for l in labels]
        if len(labels) != len(self.captions):
            raise DatasetError(f"{self.name}: {len(self.captions)} captions but {len(labels)} labels; expected one label per caption")
        unknown = sorted({l for l in labels if l not in self.hierarchy})
        if unknown:
            raise DatasetError(
                f"{self.name}: label(s) {short_list(unknown)} are not concepts of the hierarchy"
            )
        not_leaves = sorted({l for l in labels if not self.hierarchy.is_leaf(l)})
        if not_leaves:
            raise DatasetError(
                f"{self.name}: label(s) {short_list(not_leaves)} are not leaf concepts; the label of "
                f"a pair must be a leaf of the hierarchy"
            )
        return labels

    def _checked_splits(self, splits: Sequence[str] | np.ndarray) -> np.ndarray:
        """One split name per caption, as a string array (compared against in :meth:`indices`)."""
        n = len(self.captions)
        splits = np.asarray(list(splits), dtype=str)
        if splits.shape != (n,):
            raise DatasetError(f"{self.name}: {n} captions but {splits.size} split entries; expected one per caption")
        bad_splits = sorted(set(splits.tolist()) - set(SPLIT_NAMES))
        if bad_splits:
            raise DatasetError(f"{self.name}: unknown split name(s) {short_list(bad_splits)}; expected 'train' or 'test'")
        return splits

    def _closed_concept_sets(self, pair_concepts: Sequence[Iterable[str]] | None) -> list[frozenset[str]]:
        """Each pair's label and extra concepts with all their ancestors.

        Sets are shared between pairs with the same label and extra concepts: datasets of many
        pairs and few distinct annotations then hold few sets.
        """
        label_closures = {label: self.hierarchy.closure([label]) for label in set(self.labels)}
        if pair_concepts is None:
            return [label_closures[l] for l in self.labels]
        pair_concepts = list(pair_concepts)
        if len(pair_concepts) != len(self.captions):
            raise DatasetError(f"{self.name}: {len(self.captions)} captions but {len(pair_concepts)} concept sets; expected one per caption")
        closed: dict[tuple[str, frozenset[str]], frozenset[str]] = {}
        sets = []
        for i, (label, extra) in enumerate(zip(self.labels, pair_concepts)):
            key = (label, frozenset(extra))
            if key not in closed:
                unknown = sorted(c for c in key[1] if c not in self.hierarchy)
                if unknown:
                    raise DatasetError(f"{self.name}: pair {i} names unknown concept(s) {short_list(unknown)}")
                closed[key] = label_closures[label] | self.hierarchy.closure(key[1])
            sets.append(closed[key])
        return sets

    def _check_one_image_store(self, pixels, image_paths, image_source) -> None:
        """Exactly one of the three ways to hold images is given."""
        given = [store for store in (pixels, image_paths, image_source) if store is not None]
        if len(given) != 1:
            raise DatasetError(
                f"{self.name}: give exactly one of pixels (a uint8 tensor), image_paths (one file per "
                f"pair) or image_source (an ImageSource), got {len(given)}"
            )

    def _checked_pixels(self, pixels: torch.Tensor | None) -> torch.Tensor | None:
        """The in-memory images, ``(n, 3, s, s)`` uint8; ``None`` for file-based data."""
        if pixels is None:
            return None
        if not isinstance(pixels, torch.Tensor) or pixels.dtype != torch.uint8 or pixels.ndim != 4 \
                or pixels.shape[1] != 3 or pixels.shape[2] != pixels.shape[3]:
            raise DatasetError(
                f"{self.name}: pixels must be a uint8 tensor of shape (n, 3, s, s), got "
                f"{getattr(pixels, 'dtype', type(pixels).__name__)} {tuple(getattr(pixels, 'shape', ()))}"
            )
        if pixels.shape[0] != len(self.captions):
            raise DatasetError(f"{self.name}: {len(self.captions)} captions but {pixels.shape[0]} images")
        return pixels.contiguous()

    def _checked_paths(self, image_paths: Sequence[str] | None) -> list[str] | None:
        """One image file per caption; ``None`` for other data."""
        if image_paths is None:
            return None
        paths = [os.fspath(p) for p in image_paths]
        if len(paths) != len(self.captions):
            raise DatasetError(f"{self.name}: {len(self.captions)} captions but {len(paths)} image paths")
        return paths

    def _checked_source(self, image_source: ImageSource | None) -> ImageSource | None:
        """An :class:`ImageSource` with one image per caption; ``None`` for other data."""
        if image_source is None:
            return None
        if not isinstance(image_source, ImageSource):
            raise DatasetError(
                f"{self.name}: image_source must have __len__, open, describe and files (an "
                f"ImageSource), got {type(image_source).__name__}"
            )
        if len(image_source) != len(self.captions):
            raise DatasetError(f"{self.name}: {len(self.captions)} captions but {len(image_source)} images in the image source")
        return image_source

    def _checked_templates(self, templates: Sequence[str]) -> list[str]:
        """At least one prompt template, each with a ``{}`` for the concept name."""
        templates = [str(t) for t in templates]
        if not templates:
            raise DatasetError(f"{self.name}: at least one prompt template is needed")
        for t in templates:
            if "{}" not in t:
                raise DatasetError(f"{self.name}: prompt template {t!r} has no '{{}}' placeholder")
        return templates

    def _checked_prompts(self, prompts: Mapping[str, Sequence[str]] | None) -> dict[str, list[str]]:
        """Explicit prompts by concept: known concepts only, each a non-empty list of strings."""
        checked: dict[str, list[str]] = {}
        for concept, texts in (prompts or {}).items():
            if concept not in self.hierarchy:
                raise DatasetError(f"{self.name}: prompts given for unknown concept {concept!r}")
            texts = [texts] if isinstance(texts, str) else [str(t) for t in texts]
            if not texts:
                raise DatasetError(f"{self.name}: empty prompt list for concept {concept!r}")
            checked[concept] = texts
        return checked

    # -- size and splits ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.captions)

    def __repr__(self) -> str:
        counts = ", ".join(f"{s}={int((self.splits == s).sum())}" for s in SPLIT_NAMES)
        return (
            f"ConceptDataset(name={self.name!r}, pairs={len(self)} ({counts}), "
            f"leaf_classes={len(self.leaf_classes())}, image_size={self.image_size})"
        )

    def indices(self, split: str) -> np.ndarray:
        """Indices (int64, ascending) of the pairs in ``split`` (``"train"`` or ``"test"``)."""
        if split not in SPLIT_NAMES:
            raise DatasetError(f"unknown split {split!r}; expected one of {', '.join(SPLIT_NAMES)}")
        return np.flatnonzero(self.splits == split).astype(np.int64)

    # -- images ------------------------------------------------------------------------------------

    def _as_index_array(self, indices) -> np.ndarray:
        if isinstance(indices, slice):
            return np.arange(len(self))[indices]
        if isinstance(indices, torch.Tensor):
            indices = indices.detach().cpu().numpy()
        arr = np.asarray(indices)
        if arr.dtype == bool:
            if arr.shape != (len(self),):
                raise DatasetError(f"a boolean index must have length {len(self)}, got shape {arr.shape}")
            return np.flatnonzero(arr)
        arr = arr.reshape(-1)
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise DatasetError(f"image indices must be integers, got dtype {arr.dtype}")
        arr = arr.astype(np.int64)
        if arr.size and (arr.min() < -len(self) or arr.max() >= len(self)):
            raise DatasetError(
                f"{self.name}: image index out of range (got {arr.min()}..{arr.max()}, "
                f"dataset has {len(self)} pairs)"
            )
        return arr % max(len(self), 1)

    def load_pixels(self, index: int) -> torch.Tensor:
        """The image of pair ``index`` as uint8 ``(3, image_size, image_size)``, decoded now.

        Nothing is cached: a corpus of millions of files does not fit in memory, and the data
        loaders (:mod:`benchmarks.datasets.loading`) decode each batch in worker processes. uint8
        is what travels between processes: a quarter of float32, and all a model input needs."""
        index = int(index)
        if self._pixels is not None:
            return (resize_square(self._pixels[index:index + 1], self.image_size)[0]
                    .mul_(255.0).round_().to(torch.uint8))
        if self._image_source is not None:
            with self._image_source.open(index) as file:
                image = load_image_file(file, self.image_size, name=self._image_source.describe(index))
        else:
            image = load_image_file(self._image_paths[index], self.image_size)
        return image.mul_(255.0).round_().to(torch.uint8)

    def images(self, indices) -> torch.Tensor:
        """Images of the given pairs as a float tensor ``(n, 3, image_size, image_size)`` in [0, 1].

        ``indices`` may be a sequence, numpy array or tensor of ints, a boolean mask, a slice or a
        single int (which gives ``n = 1``).
        """
        idx = self._as_index_array(indices)
        if self._pixels is not None:
            return resize_square(self._pixels[torch.from_numpy(idx)], self.image_size)
        if idx.size == 0:
            return torch.zeros(0, 3, self.image_size, self.image_size)
        batch = torch.stack([self.load_pixels(int(i)) for i in idx])
        return batch.float().div_(255.0)

    @property
    def in_memory(self) -> bool:
        """Whether the images are held in memory (built-in data) rather than read from files."""
        return self._pixels is not None

    def image_path(self, index: int) -> str | None:
        """The file of pair ``index`` for file-based datasets, where its image lives for an image
        source (``"shard.tar:key.jpg"``: see :meth:`ImageSource.describe`), ``None`` for in-memory
        data. Pairs with the same value share an image."""
        if self._image_source is not None:
            return self._image_source.describe(int(index))
        if self._image_paths is None:
            return None
        return self._image_paths[int(index)]

    @property
    def pixels(self) -> torch.Tensor | None:
        """The in-memory images as stored, uint8 ``(n, 3, s, s)`` (``s`` may differ from
        ``image_size``); ``None`` for file-based data and image sources."""
        return self._pixels

    @property
    def image_source(self) -> ImageSource | None:
        """The :class:`ImageSource` the images are read from, ``None`` for other data."""
        return self._image_source

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        """``(image (3, s, s), caption)`` of one pair."""
        return self.images([index])[0], self.captions[int(index)]

    # -- concepts, classes and prompts -------------------------------------------------------------

    def leaf_classes(self) -> list[str]:
        """The leaf concepts that label at least one pair, sorted: the zero-shot class list."""
        return sorted(set(self.labels))

    def targets(self, indices) -> np.ndarray:
        """Position in :meth:`leaf_classes` of the label of each given pair (for accuracy)."""
        idx = self._as_index_array(indices)
        position = {c: k for k, c in enumerate(self.leaf_classes())}
        return np.array([position[self.labels[i]] for i in idx], dtype=np.int64)

    def display_name(self, concept: str) -> str:
        """How ``concept`` is written in prompts (underscores become spaces unless overridden)."""
        self.hierarchy._check(concept)
        return self._display_names.get(concept, concept.replace("_", " "))

    def prompts(self, concept: str) -> list[str]:
        """Zero-shot prompts for ``concept``: its explicit prompts, or every template filled in."""
        self.hierarchy._check(concept)
        if concept in self.explicit_prompts:
            return list(self.explicit_prompts[concept])
        name = self.display_name(concept)
        return [fill_template(t, name) for t in self.templates]

    def _check_concepts(self, concepts: Sequence[str], what: str) -> list[str]:
        if isinstance(concepts, str):
            concepts = [concepts]
        concepts = list(concepts)
        if not concepts:
            raise DatasetError(f"{self.name}: the {what} list is empty; name at least one concept")
        unknown = [c for c in concepts if c not in self.hierarchy]
        if unknown:
            raise DatasetError(
                f"{self.name}: unknown concept(s) {short_list(unknown)} in the {what} list; known "
                f"concepts: {short_list(self.hierarchy.concepts(), limit=200)}"
            )
        return concepts

    def concept_mask(self, concepts: Sequence[str]) -> np.ndarray:
        """Boolean mask over all pairs: whether the pair depicts any of ``concepts``."""
        wanted = frozenset(self._check_concepts(concepts, "concept"))
        return np.fromiter((not wanted.isdisjoint(pc) for pc in self.pair_concepts), dtype=bool, count=len(self))

    def split_forget_retain(self, forget: Sequence[str], split: str = "train") -> tuple[np.ndarray, np.ndarray]:
        """Split the pairs of ``split`` into ``(forget_idx, retain_idx)``.

        A pair is forgotten when it depicts any concept of ``forget`` (so forgetting a parent
        forgets all its descendants); every other pair of the split is retained.
        """
        forget = self._check_concepts(forget, "forget")
        in_split = self.indices(split)
        mask = self.concept_mask(forget)[in_split]
        forget_idx, retain_idx = in_split[mask], in_split[~mask]
        if retain_idx.size == 0:
            raise DatasetError(
                f"{self.name}: forgetting {short_list(forget)} leaves no {split} pairs to retain; "
                f"choose concepts below the root {self.hierarchy.root!r}"
            )
        return forget_idx, retain_idx
