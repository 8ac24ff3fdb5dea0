"""The built-in ``glyphs`` dataset: rendered letters in upper and lower case, in several type styles.

Hierarchy (root ``glyph``; 16 leaves, consonants one level deeper)::

    glyph
    ├── vowel:     letter_a, letter_e, letter_i, letter_o, letter_u
    └── consonant
        ├── stop:      letter_b, letter_d, letter_g, letter_k, letter_p, letter_t  ("stop consonant")
        └── fricative: letter_f, letter_h, letter_s, letter_v, letter_z           ("fricative consonant")

A leaf is one letter, drawn as its capital or its small form with equal probability (``A`` or
``a``: some pairs look alike, ``O``/``o``, others do not, ``G``/``g``). Leaves are written "letter
a" in text.

Every glyph comes from Pillow's bundled font (``ImageFont.load_default(size=...)``, Aileron Regular;
no system font is read), so the same seed gives the same bytes on every machine with the same
Pillow wheel. "Several fonts" are synthetic type styles (:data:`GLYPH_STYLES`): bold (a stroke
around the outline), italic (a horizontal shear), condensed and wide (horizontal scaling). On top
come rotation (integer degrees up to ±30), size and position jitter, ink and background colours
(two well separated colours of :data:`shapes.COLOURS` with a little jitter) and integer pixel noise.

Rendering is cheap: each (letter, case, weight) mask is rasterised once per size and kept in
memory; every pair then samples its mask through its own affine map (bilinear, on a grid
:data:`SUPERSAMPLE` times finer than ``image_size``, box-averaged down), vectorised with numpy.
Per-pair geometry uses only elementwise numpy arithmetic (no libm call on per-pair values, no BLAS
product), so that the pixels do not depend on which vector unit or BLAS kernel a CPU picks.

Captions: 75% of each letter's captions name the letter ("an uppercase letter a.", "the letter g
in bold.", "a red letter b on a black background."), 25% one of its groups below the root ("a
vowel.", "a stop consonant.", "a consonant."). The zero-shot templates are themselves caption styles.

Exactly half of each letter's pairs are capitals; the split is stratified: exactly
``per_leaf_test`` test pairs per letter, chosen by ``seed`` like everything else.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from .base import ConceptDataset
from .errors import DatasetError
from .hierarchy import ConceptHierarchy
from .registry import register_builtin
from .shapes import COLOURS
from .text import with_article

GLYPHS_ROOT = "glyph"

#: Group -> its parent (the inner nodes of the hierarchy below the root).
GLYPH_GROUP_PARENTS: dict[str, str] = {"vowel": GLYPHS_ROOT, "consonant": GLYPHS_ROOT,
                                       "stop": "consonant", "fricative": "consonant"}

#: Group -> the letters it holds (each letter is one leaf, ``letter_<x>``). Letters that look like
#: another one here at 32 pixels (l next to I, n next to u, q next to d) are left out.
GLYPH_LETTERS: dict[str, str] = {"vowel": "aeiou", "stop": "bdgkpt", "fricative": "fhsvz"}

#: How concepts are written in captions and prompts where the name alone would read oddly.
GLYPHS_DISPLAY_NAMES = {"stop": "stop consonant", "fricative": "fricative consonant"}

#: Zero-shot prompt templates; each one is also a caption style.
GLYPHS_TEMPLATES = ("a {}.", "a photo of a {}.", "the {}.", "a printed {}.")

#: Share of captions that name a group of the letter instead of the letter.
PARENT_CAPTION_SHARE = 0.25

#: Side of the rendering grid relative to ``image_size`` (box-averaged down: antialiased edges).
#: 3 looked no better at 32 pixels and costs twice the time.
SUPERSAMPLE = 2


@dataclass(frozen=True)
class GlyphStyle:
    """A synthetic type style: how a glyph mask is drawn and shaped before rotation.

    ``shear`` slants the glyph (``x += shear * height above its centre``, italic); ``x_scale``
    stretches it horizontally (condensed < 1 < wide); ``phrase`` is how captions say it.
    """

    bold: bool
    shear: float
    x_scale: float
    phrase: str


#: The "fonts": style name -> style. Each pair draws one uniformly.
GLYPH_STYLES: dict[str, GlyphStyle] = {
    "regular": GlyphStyle(bold=False, shear=0.0, x_scale=1.0, phrase="in regular type"),
    "bold": GlyphStyle(bold=True, shear=0.0, x_scale=1.0, phrase="in bold"),
    "italic": GlyphStyle(bold=False, shear=0.3, x_scale=1.0, phrase="in italics"),
    "bold italic": GlyphStyle(bold=True, shear=0.3, x_scale=1.0, phrase="in bold italics"),
    "condensed": GlyphStyle(bold=False, shear=0.0, x_scale=0.7, phrase="in condensed type"),
    "wide": GlyphStyle(bold=False, shear=0.0, x_scale=1.35, phrase="in wide type"),
}

_MAX_ROTATION_DEG = 30
# Capital height as a share of the image side (before shrinking a glyph that would not fit).
_MIN_CAP_HEIGHT, _MAX_CAP_HEIGHT = 0.45, 0.7
_SHEAR_JITTER, _X_SCALE_JITTER = 0.05, 0.05
_BOLD_STROKE = 0.035  # stroke width added around the outline, as a share of the font size
_MARGIN = 1.0  # output pixels kept free at every edge
_MIN_COLOUR_DISTANCE = 140.0
_COLOUR_JITTER = 12.0
_NOISE = 6  # integer pixel noise, uniform in [-_NOISE, _NOISE]
_CHUNK = 256  # pairs rendered at once (bounds the sampling grids' memory)
_MIN_IMAGE_SIZE = 16  # below this a small letter is a few pixels of blur

# Caption styles: which modifiers the phrase carries, and the sentence. ``{x}`` is the phrase with
# its article, ``{p}`` without, ``{style}`` the style phrase, ``{bg}`` the background colour with
# its article. The first four are the zero-shot templates.
_CAPTION_STYLES = (
    ((), "{x}."),
    ((), "a photo of {x}."),
    ((), "the {p}."),
    ((), "a printed {p}."),
    (("case",), "{x}."),
    (("case",), "the {p}."),
    (("style",), "{x} {style}."),
    (("style",), "the {p} {style}."),
    (("colour",), "{x}."),
    (("colour",), "{x} on {bg} background."),
    (("case", "colour"), "{x} on {bg} background."),
    (("case", "style"), "{x} {style}."),
    (("colour", "style"), "a photo of {x} {style}."),
)


# --------------------------------------------------------------------------------------------------
# Hierarchy
# --------------------------------------------------------------------------------------------------


def letter_concept(letter: str) -> str:
    """The leaf concept of a letter: ``"a" -> "letter_a"`` (shown as "letter a")."""
    return f"letter_{letter}"


def glyph_letters() -> list[str]:
    """The 16 letters in leaf order (by group, then alphabetically within the group)."""
    return [letter for letters in GLYPH_LETTERS.values() for letter in letters]


def glyphs_hierarchy() -> ConceptHierarchy:
    """The concept tree of the glyphs dataset."""
    parent: dict[str, str | None] = {GLYPHS_ROOT: None, **GLYPH_GROUP_PARENTS}
    for group, letters in GLYPH_LETTERS.items():
        parent.update({letter_concept(letter): group for letter in letters})
    return ConceptHierarchy(parent)


# --------------------------------------------------------------------------------------------------
# What each pair shows, drawn at random
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GlyphPlan:
    """Everything drawn at random for ``n`` pairs, in the dataset's order (arrays of length ``n``).

    Geometry is unitless (independent of ``image_size``): ``cap_height`` is the capital height as a
    share of the image side, ``position`` where the glyph's centre sits within the room left by
    its extent (0 = leftmost/top, 1 = rightmost/bottom).
    """

    letter: np.ndarray       # (n,) int, index into glyph_letters()
    uppercase: np.ndarray    # (n,) bool
    style: np.ndarray        # (n,) int, index into GLYPH_STYLES
    is_test: np.ndarray      # (n,) bool
    angle_deg: np.ndarray    # (n,) int in [-30, 30], counter-clockwise
    shear: np.ndarray        # (n,) float64, the style's shear plus jitter
    x_scale: np.ndarray      # (n,) float64, the style's width plus jitter
    cap_height: np.ndarray   # (n,) float64
    position: np.ndarray     # (n, 2) float64 in [0, 1): (x, y)
    ink: np.ndarray          # (n,) int, index into COLOURS
    paper: np.ndarray        # (n,) int, index into COLOURS
    ink_rgb: np.ndarray      # (n, 3) float32, jittered
    paper_rgb: np.ndarray    # (n, 3) float32, jittered

    def __len__(self) -> int:
        return len(self.letter)


def _colour_pairs() -> np.ndarray:
    """``(k, 2)`` indices into COLOURS of (ink, background) pairs of clearly different colours."""
    rgb = np.array(list(COLOURS.values()), dtype=np.float64)
    distance = np.linalg.norm(rgb[:, None] - rgb[None, :], axis=-1)
    return np.argwhere(distance >= _MIN_COLOUR_DISTANCE)


def plan_glyphs(rng: np.random.Generator, *, per_leaf_train: int, per_leaf_test: int) -> GlyphPlan:
    """Draw every pair's letter, case, style, pose and colours; pairs are shuffled at the end."""
    n_letters, per_leaf = len(glyph_letters()), per_leaf_train + per_leaf_test
    n = n_letters * per_leaf
    style_shear = np.array([s.shear for s in GLYPH_STYLES.values()])
    style_width = np.array([s.x_scale for s in GLYPH_STYLES.values()])
    style = rng.integers(len(GLYPH_STYLES), size=n)
    colour_pairs = _colour_pairs()
    pairs = colour_pairs[rng.integers(len(colour_pairs), size=n)]
    palette = np.array(list(COLOURS.values()), dtype=np.float32)
    jitter = rng.uniform(-_COLOUR_JITTER, _COLOUR_JITTER, size=(2, n, 3)).astype(np.float32)
    plan = GlyphPlan(
        letter=np.repeat(np.arange(n_letters), per_leaf),
        # Exactly half of each letter's pairs are capitals (one more when the count is odd).
        uppercase=np.concatenate([rng.permutation(per_leaf) % 2 == 0 for _ in range(n_letters)]),
        style=style,
        is_test=np.tile(np.arange(per_leaf) >= per_leaf_train, n_letters),
        angle_deg=rng.integers(-_MAX_ROTATION_DEG, _MAX_ROTATION_DEG + 1, size=n),
        shear=style_shear[style] + rng.uniform(-_SHEAR_JITTER, _SHEAR_JITTER, size=n),
        x_scale=style_width[style] * rng.uniform(1 - _X_SCALE_JITTER, 1 + _X_SCALE_JITTER, size=n),
        cap_height=rng.uniform(_MIN_CAP_HEIGHT, _MAX_CAP_HEIGHT, size=n),
        position=rng.random((n, 2)),
        ink=pairs[:, 0], paper=pairs[:, 1],
        ink_rgb=palette[pairs[:, 0]] + jitter[0], paper_rgb=palette[pairs[:, 1]] + jitter[1],
    )
    return _reordered(plan, rng.permutation(n))


def _reordered(plan: GlyphPlan, order: np.ndarray) -> GlyphPlan:
    """The same pairs in ``order``."""
    return GlyphPlan(**{name: value[order] for name, value in vars(plan).items()})


# --------------------------------------------------------------------------------------------------
# Glyph masks, rasterised once per size
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GlyphAtlas:
    """Every (letter, case, weight) mask on one zero-padded canvas, its ink box in the middle.

    ``masks`` is ``(m, H, W)`` float32 in [0, 1], mask ``index(letter, uppercase, bold)``;
    ``centre`` ``(m, 2)`` is the (x, y) centre of each ink box in pixel-index coordinates (pixel
    ``j`` spans ``[j - 0.5, j + 0.5]``) and ``half_size`` ``(m, 2)`` its half width and half height;
    ``cap_height`` is the height of a capital (``H``) in mask pixels. Two or more zero pixels border
    every mask, so bilinear samples outside the ink read zero.
    """

    masks: np.ndarray
    centre: np.ndarray
    half_size: np.ndarray
    cap_height: float

    @staticmethod
    def index(letter: np.ndarray, uppercase: np.ndarray, bold: np.ndarray) -> np.ndarray:
        """Mask index of each (letter, case, weight): ``4 * letter + 2 * uppercase + bold``."""
        return 4 * letter + 2 * uppercase.astype(np.int64) + bold.astype(np.int64)


def _bundled_font(size: int):
    """Pillow's bundled scalable font at ``size`` pixels (needs Pillow built with FreeType)."""
    from PIL import ImageFont

    needed = ("the glyphs dataset needs Pillow's bundled scalable font, i.e. Pillow >= 10.1 built with "
              "FreeType (PIL.features.check('freetype2'))")
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no size argument
        raise DatasetError(f"{needed}; this Pillow's load_default takes no size") from None
    if not isinstance(font, ImageFont.FreeTypeFont):
        raise DatasetError(f"{needed}; got a bitmap {type(font).__name__}")
    return font


def _ink_mask(text: str, font, stroke: int) -> np.ndarray:
    """The glyph of ``text`` cropped to its ink box: float32 ``(h, w)`` in [0, 1]."""
    from PIL import Image, ImageDraw

    side = 3 * font.size
    canvas = Image.new("L", (side, side), 0)
    ImageDraw.Draw(canvas).text((font.size, font.size // 2), text, font=font, fill=255,
                                stroke_width=stroke, stroke_fill=255)
    left, top, right, bottom = canvas.getbbox()
    return np.asarray(canvas.crop((left, top, right, bottom)), dtype=np.float32) / 255.0


@functools.lru_cache(maxsize=4)
def glyph_atlas(font_size: int) -> GlyphAtlas:
    """The masks of every letter (both cases, regular and bold) at ``font_size`` pixels; cached."""
    font = _bundled_font(font_size)
    stroke = max(1, round(_BOLD_STROKE * font_size))
    crops = [_ink_mask(letter.upper() if upper else letter, font, stroke if bold else 0)
             for letter in glyph_letters() for upper in (False, True) for bold in (False, True)]
    height = max(c.shape[0] for c in crops) + 4
    width = max(c.shape[1] for c in crops) + 4
    masks = np.zeros((len(crops), height, width), dtype=np.float32)
    centre = np.zeros((len(crops), 2))
    for k, crop in enumerate(crops):
        top, left = (height - crop.shape[0]) // 2, (width - crop.shape[1]) // 2
        masks[k, top:top + crop.shape[0], left:left + crop.shape[1]] = crop
        centre[k] = (left + crop.shape[1] / 2 - 0.5, top + crop.shape[0] / 2 - 0.5)
    half = np.array([[c.shape[1] / 2, c.shape[0] / 2] for c in crops])
    for shared in (masks, centre, half):  # cached and shared by every caller
        shared.setflags(write=False)
    return GlyphAtlas(masks=masks, centre=centre, half_size=half,
                      cap_height=float(_ink_mask("H", font, 0).shape[0]))


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------

# cos/sin of every rotation, rounded to multiples of 2**-24 so that a last-bit difference between
# libm implementations cannot reach the pixels.
_ROTATIONS = np.arange(-_MAX_ROTATION_DEG, _MAX_ROTATION_DEG + 1)
_COS = np.array([round(math.cos(math.radians(d)) * 2**24) / 2**24 for d in _ROTATIONS])
_SIN = np.array([round(math.sin(math.radians(d)) * 2**24) / 2**24 for d in _ROTATIONS])


def _glyph_to_image(plan: GlyphPlan, scale: np.ndarray) -> np.ndarray:
    """Linear maps ``(n, 2, 2)`` from mask pixels to grid pixels (both with y down).

    ``M = scale * R(angle) @ Shear(shear) @ diag(x_scale, 1)`` with ``Shear = [[1, -shear], [0, 1]]``
    (y points down, so the top leans right) and ``R`` turning counter-clockwise on screen.
    """
    cos = _COS[plan.angle_deg + _MAX_ROTATION_DEG]
    sin = _SIN[plan.angle_deg + _MAX_ROTATION_DEG]
    a, b = plan.x_scale, -plan.shear  # Shear @ diag(x_scale, 1) = [[x_scale, -shear], [0, 1]]
    rows = [[cos * a, cos * b + sin], [-sin * a, -sin * b + cos]]
    return scale[:, None, None] * np.array(rows).transpose(2, 0, 1)


def _placement(plan: GlyphPlan, atlas: GlyphAtlas, mask_index: np.ndarray, grid: int):
    """Each glyph's map to the grid and its centre there: ``(n, 2, 2)``, ``(n, 2)`` grid pixels.

    A glyph whose transformed ink box would leave the margin is shrunk to fit; its centre is then
    placed uniformly in the room that is left.
    """
    scale = plan.cap_height * grid / atlas.cap_height
    linear = _glyph_to_image(plan, scale)
    half = atlas.half_size[mask_index]                                   # (n, 2)
    # Half extents of the transformed ink box, |M| @ half written out (a BLAS product may fuse).
    extent = np.abs(linear[:, :, 0]) * half[:, :1] + np.abs(linear[:, :, 1]) * half[:, 1:]  # (n, 2)
    room = grid - 2 * _MARGIN * SUPERSAMPLE
    shrink = np.minimum(1.0, room / (2 * extent.max(axis=1)))
    linear, extent = linear * shrink[:, None, None], extent * shrink[:, None]
    centre = _MARGIN * SUPERSAMPLE + extent + plan.position * (room - 2 * extent)
    return linear, centre


def _inverse(linear: np.ndarray) -> np.ndarray:
    """Inverses of 2x2 matrices ``(n, 2, 2)`` (all invertible: scales and rotations)."""
    (a, b), (c, d) = linear[:, 0].T, linear[:, 1].T
    det = a * d - b * c
    return np.stack([np.stack([d, -b], 1), np.stack([-c, a], 1)], 1) / det[:, None, None]


def _sample_bilinear(atlas: GlyphAtlas, mask_index: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear samples of masks ``mask_index (n,)`` at mask coordinates ``x, y (n, g, g)``.

    Coordinates outside a mask are clamped onto its border, which is two zero pixels wide: they
    read zero whatever their weights."""
    _, height, width = atlas.masks.shape
    x_floor, y_floor = np.floor(x), np.floor(y)
    wx, wy = x - x_floor, y - y_floor
    column = np.clip(x_floor.astype(np.int32), 0, width - 2)
    row = np.clip(y_floor.astype(np.int32), 0, height - 2)
    first = (mask_index.astype(np.int32) * np.int32(height * width))[:, None, None]  # each mask's offset
    flat = first + row * np.int32(width) + column
    values = atlas.masks.reshape(-1)
    top = values[flat] * (1 - wx) + values[flat + 1] * wx
    bottom = values[flat + width] * (1 - wx) + values[flat + width + 1] * wx
    return top * (1 - wy) + bottom * wy


def _coverage(plan: GlyphPlan, atlas: GlyphAtlas, image_size: int) -> np.ndarray:
    """Ink coverage ``(n, image_size, image_size)`` in [0, 1]: sampled on the fine grid, box-averaged."""
    grid = image_size * SUPERSAMPLE
    bold = np.array([s.bold for s in GLYPH_STYLES.values()])[plan.style]
    mask_index = atlas.index(plan.letter, plan.uppercase, bold)
    linear, centre = _placement(plan, atlas, mask_index, grid)
    inverse = _inverse(linear).astype(np.float32)
    axis = np.arange(grid, dtype=np.float32) + np.float32(0.5)              # grid pixel centres
    dx = axis[None, None, :] - centre[:, 0, None, None].astype(np.float32)  # (n, 1, g)
    dy = axis[None, :, None] - centre[:, 1, None, None].astype(np.float32)  # (n, g, 1)
    glyph_centre = atlas.centre[mask_index].astype(np.float32)[:, :, None, None]  # (n, 2, 1, 1)
    x = inverse[:, 0, 0, None, None] * dx + inverse[:, 0, 1, None, None] * dy + glyph_centre[:, 0]
    y = inverse[:, 1, 0, None, None] * dx + inverse[:, 1, 1, None, None] * dy + glyph_centre[:, 1]
    fine = _sample_bilinear(atlas, mask_index, x, y)
    n = len(plan)
    return fine.reshape(n, image_size, SUPERSAMPLE, image_size, SUPERSAMPLE).mean(axis=(2, 4))


def render_glyphs(plan: GlyphPlan, image_size: int, rng: np.random.Generator) -> torch.Tensor:
    """The images of ``plan`` as uint8 ``(n, 3, image_size, image_size)``:
    ``paper + (ink - paper) * coverage + noise``, noise drawn from ``rng``."""
    atlas = glyph_atlas(image_size * SUPERSAMPLE)
    out = np.empty((len(plan), 3, image_size, image_size), dtype=np.uint8)
    for start in range(0, len(plan), _CHUNK):
        part = _reordered(plan, np.arange(start, min(start + _CHUNK, len(plan))))
        alpha = _coverage(part, atlas, image_size)[:, None]                 # (k, 1, s, s)
        ink, paper = part.ink_rgb[:, :, None, None], part.paper_rgb[:, :, None, None]
        noise = rng.integers(-_NOISE, _NOISE + 1, size=(len(part), 3, image_size, image_size))
        image = paper + (ink - paper) * alpha + noise.astype(np.float32)
        out[start:start + len(part)] = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return torch.from_numpy(out)


# --------------------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------------------


def _names_group(plan: GlyphPlan, rng: np.random.Generator) -> np.ndarray:
    """Boolean ``(n,)``: which captions name a group, ``round(PARENT_CAPTION_SHARE * count)`` of
    each letter's pairs."""
    chosen = np.zeros(len(plan), dtype=bool)
    for letter in range(len(glyph_letters())):
        members = np.flatnonzero(plan.letter == letter)
        chosen[rng.permutation(members)[:round(PARENT_CAPTION_SHARE * len(members))]] = True
    return chosen


def _caption_concepts(plan: GlyphPlan, hierarchy: ConceptHierarchy, rng: np.random.Generator) -> list[str]:
    """The concept each caption names: the leaf, or for :data:`PARENT_CAPTION_SHARE` of each
    letter's pairs one of its ancestors below the root, chosen uniformly."""
    leaves = [letter_concept(letter) for letter in glyph_letters()]
    groups = {leaf: hierarchy.ancestors(leaf)[:-1] for leaf in leaves}
    names_group = _names_group(plan, rng)
    pick = rng.random(len(plan))
    concepts = []
    for k, letter in enumerate(plan.letter):
        leaf = leaves[letter]
        options = groups[leaf]
        concepts.append(options[int(pick[k] * len(options))] if names_group[k] else leaf)
    return concepts


def _caption(kind: tuple[str, ...], pattern: str, noun: str, *, uppercase: bool, colour: str,
             background: str, style: GlyphStyle) -> str:
    """One caption: the pattern filled with the noun and the modifiers ``kind`` asks for."""
    words = [colour] * ("colour" in kind) + ["uppercase" if uppercase else "lowercase"] * ("case" in kind)
    phrase = " ".join([*words, noun])
    return pattern.format(x=with_article(phrase), p=phrase, style=style.phrase, bg=with_article(background))


def glyph_captions(plan: GlyphPlan, hierarchy: ConceptHierarchy, display_names: dict[str, str],
                   rng: np.random.Generator) -> list[str]:
    """One caption per pair of ``plan``, naming its letter or a group of it (see the module doc)."""
    concepts = _caption_concepts(plan, hierarchy, rng)
    styles, colour_names = list(GLYPH_STYLES.values()), list(COLOURS)
    chosen = rng.integers(len(_CAPTION_STYLES), size=len(plan))
    return [
        _caption(*_CAPTION_STYLES[chosen[k]], display_names.get(concept, concept.replace("_", " ")),
                 uppercase=bool(plan.uppercase[k]), colour=colour_names[plan.ink[k]],
                 background=colour_names[plan.paper[k]], style=styles[plan.style[k]])
        for k, concept in enumerate(concepts)
    ]


# --------------------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------------------


def _check_count(name: str, value, low: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
        raise DatasetError(f"make_glyphs: {name} must be an integer >= {low}, got {value!r}")


def _streams(seed: int) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """Independent generators for the plan, the pixel noise and the captions."""
    return tuple(np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))


def glyph_plan(seed: int = 0, *, per_leaf_train: int = 300, per_leaf_test: int = 60) -> GlyphPlan:
    """The plan :func:`make_glyphs` draws for ``seed`` (pair ``i`` of the dataset is ``plan[i]``)."""
    return plan_glyphs(_streams(seed)[0], per_leaf_train=per_leaf_train, per_leaf_test=per_leaf_test)


@register_builtin("glyphs")
def make_glyphs(seed: int = 0, image_size: int = 32, *, per_leaf_train: int = 300,
                per_leaf_test: int = 60) -> ConceptDataset:
    """Generate the ``glyphs`` dataset (16 leaves x ``per_leaf_train + per_leaf_test`` pairs).

    Deterministic in ``seed``. Pairs are shuffled (consecutive indices mix classes); use
    :meth:`ConceptDataset.indices` for the train/test split, exactly ``per_leaf_test`` test pairs
    per letter. Pair ``i`` is drawn as ``glyph_plan(seed, ...)``'s pair ``i``.
    """
    _check_count("per_leaf_train", per_leaf_train, 1)
    _check_count("per_leaf_test", per_leaf_test, 0)
    _check_count("image_size", image_size, _MIN_IMAGE_SIZE)
    plan_rng, noise_rng, caption_rng = _streams(seed)
    plan = plan_glyphs(plan_rng, per_leaf_train=per_leaf_train, per_leaf_test=per_leaf_test)
    hierarchy = glyphs_hierarchy()
    letters = glyph_letters()
    return ConceptDataset(
        name="glyphs",
        hierarchy=hierarchy,
        captions=glyph_captions(plan, hierarchy, GLYPHS_DISPLAY_NAMES, caption_rng),
        labels=[letter_concept(letters[k]) for k in plan.letter],
        splits=np.where(plan.is_test, "test", "train"),
        image_size=int(image_size),
        pixels=render_glyphs(plan, int(image_size), noise_rng),
        templates=GLYPHS_TEMPLATES,
        display_names=GLYPHS_DISPLAY_NAMES,
    )
