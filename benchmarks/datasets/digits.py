"""The built-in ``digits`` dataset: scikit-learn's bundled 8x8 handwritten digits, in colour.

The 1,797 grey 8x8 images of ``sklearn.datasets.load_digits`` (shipped with scikit-learn, nothing is
downloaded) become RGB images: ink of one named colour on a background of another (the colour is a
nuisance variable), upsampled to ``image_size`` on access.

Hierarchy::

    digit
    ├── even: zero, two, four, six, eight     (written "even digit" in text)
    └── odd:  one, three, five, seven, nine   (written "odd digit" in text)

Captions: about 75% name the digit ("a handwritten seven.", "a red seven on a white background."),
about 25% only its parity ("an odd digit."). The train/test split is stratified (about 80/20 per
digit) and, like the colours and captions, determined by ``seed``.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import ConceptDataset, stratified_test_mask
from .errors import DatasetError
from .hierarchy import ConceptHierarchy
from .registry import register_builtin
from .shapes import COLOURS
from .text import with_article

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGITS_ROOT = "digit"
DIGITS_DISPLAY_NAMES = {"even": "even digit", "odd": "odd digit"}
DIGITS_TEMPLATES = ("a {}.", "a handwritten {}.", "a photo of a handwritten {}.", "a drawing of a {}.")
TEST_SHARE = 0.2
PARENT_CAPTION_SHARE = 0.25

_CAPTION_STYLES = (
    ("plain", "{x}."),
    ("plain", "a handwritten {x}."),
    ("plain", "a photo of a handwritten {x}."),
    ("plain", "a drawing of {x}."),
    ("colour", "{x}."),
    ("colour", "{x} on {bg} background."),
    ("colour", "a handwritten {x}."),
)

# Ink/background pairs: background light or dark, ink clearly different.
_INK_BACKGROUND = [
    (ink, bg) for ink in COLOURS for bg in ("white", "black", "yellow")
    if ink != bg and np.linalg.norm(np.subtract(COLOURS[ink], COLOURS[bg])) >= 140.0
]


def digits_hierarchy() -> ConceptHierarchy:
    """The concept tree of the digits dataset."""
    parent: dict[str, str | None] = {DIGITS_ROOT: None, "even": DIGITS_ROOT, "odd": DIGITS_ROOT}
    for value, name in enumerate(DIGIT_NAMES):
        parent[name] = "even" if value % 2 == 0 else "odd"
    return ConceptHierarchy(parent)


@register_builtin("digits")
def make_digits(seed: int = 0, image_size: int = 32) -> ConceptDataset:
    """Build the ``digits`` dataset from scikit-learn's bundled images (deterministic in ``seed``)."""
    if not isinstance(image_size, (int, np.integer)) or isinstance(image_size, bool) or image_size < 8:
        raise DatasetError(f"make_digits: image_size must be an integer >= 8, got {image_size!r}")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    grey = bunch.images.astype(np.float32) / 16.0  # (n, 8, 8) in [0, 1], 1 = ink
    values = bunch.target.astype(np.int64)
    n = len(values)
    rng = np.random.default_rng(seed)

    choice = rng.integers(len(_INK_BACKGROUND), size=n)
    ink = np.array([COLOURS[_INK_BACKGROUND[k][0]] for k in choice], dtype=np.float32)
    background = np.array([COLOURS[_INK_BACKGROUND[k][1]] for k in choice], dtype=np.float32)
    rgb = background[:, :, None, None] + (ink - background)[:, :, None, None] * grey[:, None]
    pixels = torch.from_numpy(np.clip(np.rint(rgb), 0, 255).astype(np.uint8))

    is_test = stratified_test_mask(values, TEST_SHARE, rng)
    parent_level = rng.random(n) < PARENT_CAPTION_SHARE
    captions, labels = [], []
    for i in range(n):
        leaf = DIGIT_NAMES[values[i]]
        parity = "even" if values[i] % 2 == 0 else "odd"
        noun = DIGITS_DISPLAY_NAMES[parity] if parent_level[i] else leaf
        kind, pattern = _CAPTION_STYLES[rng.integers(len(_CAPTION_STYLES))]
        ink_name, bg_name = _INK_BACKGROUND[choice[i]]
        phrase = f"{ink_name} {noun}" if kind == "colour" else noun
        # "a handwritten {x}" already carries its article.
        x = phrase if pattern.startswith("a handwritten") or pattern.startswith("a photo") else with_article(phrase)
        captions.append(pattern.format(x=x, bg=with_article(bg_name)))
        labels.append(leaf)

    return ConceptDataset(
        name="digits",
        hierarchy=digits_hierarchy(),
        captions=captions,
        labels=labels,
        splits=np.where(is_test, "test", "train"),
        image_size=image_size,
        pixels=pixels,
        templates=DIGITS_TEMPLATES,
        display_names=DIGITS_DISPLAY_NAMES,
    )
