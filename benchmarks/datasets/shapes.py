"""The built-in ``shapes`` dataset: procedurally drawn coloured shapes with multi-level captions.

Hierarchy (root ``shape``; 3 super-concepts, 12 leaves)::

    shape
    ├── polygon: triangle, square, rectangle, trapezoid
    ├── curved:  circle, ellipse, ring, crescent      (written "curved shape" in text)
    └── symbol:  star, cross, arrow, heart

Each image shows one shape with nuisance variation: position, size, rotation (up to about 29
degrees either way, so that a small model can learn from a few hundred images per leaf), foreground colour
and background colour (two different, well separated colours of :data:`COLOURS`), a little colour
jitter and light pixel noise. Shapes are rasterised with numpy on a 2x supersampled grid (so edges
are antialiased), all images of a leaf at once; the whole default dataset takes about a second.

Captions come at two levels of specificity: about 75% name the leaf ("a small red triangle.",
"a triangle on a blue background.") and about 25% only the super-concept ("a red polygon.").
The zero-shot templates ("a {}.", "a photo of a {}.", ...) are themselves caption styles, so a
text encoder trained from scratch on the captions understands the prompts.

Everything is drawn from ``numpy.random.default_rng(seed)``: the same seed gives bit-identical
images and identical captions.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import ConceptDataset
from .errors import DatasetError
from .hierarchy import ConceptHierarchy
from .registry import register_builtin
from .text import with_article

#: Named colours (RGB, 0-255) used for foregrounds and backgrounds.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (30, 160, 60),
    "blue": (35, 75, 215),
    "yellow": (240, 215, 30),
    "purple": (135, 55, 175),
    "orange": (245, 135, 20),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}

#: Super-concept -> leaves of the shapes hierarchy.
SHAPE_GROUPS: dict[str, tuple[str, ...]] = {
    "polygon": ("triangle", "square", "rectangle", "trapezoid"),
    "curved": ("circle", "ellipse", "ring", "crescent"),
    "symbol": ("star", "cross", "arrow", "heart"),
}

SHAPES_ROOT = "shape"

#: How concepts are written in captions and prompts where the name alone would read oddly.
SHAPES_DISPLAY_NAMES = {"curved": "curved shape"}

#: Zero-shot prompt templates; each one is also a caption style.
SHAPES_TEMPLATES = ("a {}.", "a photo of a {}.", "a drawing of a {}.", "a small {}.", "a large {}.")

#: Share of captions that name only the super-concept instead of the leaf.
PARENT_CAPTION_SHARE = 0.25

# Shape radius as a fraction of the image side, and the split between "small" and "large".
_MIN_RADIUS, _MAX_RADIUS = 0.28, 0.45
_SIZE_THRESHOLD = 0.5 * (_MIN_RADIUS + _MAX_RADIUS)
_SUPERSAMPLE = 2
_MIN_COLOUR_DISTANCE = 140.0  # foreground/background pairs closer than this (RGB) are not used
_COLOUR_JITTER = 12.0
_NOISE_STD = 5.0

# Caption styles; ``{x}`` is "a"/"an" + the noun phrase, ``{bg}`` the background with its article.
_CAPTION_STYLES = (
    ("plain", "{x}."),
    ("plain", "a photo of {x}."),
    ("plain", "a drawing of {x}."),
    ("size", "{x}."),
    ("colour", "{x}."),
    ("size colour", "{x}."),
    ("colour", "{x} on {bg} background."),
    ("plain", "{x} on {bg} background."),
    ("colour", "a photo of {x}."),
    ("size colour", "a drawing of {x} on {bg} background."),
)


def shapes_hierarchy() -> ConceptHierarchy:
    """The concept tree of the shapes dataset."""
    parent: dict[str, str | None] = {SHAPES_ROOT: None}
    for group, leaves in SHAPE_GROUPS.items():
        parent[group] = SHAPES_ROOT
        for leaf in leaves:
            parent[leaf] = group
    return ConceptHierarchy(parent)


# --------------------------------------------------------------------------------------------------
# Rasterisation. Shapes live in local coordinates (u right, v up) and fit in the unit disc.
# --------------------------------------------------------------------------------------------------


def _regular_polygon(sides: int, radius: float = 1.0, start_deg: float = 90.0) -> np.ndarray:
    angles = np.deg2rad(start_deg + 360.0 * np.arange(sides) / sides)
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)


def _star(points: int = 5, outer: float = 1.0, inner: float = 0.42) -> np.ndarray:
    angles = np.deg2rad(90.0 + 180.0 * np.arange(2 * points) / points)
    radii = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


_CROSS = np.array(
    [(0.3, 0.3), (0.3, 1.0), (-0.3, 1.0), (-0.3, 0.3), (-1.0, 0.3), (-1.0, -0.3),
     (-0.3, -0.3), (-0.3, -1.0), (0.3, -1.0), (0.3, -0.3), (1.0, -0.3), (1.0, 0.3)]
) * 0.95
_ARROW = np.array(
    [(-1.0, -0.2), (0.1, -0.2), (0.1, -0.6), (1.0, 0.0), (0.1, 0.6), (0.1, 0.2), (-1.0, 0.2)]
)

# Pentagons and hexagons were tried and dropped: at 32 pixels a small network confuses them with
# each other and with circles.
_POLYGONS: dict[str, np.ndarray] = {
    "triangle": _regular_polygon(3, 1.0),
    "square": _regular_polygon(4, 1.0, 45.0),
    "rectangle": np.array([(1.0, 0.5), (-1.0, 0.5), (-1.0, -0.5), (1.0, -0.5)]) * 0.95,
    "trapezoid": np.array([(1.0, -0.6), (0.45, 0.6), (-0.45, 0.6), (-1.0, -0.6)]) * 0.95,
    "star": _star(),
    "cross": _CROSS,
    "arrow": _ARROW,
}

# Largest rotation either way (radians, about 29 degrees). Shapes stay roughly upright: with free
# rotation a small network trained from scratch on a few hundred images per leaf generalises far worse.
_MAX_ROTATION = 0.5


def _inside_polygon(u: np.ndarray, v: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Even-odd rule: whether each point ``(u, v)`` lies inside the closed polygon."""
    inside = np.zeros(u.shape, dtype=bool)
    x1, y1 = vertices[-1]
    for x2, y2 in vertices:
        if y1 != y2:
            crosses = (v < y1) != (v < y2)
            x_at_v = x1 + (v - y1) * ((x2 - x1) / (y2 - y1))
            inside ^= crosses & (u < x_at_v)
        x1, y1 = x2, y2
    return inside


def _inside_shape(leaf: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean coverage of ``leaf`` at local coordinates ``(u, v)``."""
    if leaf in _POLYGONS:
        return _inside_polygon(u, v, _POLYGONS[leaf])
    r2 = u * u + v * v
    if leaf == "circle":
        return r2 <= 0.9**2
    if leaf == "ellipse":
        return (u / 1.0) ** 2 + (v / 0.5) ** 2 <= 1.0
    if leaf == "ring":
        return (r2 <= 0.95**2) & (r2 >= 0.55**2)
    if leaf == "crescent":
        return (r2 <= 0.95**2) & ((u - 0.45) ** 2 + v * v > 0.8**2)
    if leaf == "heart":
        x, y = u * 1.25, v * 1.25 + 0.15
        return (x * x + y * y - 1.0) ** 3 - x * x * y**3 <= 0.0
    raise DatasetError(f"no drawing rule for shape {leaf!r}")


def _render(leaf: str, centre: np.ndarray, radius: np.ndarray, angle: np.ndarray,
            image_size: int) -> np.ndarray:
    """Antialiased coverage ``(n, image_size, image_size)`` in [0, 1] of ``n`` copies of ``leaf``."""
    fine = image_size * _SUPERSAMPLE
    axis = ((np.arange(fine, dtype=np.float32) + 0.5) / _SUPERSAMPLE)
    dx = axis[None, None, :] - centre[:, 0, None, None].astype(np.float32)   # (n, 1, fine)
    dy = axis[None, :, None] - centre[:, 1, None, None].astype(np.float32)   # (n, fine, 1)
    cos = (np.cos(angle) / radius).astype(np.float32)[:, None, None]
    sin = (np.sin(angle) / radius).astype(np.float32)[:, None, None]
    u = dx * cos + dy * sin          # rotate into the shape frame and scale to the unit disc
    v = dx * sin - dy * cos          # image rows grow downwards; v points up
    covered = _inside_shape(leaf, u, v).astype(np.float32)
    n = covered.shape[0]
    return covered.reshape(n, image_size, _SUPERSAMPLE, image_size, _SUPERSAMPLE).mean(axis=(2, 4))


def _colour_pairs() -> list[tuple[str, str]]:
    """(foreground, background) pairs of clearly different colours."""
    names = list(COLOURS)
    pairs = []
    for fg in names:
        for bg in names:
            if fg != bg and np.linalg.norm(np.subtract(COLOURS[fg], COLOURS[bg])) >= _MIN_COLOUR_DISTANCE:
                pairs.append((fg, bg))
    return pairs


def _caption(rng: np.random.Generator, noun: str, colour: str, background: str, size: str) -> str:
    kind, pattern = _CAPTION_STYLES[rng.integers(len(_CAPTION_STYLES))]
    words = []
    if "size" in kind:
        words.append(size)
    if "colour" in kind:
        words.append(colour)
    words.append(noun)
    return pattern.format(x=with_article(" ".join(words)), bg=with_article(background))


@register_builtin("shapes")
def make_shapes(seed: int = 0, per_leaf_train: int = 600, per_leaf_test: int = 60,
                image_size: int = 32) -> ConceptDataset:
    """Generate the ``shapes`` dataset (12 leaves x ``per_leaf_train + per_leaf_test`` pairs).

    Deterministic in ``seed``. Pairs are shuffled (so consecutive indices mix classes); use
    :meth:`ConceptDataset.indices` for the train/test split.
    """
    for arg, value, low in (("per_leaf_train", per_leaf_train, 1), ("per_leaf_test", per_leaf_test, 0),
                            ("image_size", image_size, 8)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise DatasetError(f"make_shapes: {arg} must be an integer >= {low}, got {value!r}")
    rng = np.random.default_rng(seed)
    hierarchy = shapes_hierarchy()
    colour_pairs = _colour_pairs()
    palette = np.array([COLOURS[c] for c in COLOURS], dtype=np.float32)
    colour_index = {c: k for k, c in enumerate(COLOURS)}
    per_leaf = per_leaf_train + per_leaf_test

    all_pixels, captions, labels, splits = [], [], [], []
    for group, leaves in SHAPE_GROUPS.items():
        group_noun = SHAPES_DISPLAY_NAMES.get(group, group)
        for leaf in leaves:
            radius_frac = rng.uniform(_MIN_RADIUS, _MAX_RADIUS, per_leaf)
            radius = radius_frac * image_size
            margin = radius + 1.0
            centre = margin[:, None] + rng.random((per_leaf, 2)) * (image_size - 2 * margin)[:, None]
            angle = rng.uniform(-_MAX_ROTATION, _MAX_ROTATION, per_leaf)
            pair_choice = rng.integers(len(colour_pairs), size=per_leaf)
            alpha = _render(leaf, centre, radius, angle, image_size)[:, None]  # (n, 1, s, s)

            fg_names = [colour_pairs[k][0] for k in pair_choice]
            bg_names = [colour_pairs[k][1] for k in pair_choice]
            fg = palette[[colour_index[c] for c in fg_names]]
            bg = palette[[colour_index[c] for c in bg_names]]
            fg = fg + rng.uniform(-_COLOUR_JITTER, _COLOUR_JITTER, fg.shape).astype(np.float32)
            bg = bg + rng.uniform(-_COLOUR_JITTER, _COLOUR_JITTER, bg.shape).astype(np.float32)
            image = bg[:, :, None, None] + (fg - bg)[:, :, None, None] * alpha
            image += rng.normal(0.0, _NOISE_STD, image.shape).astype(np.float32)
            all_pixels.append(np.clip(np.rint(image), 0, 255).astype(np.uint8))

            parent_level = np.zeros(per_leaf, dtype=bool)
            parent_level[rng.permutation(per_leaf)[: round(PARENT_CAPTION_SHARE * per_leaf)]] = True
            for k in range(per_leaf):
                size_word = "small" if radius_frac[k] < _SIZE_THRESHOLD else "large"
                noun = group_noun if parent_level[k] else leaf
                captions.append(_caption(rng, noun, fg_names[k], bg_names[k], size_word))
            labels.extend([leaf] * per_leaf)
            splits.extend(["train"] * per_leaf_train + ["test"] * per_leaf_test)

    order = rng.permutation(len(captions))
    pixels = torch.from_numpy(np.concatenate(all_pixels)[order])
    return ConceptDataset(
        name="shapes",
        hierarchy=hierarchy,
        captions=[captions[i] for i in order],
        labels=[labels[i] for i in order],
        splits=np.asarray(splits)[order],
        image_size=image_size,
        pixels=pixels,
        templates=SHAPES_TEMPLATES,
        display_names=SHAPES_DISPLAY_NAMES,
    )
