"""The built-in ``taxonomy`` dataset: a four-level tree of patterned, coloured shapes, some images
showing two of them.

Hierarchy (root ``shape``; 4 families, 12 kinds, 48 leaves; 1 + 4 + 12 + 48 = 65 concepts)::

    shape
    ├── round   ("round shape"):   red_circle, orange_circle, yellow_circle
    ├── boxy    ("boxy shape"):    green_square, teal_square, blue_square
    ├── pointed ("pointed shape"): purple_triangle, pink_triangle, brown_triangle
    └── spiky   ("spiky shape"):   white_star, grey_star, black_star
                 each kind X has 4 leaves: plain_X, striped_X, checked_X, dotted_X

Appearance follows the tree, each level adding one visual property drawn from a pool of its own:

- a *family* fixes the outline (circle, square, triangle, star) and a colour family (warm, cool,
  purple-brown, neutral); no two families share an outline or a colour;
- a *kind* fixes the colour within its family (the three kinds of a family share the outline);
- a *leaf* fixes the surface pattern: plain, striped, checked or dotted, drawn as marks in a darker
  (or, on dark colours, lighter) shade of the object's colour with a period of 0.15 of the image side.

So siblings differ only in texture, cousins in colour, and leaves of different families in outline
and colour family: the class-mean images are closest for siblings, farther for cousins, farthest
across families (``tests/test_taxonomy.py`` checks this ordering). The colours of a family are
its own, so the first two levels form a genuine tree (no attribute recurs across branches); only
the four patterns recur, as words such as "striped" recur across real categories. Concept names
above the kinds ("round", "boxy", ...) are not words of their children's names ("red circle"), so
the text encoder must learn from the images which kinds a family holds.

Each image shows one object (about 75% of pairs) or two objects of different leaves side by side
(about 25%, :data:`TWO_OBJECT_SHARE`). A two-object pair's caption names both ("a striped red
circle and a dotted black star."), its label is the first object's leaf, and its ``pair_concepts``
hold both leaves with their ancestors; the second leaf is drawn uniformly from the other 47.

Every object is named at one of three levels of specificity, chosen independently: the leaf (60%,
"a striped red circle."), its kind (25%, "a red circle.") or its family (15%, "a round shape."), so
MERU's entailment loss sees generic texts whose images are spread over whole subtrees. Caption
styles add "a photo of", "a drawing of" or the background ("on a black background."); the
zero-shot templates are the same styles, so prompts read like captions. Every caption fits the
20-token context of the tiny models.

Nuisances: position, size (radius 0.28-0.42 of the side for one object, 0.17-0.22 for two),
rotation (whole degrees, up to 29 either way, as in ``shapes``), the pattern's phase, colour
jitter, integer pixel noise, and the background (white, grey or black, among those far enough from the colour and
the mark shade of every object on it). Objects are rasterised with numpy on a 2x supersampled grid,
all objects of one outline and pattern at once: the default size (48 leaves x 230 pairs) takes
4-6 s of CPU (measured on a busy 2-core machine; ``shapes``, 7,920 single-object images, 1.5 s).
Everything is drawn from ``numpy.random.default_rng(seed)``: the same seed gives identical data,
on any machine (no per-object libm or BLAS results reach the pixels; see ``_COS``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np
import torch

from .base import ConceptDataset
from .errors import DatasetError
from .hierarchy import ConceptHierarchy
from .registry import register_builtin
from .shapes import _POLYGONS  # the same star, square and triangle outlines as ``shapes``
from .text import with_article

TAXONOMY_ROOT = "shape"


@dataclass(frozen=True)
class Family:
    """A top-level concept: its outline, its colours (one kind each) and how text writes it."""

    outline: str
    colours: tuple[str, ...]
    display: str


#: The families of the tree, in order; each colour belongs to exactly one family.
FAMILIES: dict[str, Family] = {
    "round": Family("circle", ("red", "orange", "yellow"), "round shape"),
    "boxy": Family("square", ("green", "teal", "blue"), "boxy shape"),
    "pointed": Family("triangle", ("purple", "pink", "brown"), "pointed shape"),
    "spiky": Family("star", ("white", "grey", "black"), "spiky shape"),
}

#: Object colours (RGB 0-255): well apart within a family; across families the outline differs too.
OBJECT_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35), "orange": (245, 140, 20), "yellow": (240, 215, 40),
    "green": (35, 165, 55), "teal": (20, 150, 150), "blue": (40, 70, 215),
    "purple": (135, 50, 180), "pink": (245, 120, 190), "brown": (135, 80, 35),
    "white": (240, 240, 240), "grey": (128, 128, 128), "black": (20, 20, 20),
}

#: Background colours (RGB); each image takes one far enough from all of its objects' colours.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (235, 235, 235), "grey": (120, 120, 120), "black": (25, 25, 25),
}

#: Leaf patterns, in the order of every kind's children.
PATTERNS = ("plain", "striped", "checked", "dotted")

#: Zero-shot prompt templates; each one is also a caption style.
TAXONOMY_TEMPLATES = ("a {}.", "a photo of a {}.", "a drawing of a {}.")

#: Share of pairs whose image shows two objects (of different leaves).
TWO_OBJECT_SHARE = 0.25

#: Level at which an object is named in a caption, and how often: leaf, its kind, its family.
NAMING_LEVELS = (0, 1, 2)  # steps up the tree from the leaf
NAMING_SHARES = (0.60, 0.25, 0.15)

# Caption styles; ``{x}`` is the object phrase(s) with article(s), ``{bg}`` the background's.
_CAPTION_STYLES = ("{x}.", "a photo of {x}.", "a drawing of {x}.", "{x} on {bg} background.")

_SUPERSAMPLE = 2
_ONE_OBJECT_RADIUS = (0.28, 0.42)  # fractions of the image side
_TWO_OBJECT_RADIUS = (0.17, 0.22)
_MAX_ROTATION_DEG = 29  # either way, as in ``shapes``: a small network learns upright shapes best
_PATTERN_PERIOD = 0.15  # of the image side: 4.8 pixels at 32, so a stripe or check is 2.4 pixels wide
_MARK_SHADE = 0.45  # dark marks are the colour times this; light marks move it 1 - this of the way to white
_DARK_LUMA = 120.0  # colours darker than this get light marks (120, not 128: green and teal too, whose
#                     dark marks would vanish on a black background)
_MIN_BACKGROUND_DISTANCE = 120.0  # RGB distance between a background and any object on it ...
_MIN_MARK_DISTANCE = 80.0  # ... and its pattern marks (less: marks only need to stay visible)
_COLOUR_JITTER = 10.0
_NOISE_LEVELS = 8  # pixel noise: uniform integers in [-8, 8] (standard deviation 4.9)

# Rotations are whole degrees; their cos/sin come from this table, rounded to multiples of 2**-24,
# so that a last-bit difference between two machines' libm cannot reach the pixels (the pretrained-
# model cache is keyed by a fingerprint of the pixels). Everything else per object is elementwise
# IEEE arithmetic (no libm call, no BLAS product), and the noise is integer, for the same reason.
_ROTATIONS_DEG = np.arange(-_MAX_ROTATION_DEG, _MAX_ROTATION_DEG + 1)
_COS = np.array([round(math.cos(math.radians(d)) * 2**24) / 2**24 for d in _ROTATIONS_DEG], dtype=np.float32)
_SIN = np.array([round(math.sin(math.radians(d)) * 2**24) / 2**24 for d in _ROTATIONS_DEG], dtype=np.float32)


def kind_name(colour: str, family: str) -> str:
    """The kind (middle-level concept) of ``colour`` in ``family``: ``"red_circle"``."""
    return f"{colour}_{FAMILIES[family].outline}"


def leaf_name(pattern: str, colour: str, family: str) -> str:
    """The leaf of ``pattern`` on kind ``colour`` x ``family``: ``"striped_red_circle"``."""
    return f"{pattern}_{kind_name(colour, family)}"


def taxonomy_hierarchy() -> ConceptHierarchy:
    """The concept tree: ``shape -> family -> kind -> leaf`` (4 levels counting the root)."""
    parent: dict[str, str | None] = {TAXONOMY_ROOT: None}
    for family, spec in FAMILIES.items():
        parent[family] = TAXONOMY_ROOT
        for colour in spec.colours:
            parent[kind_name(colour, family)] = family
            for pattern in PATTERNS:
                parent[leaf_name(pattern, colour, family)] = kind_name(colour, family)
    return ConceptHierarchy(parent)


@dataclass(frozen=True)
class Leaf:
    """What a leaf looks like: its family, colour and pattern."""

    name: str
    family: str
    colour: str
    pattern: str


def taxonomy_leaves() -> list[Leaf]:
    """Every leaf, in tree order (family, then colour, then pattern)."""
    return [Leaf(leaf_name(p, c, f), f, c, p) for f, spec in FAMILIES.items() for c in spec.colours for p in PATTERNS]


def taxonomy_display_names() -> dict[str, str]:
    """How inner concepts are written where the name alone would read oddly (families)."""
    return {family: spec.display for family, spec in FAMILIES.items()}


# --------------------------------------------------------------------------------------------------
# Rasterisation. Local coordinates: (u, v) in units of the object's radius (the outline fits the
# unit disc), (p, q) in units of the pattern period; both rotate with the object.
# --------------------------------------------------------------------------------------------------

def _inside_circle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u * u + v * v <= 0.9**2


def _inside_polygon(vertices: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Even-odd rule coverage test of a closed polygon (vertices ``(k, 2)`` in the unit disc)."""

    def inside(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        covered = np.zeros(u.shape, dtype=bool)
        x1, y1 = vertices[-1]
        for x2, y2 in vertices:
            if y1 != y2:
                covered ^= ((v < y1) != (v < y2)) & (u < x1 + (v - y1) * ((x2 - x1) / (y2 - y1)))
            x1, y1 = x2, y2
        return covered

    return inside


#: Outline -> coverage test at local coordinates ``(u, v)``.
OUTLINES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "circle": _inside_circle,
    "square": _inside_polygon(_POLYGONS["square"]),
    "triangle": _inside_polygon(_POLYGONS["triangle"]),
    "star": _inside_polygon(_POLYGONS["star"]),
}


def _stripes(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return np.floor(2.0 * q) % 2 == 1


def _checks(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return (np.floor(2.0 * p) + np.floor(2.0 * q)) % 2 == 1


def _dots(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return (p - np.floor(p) - 0.5) ** 2 + (q - np.floor(q) - 0.5) ** 2 <= 0.3**2


#: Pattern -> where its marks are, at pattern coordinates ``(p, q)`` (one period = 1).
PATTERN_MARKS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "plain": lambda p, q: np.zeros(p.shape, dtype=bool),
    "striped": _stripes,
    "checked": _checks,
    "dotted": _dots,
}


@dataclass
class Objects:
    """``n`` objects to draw: geometry in pixels, every array of length ``n`` (``centre`` ``(n, 2)``)."""

    leaf: np.ndarray  # int, index into taxonomy_leaves()
    centre: np.ndarray  # (n, 2) x, y
    radius: np.ndarray
    angle_deg: np.ndarray  # int, in [-_MAX_ROTATION_DEG, _MAX_ROTATION_DEG]
    phase: np.ndarray  # (n, 2) pattern offset, in periods

    def take(self, rows: np.ndarray) -> "Objects":
        """The objects ``rows`` (an index array) as an :class:`Objects` of their own."""
        return Objects(*(getattr(self, f.name)[rows] for f in fields(self)))


def _coverage(outline: str, pattern: str, objects: Objects, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Antialiased ``(body, marks)``, each ``(n, s, s)`` in [0, 1]: the share of every pixel covered
    by the object, and by the object's pattern marks (``marks <= body``)."""
    fine = image_size * _SUPERSAMPLE
    axis = (np.arange(fine, dtype=np.float32) + 0.5) / _SUPERSAMPLE
    dx = axis[None, None, :] - objects.centre[:, 0, None, None].astype(np.float32)  # (n, 1, fine)
    dy = axis[None, :, None] - objects.centre[:, 1, None, None].astype(np.float32)  # (n, fine, 1)
    cos = _COS[objects.angle_deg + _MAX_ROTATION_DEG][:, None, None]
    sin = _SIN[objects.angle_deg + _MAX_ROTATION_DEG][:, None, None]
    along, up = dx * cos + dy * sin, dx * sin - dy * cos  # image rows grow downwards; ``up`` points up
    radius = objects.radius.astype(np.float32)[:, None, None]
    body = OUTLINES[outline](along / radius, up / radius)
    period = np.float32(_PATTERN_PERIOD * image_size)
    p = along / period + objects.phase[:, 0, None, None].astype(np.float32)
    q = up / period + objects.phase[:, 1, None, None].astype(np.float32)
    marks = body & PATTERN_MARKS[pattern](p, q)
    return _downsample(body), _downsample(marks)


def _downsample(mask: np.ndarray) -> np.ndarray:
    """Share of covered sub-pixels, ``(n, s * k, s * k)`` bool -> ``(n, s, s)`` float32 (``k`` the
    supersampling factor). Summing the ``k * k`` strided views is several times faster than a mean
    over the axes of a reshaped array."""
    count = sum(mask[:, i::_SUPERSAMPLE, j::_SUPERSAMPLE].astype(np.uint8)
                for i in range(_SUPERSAMPLE) for j in range(_SUPERSAMPLE))
    return count.astype(np.float32) / np.float32(_SUPERSAMPLE**2)


def _mark_colours(colours: np.ndarray) -> np.ndarray:
    """The shade pattern marks are drawn in, ``(n, 3)``: darker on light colours, lighter on dark ones
    (so that marks show on black and white objects alike)."""
    luma = 0.299 * colours[:, 0] + 0.587 * colours[:, 1] + 0.114 * colours[:, 2]  # written out: no BLAS
    lighter = colours + (255.0 - colours) * (1.0 - _MARK_SHADE)
    return np.where((luma < _DARK_LUMA)[:, None], lighter, colours * _MARK_SHADE)


def _paint(canvas: np.ndarray, rows: np.ndarray, body: np.ndarray, marks: np.ndarray, colours: np.ndarray) -> None:
    """Draw objects over ``canvas[rows]`` (``(n_images, 3, s, s)`` float), in place:
    ``pixel = (1 - body) * pixel + (body - marks) * colour + marks * mark_colour``."""
    shade = _mark_colours(colours)
    body, marks = body[:, None], marks[:, None]
    canvas[rows] = ((1.0 - body) * canvas[rows] + (body - marks) * colours[:, :, None, None]
                    + marks * shade[:, :, None, None])


def _draw(canvas: np.ndarray, image_of: np.ndarray, objects: Objects, colours: np.ndarray, image_size: int) -> None:
    """Draw every object on its image ``canvas[image_of[k]]``, grouped by outline and pattern (one
    vectorised rasterisation per group). ``image_of`` must not repeat an image: a repeated index in
    the in-place update would keep only one of its objects (draw a second object in a second call)."""
    leaves = taxonomy_leaves()
    group_of = np.array([f"{FAMILIES[leaf.family].outline} {leaf.pattern}" for leaf in leaves])[objects.leaf]
    for group in np.unique(group_of):
        rows = np.flatnonzero(group_of == group)
        outline, pattern = group.split()
        body, marks = _coverage(outline, pattern, objects.take(rows), image_size)
        _paint(canvas, image_of[rows], body, marks, colours[rows])


# --------------------------------------------------------------------------------------------------
# Layout: where objects go, which images show two, which background each image gets.
# --------------------------------------------------------------------------------------------------

def _one_object_layout(rng: np.random.Generator, n: int, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(centre (n, 2), radius (n,))`` of lone objects, anywhere they fit."""
    radius = rng.uniform(*_ONE_OBJECT_RADIUS, n) * image_size
    margin = radius + 1.0
    centre = margin[:, None] + rng.random((n, 2)) * (image_size - 2 * margin)[:, None]
    return centre, radius


def _two_object_layout(rng: np.random.Generator, n: int, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(centre (n, 2, 2), radius (n, 2))`` of object pairs: one in each half of the image (left and
    right, or top and bottom; which object takes which half is random), never overlapping."""
    radius = rng.uniform(*_TWO_OBJECT_RADIUS, (n, 2)) * image_size
    margin = radius + 1.0
    half = image_size / 2.0
    # Along the split axis each object stays inside its half; across it, anywhere it fits.
    along = margin + rng.random((n, 2)) * (half - 2 * margin)
    along[:, 1] += half
    across = margin + rng.random((n, 2)) * (image_size - 2 * margin)
    swap = rng.random(n) < 0.5
    along[swap] = along[swap, ::-1]
    horizontal = (rng.random(n) < 0.5)[:, None, None]
    centre = np.where(horizontal, np.stack([along, across], axis=2), np.stack([across, along], axis=2))
    return centre, radius


def _background_gaps(colour: str) -> np.ndarray:
    """How far each background (in :data:`BACKGROUNDS` order) is from an object of ``colour``: the
    smaller of its RGB distance to the colour and to the colour's mark shade over the margin that
    marks need (:data:`_MIN_MARK_DISTANCE`), in units of :data:`_MIN_BACKGROUND_DISTANCE`. Marks
    count for plain leaves too, so that a background never tells the pattern of a kind."""
    rgb = np.array(OBJECT_COLOURS[colour], dtype=np.float32)
    mark = _mark_colours(rgb[None])[0]
    backgrounds = np.array(list(BACKGROUNDS.values()), dtype=np.float32)
    return np.minimum(np.linalg.norm(backgrounds - rgb, axis=1) / _MIN_BACKGROUND_DISTANCE,
                      np.linalg.norm(backgrounds - mark, axis=1) / _MIN_MARK_DISTANCE)


def _backgrounds(rng: np.random.Generator, object_colours: list[tuple[str, ...]]) -> list[str]:
    """A background for each image: uniformly among those far enough from every object on it (a gap
    of at least 1 in :func:`_background_gaps`), else the one with the largest smallest gap."""
    names = list(BACKGROUNDS)
    gaps = {colour: _background_gaps(colour) for colour in OBJECT_COLOURS}
    chosen = []
    for colours in object_colours:
        gap = np.min([gaps[c] for c in colours], axis=0)
        allowed = np.flatnonzero(gap >= 1.0)
        chosen.append(names[allowed[rng.integers(allowed.size)]] if allowed.size else names[int(np.argmax(gap))])
    return chosen


# --------------------------------------------------------------------------------------------------
# Captions.
# --------------------------------------------------------------------------------------------------

def _object_phrase(rng: np.random.Generator, leaf: Leaf, hierarchy: ConceptHierarchy,
                   display: dict[str, str]) -> str:
    """The leaf, its kind or its family (:data:`NAMING_SHARES`), with its article: ``"a red circle"``."""
    steps_up = rng.choice(NAMING_LEVELS, p=NAMING_SHARES)
    concept = ([leaf.name] + hierarchy.ancestors(leaf.name))[steps_up]
    return with_article(display.get(concept, concept.replace("_", " ")))


def _caption(rng: np.random.Generator, leaves: list[Leaf], background: str, hierarchy: ConceptHierarchy,
             display: dict[str, str]) -> str:
    """One caption naming every object of an image, in order: ``"a photo of a red circle and a
    dotted black star."``."""
    phrase = " and ".join(_object_phrase(rng, leaf, hierarchy, display) for leaf in leaves)
    style = _CAPTION_STYLES[rng.integers(len(_CAPTION_STYLES))]
    return style.format(x=phrase, bg=with_article(background))


# --------------------------------------------------------------------------------------------------
# The dataset.
# --------------------------------------------------------------------------------------------------

def _check_options(**options) -> None:
    """Counts must be integers at their minimum or above, ``two_object_share`` a share in [0, 1]."""
    minimum = {"per_leaf_train": 1, "per_leaf_test": 0, "image_size": 16}
    for name, low in minimum.items():
        value = options[name]
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise DatasetError(f"make_taxonomy: {name} must be an integer >= {low}, got {value!r}")
    share = options["two_object_share"]
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 <= share <= 1.0:
        raise DatasetError(f"make_taxonomy: two_object_share must be a number in [0, 1], got {share!r}")


def _pairs_per_leaf(rng: np.random.Generator, n_leaves: int, per_leaf_train: int, per_leaf_test: int,
                    two_object_share: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(label, second, is_test)`` per pair plus the pair order: every leaf labels exactly
    ``per_leaf_train + per_leaf_test`` pairs, split exactly so (a stratified split), and
    ``round(two_object_share * per_leaf)`` of them show a second object (``second = -1`` when none),
    spread over both splits at random."""
    per_leaf = per_leaf_train + per_leaf_test
    label = np.repeat(np.arange(n_leaves), per_leaf)
    is_test = np.tile(np.arange(per_leaf) >= per_leaf_train, n_leaves)
    has_second = np.concatenate([rng.permutation(per_leaf) < round(two_object_share * per_leaf) for _ in range(n_leaves)])
    # A uniform other leaf: draw among n - 1 and skip the label.
    other = rng.integers(n_leaves - 1, size=label.size)
    second = np.where(has_second, other + (other >= label), -1)
    return label, second, is_test, rng.permutation(label.size)


@dataclass
class Layer:
    """Objects drawn in one pass, at most one per image: ``objects`` go on images ``image_of``."""

    objects: Objects
    image_of: np.ndarray


def _place_objects(rng: np.random.Generator, label: np.ndarray, second: np.ndarray, image_size: int) -> list[Layer]:
    """Two layers: every image's first object (leaf ``label``), then the second object of the
    two-object images (``second >= 0``), with position, size, rotation and pattern phase."""
    one, two = np.flatnonzero(second < 0), np.flatnonzero(second >= 0)
    centre_one, radius_one = _one_object_layout(rng, one.size, image_size)
    centre_two, radius_two = _two_object_layout(rng, two.size, image_size)
    first_image = np.concatenate([one, two])
    first = (label[first_image], np.concatenate([centre_one, centre_two[:, 0]]),
             np.concatenate([radius_one, radius_two[:, 0]]))
    rest = (second[two], centre_two[:, 1], radius_two[:, 1])
    layers = []
    for (leaf, centre, radius), image_of in ((first, first_image), (rest, two)):
        angle = rng.integers(-_MAX_ROTATION_DEG, _MAX_ROTATION_DEG + 1, image_of.size)
        layers.append(Layer(Objects(leaf, centre, radius, angle, rng.random((image_of.size, 2))), image_of))
    return layers


def _render_images(rng: np.random.Generator, layers: list[Layer], background: list[str], image_size: int) -> torch.Tensor:
    """The images, uint8 ``(n, 3, s, s)``: each background, its objects layer by layer (colours
    jittered), then pixel noise."""
    leaves = taxonomy_leaves()
    canvas = np.array([BACKGROUNDS[b] for b in background], dtype=np.float32)[:, :, None, None]
    canvas = np.ascontiguousarray(np.broadcast_to(canvas, (len(background), 3, image_size, image_size)))
    for layer in layers:
        colour = np.array([OBJECT_COLOURS[leaves[k].colour] for k in layer.objects.leaf], dtype=np.float32).reshape(-1, 3)
        colour += rng.uniform(-_COLOUR_JITTER, _COLOUR_JITTER, colour.shape).astype(np.float32)
        _draw(canvas, layer.image_of, layer.objects, colour, image_size)
    canvas += rng.integers(-_NOISE_LEVELS, _NOISE_LEVELS + 1, canvas.shape, dtype=np.int8)
    return torch.from_numpy(np.clip(np.rint(canvas), 0, 255).astype(np.uint8))


@register_builtin("taxonomy")
def make_taxonomy(seed: int = 0, image_size: int = 32, *, per_leaf_train: int = 200, per_leaf_test: int = 30,
                  two_object_share: float = TWO_OBJECT_SHARE) -> ConceptDataset:
    """Generate the ``taxonomy`` dataset: 48 leaves x ``per_leaf_train + per_leaf_test`` pairs.

    Images ``(n, 3, image_size, image_size)`` uint8; deterministic in ``seed``. Pairs are shuffled
    (consecutive indices mix classes); use :meth:`ConceptDataset.indices` for the split.
    """
    _check_options(per_leaf_train=per_leaf_train, per_leaf_test=per_leaf_test, image_size=image_size,
                   two_object_share=two_object_share)
    rng = np.random.default_rng(seed)
    leaves, hierarchy, display = taxonomy_leaves(), taxonomy_hierarchy(), taxonomy_display_names()
    label, second, is_test, order = _pairs_per_leaf(rng, len(leaves), per_leaf_train, per_leaf_test, two_object_share)
    label, second, is_test = label[order], second[order], is_test[order]
    shown = [(leaves[a],) if b < 0 else (leaves[a], leaves[b]) for a, b in zip(label, second)]
    background = _backgrounds(rng, [tuple(leaf.colour for leaf in pair) for pair in shown])
    pixels = _render_images(rng, _place_objects(rng, label, second, image_size), background, image_size)
    return ConceptDataset(
        name="taxonomy",
        hierarchy=hierarchy,
        captions=[_caption(rng, list(pair), bg, hierarchy, display) for pair, bg in zip(shown, background)],
        labels=[pair[0].name for pair in shown],
        splits=np.where(is_test, "test", "train"),
        image_size=image_size,
        pixels=pixels,
        pair_concepts=[[leaf.name for leaf in pair] for pair in shown],
        templates=TAXONOMY_TEMPLATES,
        display_names=display,
    )
