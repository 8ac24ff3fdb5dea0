"""Core types shared by every dataset reader: the concept hierarchy and the image-caption dataset.

A *concept* is a named node of a tree (``shape -> polygon -> triangle``). Every image-caption pair
of a :class:`ConceptDataset` carries the set of concepts it depicts: its leaf concept(s) and all of
their ancestors. Unlearning a concept removes every training pair whose concept set contains it, so
forgetting a parent concept forgets all of its descendants.

This module imports only numpy, torch and PIL; it never imports the model or unlearning code.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

SPLIT_NAMES = ("train", "test")


class DatasetError(ValueError):
    """A dataset could not be built or queried; the message names the bad input and what was expected."""


def _short_list(items: Iterable[str], limit: int = 40) -> str:
    """Comma-separated listing of ``items``, truncated after ``limit`` entries."""
    items = list(items)
    shown = ", ".join(repr(x) for x in items[:limit])
    if len(items) > limit:
        shown += f", ... ({len(items) - limit} more)"
    return shown


# Spelling exceptions to "an before a vowel letter" (by sound: "a one", "a unicorn", "an hour").
_CONSONANT_SOUND_PREFIXES = ("one", "once", "uni", "use", "usu", "uti", "eu", "ewe", "ufo")
_VOWEL_SOUND_PREFIXES = ("hour", "honest", "honour", "honor", "heir")


def starts_with_vowel_sound(phrase: str) -> bool:
    """Whether ``phrase`` takes "an" rather than "a" (a spelling rule with common exceptions)."""
    word = phrase.strip().lower()
    if word.startswith(_VOWEL_SOUND_PREFIXES):
        return True
    if word.startswith(_CONSONANT_SOUND_PREFIXES):
        return False
    return word[:1] in ("a", "e", "i", "o", "u")


def with_article(phrase: str) -> str:
    """Prefix ``phrase`` with the English indefinite article: ``'arrow' -> 'an arrow'``."""
    return f"{'an' if starts_with_vowel_sound(phrase) else 'a'} {phrase}"


def fill_template(template: str, display_name: str) -> str:
    """Put ``display_name`` into the ``{}`` of ``template``.

    When the template reads ``"a {}"`` and the name starts with a vowel (``"arrow"``), the article
    becomes ``"an"`` so that prompts read like the captions the model was trained on.
    """
    if "{}" not in template:
        raise DatasetError(f"prompt template {template!r} has no '{{}}' placeholder for the concept name")
    if starts_with_vowel_sound(display_name):
        template = re.sub(r"\b([Aa]) \{\}", r"\1n {}", template)
    return template.replace("{}", display_name)


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


# --------------------------------------------------------------------------------------------------
# Concept hierarchy
# --------------------------------------------------------------------------------------------------


class ConceptHierarchy:
    """A tree of named concepts given as a ``child -> parent`` mapping with exactly one root.

    ``parent`` maps every concept name to the name of its parent, and the single root to ``None``.
    Every parent must itself be a key of the mapping. Cycles, several roots or no root raise
    :class:`DatasetError`.
    """

    def __init__(self, parent: Mapping[str, str | None]):
        if not isinstance(parent, Mapping) or not parent:
            raise DatasetError(
                f"a concept hierarchy needs a non-empty mapping child -> parent, got {parent!r:.200}"
            )
        for child, par in parent.items():
            if not isinstance(child, str) or not child:
                raise DatasetError(f"concept names must be non-empty strings, got {child!r}")
            if par is not None and not isinstance(par, str):
                raise DatasetError(
                    f"the parent of concept {child!r} must be a concept name or None, got {par!r}"
                )
        self._parent: dict[str, str | None] = dict(parent)

        roots = sorted(c for c, p in self._parent.items() if p is None)
        if len(roots) != 1:
            raise DatasetError(
                f"a concept hierarchy needs exactly one root (a concept whose parent is null); "
                f"found {len(roots)}: {_short_list(roots)}"
            )
        self.root: str = roots[0]

        unknown = sorted(
            {p for p in self._parent.values() if p is not None and p not in self._parent}
        )
        if unknown:
            raise DatasetError(
                f"parent concept(s) {_short_list(unknown)} are not concepts of the hierarchy; "
                f"every parent must also appear as a child (the root with parent null)"
            )

        self._children: dict[str, list[str]] = {c: [] for c in self._parent}
        for child, par in self._parent.items():
            if par is not None:
                self._children[par].append(child)
        for kids in self._children.values():
            kids.sort()

        # Every concept must reach the root; otherwise it sits on a cycle (or hangs below one).
        self._depth: dict[str, int] = {self.root: 0}
        stack = [self.root]
        while stack:
            node = stack.pop()
            for kid in self._children[node]:
                self._depth[kid] = self._depth[node] + 1
                stack.append(kid)
        cyclic = sorted(set(self._parent) - set(self._depth))
        if cyclic:
            raise DatasetError(
                f"the concept hierarchy has a cycle: {_short_list(cyclic)} never reach the root "
                f"{self.root!r}"
            )

    # -- queries -----------------------------------------------------------------------------------

    def _check(self, concept: str) -> None:
        if concept not in self._parent:
            raise DatasetError(
                f"unknown concept {concept!r}; known concepts: {_short_list(self.concepts())}"
            )

    def is_known(self, concept: str) -> bool:
        """Whether ``concept`` is a node of this hierarchy."""
        return isinstance(concept, str) and concept in self._parent

    def concepts(self) -> list[str]:
        """All concept names, sorted."""
        return sorted(self._parent)

    def parent_of(self, concept: str) -> str | None:
        """The parent of ``concept`` (``None`` for the root)."""
        self._check(concept)
        return self._parent[concept]

    def children(self, concept: str) -> list[str]:
        """The direct children of ``concept``, sorted."""
        self._check(concept)
        return list(self._children[concept])

    def ancestors(self, concept: str) -> list[str]:
        """The ancestors of ``concept``: its parent first, up to and including the root."""
        self._check(concept)
        chain = []
        node = self._parent[concept]
        while node is not None:
            chain.append(node)
            node = self._parent[node]
        return chain

    def descendants(self, concept: str) -> list[str]:
        """Every concept below ``concept`` (not including it), sorted."""
        self._check(concept)
        found, stack = [], list(self._children[concept])
        while stack:
            node = stack.pop()
            found.append(node)
            stack.extend(self._children[node])
        return sorted(found)

    def siblings(self, concept: str) -> list[str]:
        """Concepts with the same parent as ``concept``, excluding it (the root has none)."""
        self._check(concept)
        par = self._parent[concept]
        if par is None:
            return []
        return [c for c in self._children[par] if c != concept]

    def depth(self, concept: str) -> int:
        """Number of edges between ``concept`` and the root (the root has depth 0)."""
        self._check(concept)
        return self._depth[concept]

    def is_leaf(self, concept: str) -> bool:
        """Whether ``concept`` has no children."""
        self._check(concept)
        return not self._children[concept]

    def leaves(self) -> list[str]:
        """All concepts without children, sorted."""
        return sorted(c for c, kids in self._children.items() if not kids)

    def closure(self, concepts: Iterable[str]) -> frozenset[str]:
        """The given concepts together with all of their ancestors."""
        out: set[str] = set()
        for c in concepts:
            self._check(c)
            out.add(c)
            out.update(self.ancestors(c))
        return frozenset(out)

    def as_dict(self) -> dict[str, str | None]:
        """The ``child -> parent`` mapping (a copy)."""
        return dict(self._parent)

    def __len__(self) -> int:
        return len(self._parent)

    def __contains__(self, concept: object) -> bool:
        return isinstance(concept, str) and concept in self._parent

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ConceptHierarchy) and other._parent == self._parent

    def __repr__(self) -> str:
        return (
            f"ConceptHierarchy(root={self.root!r}, concepts={len(self)}, "
            f"leaves={len(self.leaves())})"
        )


# --------------------------------------------------------------------------------------------------
# Image loading
# --------------------------------------------------------------------------------------------------


#: Transparent pixels are composited over white: images with transparency (logos, icons, cut-out
#: product photos) are mostly made to be shown on a white page, where they look as intended.
TRANSPARENT_BACKGROUND = (255, 255, 255)
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


def _is_high_bit_grey(mode: str) -> bool:
    """Whether PIL ``mode`` holds greyscale beyond 8 bits: 16/32-bit integers or 32-bit floats."""
    return mode in ("I", "F") or mode.startswith("I;16")


def _declared_bits(img) -> int | None:
    """Bits per sample a TIFF declares (12-bit camera data is stored in 16-bit modes), else ``None``."""
    bits = getattr(img, "tag_v2", {}).get(258)  # 258: TIFF BitsPerSample
    if isinstance(bits, tuple):
        bits = bits[0] if bits else None
    return int(bits) if bits else None


def _grey_unit_range(img, declared_bits: int | None) -> np.ndarray:
    """A 16/32-bit integer or float greyscale image as float32 ``(h, w)`` in [0, 1].

    Integers are divided by the full scale of their bit depth: the TIFF's declared depth, else 16
    bits for ``I;16*`` modes and for ``I`` values within 0..65535 (a 16-bit PNG or PGM), else 31
    bits (``I`` holds signed 32-bit integers). Floats within [0, 1] are taken as they are; other
    floats are on PIL's own 0..255 scale (what ``convert("F")`` of an 8-bit image gives).
    """
    values = np.asarray(img).astype(np.float32)
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)  # no brightness to give them
    if img.mode == "F":
        full_scale = 1.0 if values.max(initial=0.0) <= 1.0 else 255.0
    elif declared_bits:
        full_scale = 2.0 ** min(declared_bits, 31) - 1
    elif img.mode.startswith("I;16") or values.max(initial=0.0) <= 65535:
        full_scale = 65535.0
    else:
        full_scale = 2.0 ** 31 - 1
    # Negative values (signed data) are darker than black and floats past full scale brighter
    # than white; a display shows both at its limits.
    return np.clip(values / full_scale, 0.0, 1.0)


def _rgb_or_unit_grey(img, declared_bits: int | None):
    """``img`` as a PIL image of mode ``"RGB"`` (8-bit) or ``"F"`` (high-bit greyscale in [0, 1])."""
    from PIL import Image

    if _is_high_bit_grey(img.mode):
        return Image.fromarray(_grey_unit_range(img, declared_bits))
    if img.mode in _ALPHA_MODES or "transparency" in img.info:  # "P", "L", "RGB" may name a transparent colour
        background = Image.new("RGBA", img.size, TRANSPARENT_BACKGROUND + (255,))
        return Image.alpha_composite(background, img.convert("RGBA")).convert("RGB")
    return img.convert("RGB")  # "1", "L", "P", "CMYK" (no ICC colour management), "YCbCr", ...


def _centre_square(img, image_size: int):
    """Resize the shorter side of a PIL image to ``image_size`` (bicubic) and crop the centre square."""
    from PIL import Image

    width, height = img.size
    scale = image_size / min(width, height)
    new_w, new_h = max(image_size, round(width * scale)), max(image_size, round(height * scale))
    img = img.resize((new_w, new_h), Image.BICUBIC)  # PIL antialiases when shrinking
    left, top = (new_w - image_size) // 2, (new_h - image_size) // 2
    return img.crop((left, top, left + image_size, top + image_size))


def load_image_file(path: str, image_size: int) -> torch.Tensor:
    """Decode an image file as a float tensor ``(3, image_size, image_size)`` in [0, 1].

    Every PIL mode is mapped to RGB by what its values mean:

    - 8-bit modes (``"1"``, ``"L"``, ``"P"``, ``"RGB"``, ``"CMYK"``, ``"YCbCr"``): PIL's conversion
      to RGB (CMYK without ICC colour management), divided by 255;
    - transparency (``"RGBA"``, ``"LA"``, ``"PA"``, or a transparent palette/grey/RGB colour):
      composited over white (:data:`TRANSPARENT_BACKGROUND`);
    - 16/32-bit integer and float greyscale (``"I;16*"``, ``"I"``, ``"F"``): scaled by the file's
      real bit depth (see :func:`_grey_unit_range`), not clipped, and copied to the 3 channels.

    The EXIF orientation is applied; multi-frame files (GIF, TIFF, ...) give their first frame. The
    shorter side is resized to ``image_size`` (bicubic, antialiased) and the centre cropped.
    A missing or undecodable file raises :class:`DatasetError` naming it.
    """
    from PIL import Image, ImageOps  # local import: PIL is only needed for file-based datasets

    try:
        with Image.open(path) as source:  # positioned at the first frame
            source.draft(None, (image_size, image_size))  # JPEG: decode at a reduced scale, >= the size
            upright = ImageOps.exif_transpose(source)
            img = _centre_square(_rgb_or_unit_grey(upright, _declared_bits(source)), image_size)
    except FileNotFoundError:
        raise DatasetError(f"image file {path!r} does not exist") from None
    except Exception as exc:  # corrupt files make PIL raise OSError, SyntaxError, ValueError, struct.error, ...
        raise DatasetError(f"cannot decode image file {path!r}: {type(exc).__name__}: {exc}") from None
    if img.mode == "RGB":
        array = np.asarray(img, dtype=np.float32) / 255.0
    else:  # unit-range greyscale; bicubic resizing overshoots [0, 1] next to sharp edges
        array = np.repeat(np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)[:, :, None], 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def resize_square(pixels: torch.Tensor, image_size: int) -> torch.Tensor:
    """Resize a batch of square uint8 images ``(n, 3, s, s)`` to ``image_size`` (bilinear, antialiased)."""
    if pixels.shape[-1] == image_size and pixels.shape[-2] == image_size:
        return pixels.float().div_(255.0)
    out = F.interpolate(
        pixels.float(), size=(image_size, image_size), mode="bilinear",
        align_corners=False, antialias=image_size < pixels.shape[-1],
    )
    return out.clamp_(0.0, 255.0).div_(255.0)


# --------------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------------


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
        File-based data: one image path per pair, read lazily with PIL and cached once decoded.
        Exactly one of ``pixels`` and ``image_paths`` must be given.
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
        pair_concepts: Sequence[Iterable[str]] | None = None,
        templates: Sequence[str] = ("a {}.", "a photo of a {}."),
        prompts: Mapping[str, Sequence[str]] | None = None,
        display_names: Mapping[str, str] | None = None,
    ):
        if not isinstance(hierarchy, ConceptHierarchy):
            raise DatasetError(f"hierarchy must be a ConceptHierarchy, got {type(hierarchy).__name__}")
        if not isinstance(image_size, (int, np.integer)) or isinstance(image_size, bool) or image_size < 1:
            raise DatasetError(f"image_size must be a positive integer, got {image_size!r}")
        self.name = str(name)
        self.hierarchy = hierarchy
        self.image_size = int(image_size)
        self.captions: list[str] = [str(c) for c in captions]
        self.labels: list[str] = [str(l) for l in labels]
        n = len(self.captions)
        if len(self.labels) != n:
            raise DatasetError(f"{self.name}: {n} captions but {len(self.labels)} labels; expected one label per caption")

        self.splits = np.asarray(list(splits), dtype=str)
        if self.splits.shape != (n,):
            raise DatasetError(f"{self.name}: {n} captions but {self.splits.size} split entries; expected one per caption")
        bad_splits = sorted(set(self.splits.tolist()) - set(SPLIT_NAMES))
        if bad_splits:
            raise DatasetError(f"{self.name}: unknown split name(s) {_short_list(bad_splits)}; expected 'train' or 'test'")

        unknown = sorted({l for l in self.labels if l not in hierarchy})
        if unknown:
            raise DatasetError(
                f"{self.name}: label(s) {_short_list(unknown)} are not concepts of the hierarchy"
            )
        not_leaves = sorted({l for l in self.labels if not hierarchy.is_leaf(l)})
        if not_leaves:
            raise DatasetError(
                f"{self.name}: label(s) {_short_list(not_leaves)} are not leaf concepts; the label of "
                f"a pair must be a leaf of the hierarchy"
            )

        closure_cache: dict[str, frozenset[str]] = {}

        def closure_of_label(label: str) -> frozenset[str]:
            if label not in closure_cache:
                closure_cache[label] = hierarchy.closure([label])
            return closure_cache[label]

        if pair_concepts is None:
            self.pair_concepts = [closure_of_label(l) for l in self.labels]
        else:
            pair_concepts = list(pair_concepts)
            if len(pair_concepts) != n:
                raise DatasetError(f"{self.name}: {n} captions but {len(pair_concepts)} concept sets; expected one per caption")
            self.pair_concepts = []
            seen: dict[tuple[str, frozenset[str]], frozenset[str]] = {}
            for i, (label, extra) in enumerate(zip(self.labels, pair_concepts)):
                extra = frozenset(extra)
                key = (label, extra)
                if key not in seen:
                    unknown = sorted(c for c in extra if c not in hierarchy)
                    if unknown:
                        raise DatasetError(f"{self.name}: pair {i} names unknown concept(s) {_short_list(unknown)}")
                    seen[key] = closure_of_label(label) | hierarchy.closure(extra)
                self.pair_concepts.append(seen[key])

        if (pixels is None) == (image_paths is None):
            raise DatasetError(f"{self.name}: give exactly one of pixels (a uint8 tensor) or image_paths (one file per pair)")
        self._pixels: torch.Tensor | None = None
        self._image_paths: list[str] | None = None
        self._file_cache: dict[str, torch.Tensor] = {}
        if pixels is not None:
            if not isinstance(pixels, torch.Tensor) or pixels.dtype != torch.uint8 or pixels.ndim != 4 \
                    or pixels.shape[1] != 3 or pixels.shape[2] != pixels.shape[3]:
                raise DatasetError(
                    f"{self.name}: pixels must be a uint8 tensor of shape (n, 3, s, s), got "
                    f"{getattr(pixels, 'dtype', type(pixels).__name__)} {tuple(getattr(pixels, 'shape', ()))}"
                )
            if pixels.shape[0] != n:
                raise DatasetError(f"{self.name}: {n} captions but {pixels.shape[0]} images")
            self._pixels = pixels.contiguous()
        else:
            self._image_paths = [os.fspath(p) for p in image_paths]  # type: ignore[union-attr]
            if len(self._image_paths) != n:
                raise DatasetError(f"{self.name}: {n} captions but {len(self._image_paths)} image paths")

        self.templates: list[str] = [str(t) for t in templates]
        if not self.templates:
            raise DatasetError(f"{self.name}: at least one prompt template is needed")
        for t in self.templates:
            if "{}" not in t:
                raise DatasetError(f"{self.name}: prompt template {t!r} has no '{{}}' placeholder")
        self.explicit_prompts: dict[str, list[str]] = {}
        for concept, texts in (prompts or {}).items():
            if concept not in hierarchy:
                raise DatasetError(f"{self.name}: prompts given for unknown concept {concept!r}")
            texts = [texts] if isinstance(texts, str) else [str(t) for t in texts]
            if not texts:
                raise DatasetError(f"{self.name}: empty prompt list for concept {concept!r}")
            self.explicit_prompts[concept] = texts
        self._display_names = dict(display_names or {})

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

    def _file_pixels(self, i: int) -> torch.Tensor:
        path = self._image_paths[i]  # type: ignore[index]
        cached = self._file_cache.get(path)
        if cached is None:
            # Cached as uint8: a quarter of float32's memory, and 8 bits is what a model input needs.
            cached = load_image_file(path, self.image_size).mul_(255.0).round_().to(torch.uint8)
            self._file_cache[path] = cached
        return cached

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
        batch = torch.stack([self._file_pixels(int(i)) for i in idx])
        return batch.float().div_(255.0)

    def image_path(self, index: int) -> str | None:
        """The file of pair ``index`` for file-based datasets, ``None`` for in-memory data."""
        if self._image_paths is None:
            return None
        return self._image_paths[int(index)]

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
                f"{self.name}: unknown concept(s) {_short_list(unknown)} in the {what} list; known "
                f"concepts: {_short_list(self.hierarchy.concepts(), limit=200)}"
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
                f"{self.name}: forgetting {_short_list(forget)} leaves no {split} pairs to retain; "
                f"choose concepts below the root {self.hierarchy.root!r}"
            )
        return forget_idx, retain_idx
