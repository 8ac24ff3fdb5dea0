"""Tests for the built-in ``glyphs`` dataset (benchmarks/datasets/glyphs.py): rendered letters."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from benchmarks.datasets import DatasetError, list_datasets, load_dataset, make_glyphs
from benchmarks.datasets.glyphs import (GLYPH_LETTERS, GLYPH_STYLES, GLYPHS_TEMPLATES, PARENT_CAPTION_SHARE,
                                        GlyphPlan, glyph_letters, glyph_plan, glyphs_hierarchy,
                                        render_glyphs)
from benchmarks.datasets.shapes import COLOURS

SMALL = dict(per_leaf_train=6, per_leaf_test=2)
GROUP_WORDS = {"vowel", "consonant", "stop", "fricative"}


@pytest.fixture(scope="module")
def glyphs_default():
    return make_glyphs(seed=0)


@pytest.fixture(scope="module")
def plan_default():
    return glyph_plan(seed=0)


def test_registered_and_loaded_by_name():
    assert "glyphs" in list_datasets()
    loaded = load_dataset("glyphs", seed=2, image_size=24, **SMALL)
    made = make_glyphs(seed=2, image_size=24, **SMALL)
    assert loaded.name == "glyphs" and loaded.image_size == 24 and loaded.pixels.shape[-1] == 24
    assert torch.equal(loaded.pixels, made.pixels) and loaded.captions == made.captions


def test_bad_arguments_name_themselves():
    with pytest.raises(DatasetError, match="per_leaf_train must be an integer >= 1, got 0"):
        make_glyphs(per_leaf_train=0)
    with pytest.raises(DatasetError, match="image_size must be an integer >= 16, got 8"):
        make_glyphs(image_size=8, **SMALL)
    with pytest.raises(DatasetError, match="not understood by the glyphs reader.*per_leaf_train"):
        load_dataset("glyphs", max_per_class=3)


def test_hierarchy_shape():
    h = glyphs_hierarchy()
    assert h.root == "glyph" and h.children("glyph") == ["consonant", "vowel"]
    assert h.children("consonant") == ["fricative", "stop"]
    assert len(h.leaves()) == 16 and len(set(glyph_letters())) == 16
    assert all(h.depth(leaf) >= 2 for leaf in h.leaves())
    assert max(h.depth(leaf) for leaf in h.leaves()) == 3
    assert h.ancestors("letter_g") == ["stop", "consonant", "glyph"]
    assert h.ancestors("letter_e") == ["vowel", "glyph"]
    for group, letters in GLYPH_LETTERS.items():
        assert h.children(group) == sorted(f"letter_{x}" for x in letters)


def test_class_balance_and_split_shares():
    ds = make_glyphs(seed=1, **SMALL)
    assert len(ds) == 16 * 8 and ds.leaf_classes() == glyphs_hierarchy().leaves()
    labels = np.array(ds.labels)
    for leaf in ds.leaf_classes():
        assert (labels[ds.indices("train")] == leaf).sum() == 6
        assert (labels[ds.indices("test")] == leaf).sum() == 2
    assert len(set(labels[:16])) > 1  # pairs are shuffled, not grouped by class
    assert ds.pixels.dtype == torch.uint8 and ds.pixels.shape == (128, 3, 32, 32)


def test_same_seed_same_bytes_other_seed_differs():
    first, second, other = (make_glyphs(seed=s, **SMALL) for s in (5, 5, 6))
    assert first.pixels.numpy().tobytes() == second.pixels.numpy().tobytes()
    assert first.captions == second.captions and first.labels == second.labels
    assert np.array_equal(first.splits, second.splits)
    assert not torch.equal(first.pixels, other.pixels)
    assert first.captions != other.captions


def test_dataset_follows_its_plan():
    ds, plan = make_glyphs(seed=3, **SMALL), glyph_plan(seed=3, **SMALL)
    letters = glyph_letters()
    assert ds.labels == [f"letter_{letters[k]}" for k in plan.letter]
    assert np.array_equal(ds.splits == "test", plan.is_test)


def test_upper_and_lower_case_half_each_per_class(plan_default):
    for letter in range(16):
        uppercase = plan_default.uppercase[plan_default.letter == letter]
        assert uppercase.sum() == len(uppercase) // 2 == 180


def test_images_are_not_blank(glyphs_default, plan_default):
    """Every image has ink: at least 10 pixels far from its background colour."""
    pixels = glyphs_default.pixels.float()
    distance = (pixels - torch.from_numpy(plan_default.paper_rgb)[:, :, None, None]).norm(dim=1)
    ink_pixels = (distance > 60).sum((1, 2))
    assert int(ink_pixels.min()) >= 10
    assert float(ink_pixels.float().mean()) > 60  # glyphs are not specks


def test_glyphs_stay_inside_the_image(glyphs_default, plan_default):
    """The border ring is background: each glyph's ink box keeps one pixel's margin (only the
    last few hundredths of a bilinear tail could reach the ring)."""
    pixels = glyphs_default.pixels.float()
    paper = torch.from_numpy(plan_default.paper_rgb)[:, :, None]
    contrast = (torch.from_numpy(plan_default.ink_rgb) - torch.from_numpy(plan_default.paper_rgb)).norm(dim=1)
    ring = torch.cat([pixels[:, :, 0], pixels[:, :, -1], pixels[:, :, :, 0], pixels[:, :, :, -1]], 2)
    noise = 6.5 * 3**0.5  # integer noise up to 6 per channel, plus rounding
    coverage = ((ring - paper).norm(dim=1) - noise).clamp(min=0) / contrast[:, None]
    assert float(coverage.max()) < 0.05


def test_each_case_and_letter_draws_a_different_glyph():
    """One pose, every (letter, case): 32 images far apart (a 33rd, the first again, differs only by
    noise), and a capital O has more ink than an o."""
    n = 33
    plan = GlyphPlan(
        letter=np.append(np.repeat(np.arange(16), 2), 0), uppercase=np.append(np.tile([False, True], 16), False),
        style=np.zeros(n, dtype=np.int64), is_test=np.zeros(n, dtype=bool),
        angle_deg=np.zeros(n, dtype=np.int64), shear=np.zeros(n), x_scale=np.ones(n),
        cap_height=np.full(n, 0.6), position=np.full((n, 2), 0.5), ink=np.zeros(n, dtype=np.int64),
        paper=np.ones(n, dtype=np.int64), ink_rgb=np.full((n, 3), 255.0, dtype=np.float32),
        paper_rgb=np.zeros((n, 3), dtype=np.float32),
    )
    images = render_glyphs(plan, 32, np.random.default_rng(0)).float()
    distance = torch.cdist(images[:32].flatten(1), images[:32].flatten(1)) + torch.eye(32) * 1e9
    assert float((images[0] - images[32]).norm()) < 500.0 < float(distance.min())
    o = glyph_letters().index("o")
    ink = images.mean((1, 2, 3))
    assert ink[2 * o + 1] > 1.2 * ink[2 * o]


def _caption_letters(caption: str) -> list[str]:
    return re.findall(r"\bletter ([a-z])\b", caption)


def test_captions_name_the_right_concept(glyphs_default, plan_default):
    ds, plan, h = glyphs_default, plan_default, glyphs_default.hierarchy
    colour_names, styles = list(COLOURS), list(GLYPH_STYLES.values())
    group_level = np.zeros(len(ds), dtype=bool)
    for i, (caption, label) in enumerate(zip(ds.captions, ds.labels)):
        named = _caption_letters(caption)
        words = set(re.findall(r"[a-z]+", caption))
        if named:
            assert named == [label[-1]], caption
            assert not words & GROUP_WORDS, caption
        else:
            allowed = {word for group in h.ancestors(label)[:-1] for word in ds.display_name(group).split()}
            assert words & GROUP_WORDS and words & GROUP_WORDS <= allowed, (caption, label)
            group_level[i] = True
        assert ("uppercase" in words) <= bool(plan.uppercase[i]), caption
        assert ("lowercase" in words) <= (not plan.uppercase[i]), caption
        background = re.search(r"on an? (\w+) background", caption)
        assert background is None or background.group(1) == colour_names[plan.paper[i]], caption
        assert (" in " not in caption) or styles[plan.style[i]].phrase in caption, caption
    labels = np.array(ds.labels)
    for leaf in ds.leaf_classes():
        assert group_level[labels == leaf].sum() == round(PARENT_CAPTION_SHARE * 360)


def test_captions_have_every_kind_of_modifier(glyphs_default):
    captions = set(glyphs_default.captions)
    assert {"a letter a.", "an uppercase letter a.", "the letter g in bold.", "a vowel.", "a stop consonant.",
            "a consonant.", "a fricative consonant."} <= captions
    assert any(re.fullmatch(r"an? \w+ letter b on an? \w+ background\.", c) for c in captions)


def test_prompts_are_training_captions(glyphs_default):
    ds = glyphs_default
    assert ds.templates == list(GLYPHS_TEMPLATES)
    assert ds.prompts("letter_a") == ["a letter a.", "a photo of a letter a.", "the letter a.", "a printed letter a."]
    assert ds.prompts("stop")[0] == "a stop consonant."
    captions = {ds.captions[i] for i in ds.indices("train")}
    for concept in [*ds.leaf_classes(), "vowel", "consonant", "stop", "fricative"]:
        assert set(ds.prompts(concept)) <= captions, concept


def test_captions_fit_the_tiny_model(glyphs_default):
    """Every caption and prompt fits a 20-token context, and the words fit meru-tiny's vocabulary."""
    import models
    from benchmarks.common import EncodedDataset
    from benchmarks.experiment import check_vocabulary

    model = models.create_model("meru-tiny")
    assert model.context_length == 20
    data = EncodedDataset.build(glyphs_default, model.context_length)
    # A caption that fits ends with the end-of-text token before the last position.
    for tokens in (data.tokens, *data.prompt_tokens):
        assert int((tokens != 0).sum(1).max()) < model.context_length
    check_vocabulary(model, data)
