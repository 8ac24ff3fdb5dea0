"""The built-in ``taxonomy`` dataset: tree shape, determinism, balance, two-object pairs, captions
and the visual tree structure (class-mean images follow the hierarchy)."""

import re

import numpy as np
import pytest
import torch

import models
from benchmarks.datasets import DatasetError, list_datasets, load_dataset, make_taxonomy
from benchmarks.datasets.taxonomy import (BACKGROUNDS, FAMILIES, NAMING_SHARES, OBJECT_COLOURS, TWO_OBJECT_SHARE,
                                          _CAPTION_STYLES, Objects, _coverage)
from benchmarks.datasets.text import with_article

SMALL = dict(per_leaf_train=20, per_leaf_test=5)


@pytest.fixture(scope="module")
def small():
    return make_taxonomy(seed=0, **SMALL)


def leaves_of(dataset, index):
    """The leaves pair ``index`` shows, primary first (pair_concepts is a set: order by label)."""
    shown = [c for c in dataset.pair_concepts[index] if dataset.hierarchy.is_leaf(c)]
    return sorted(shown, key=lambda c: c != dataset.labels[index])


def object_phrases(caption):
    """The object phrases of a caption, without articles and styles: ``["red circle", "dotted black star"]``."""
    body = re.sub(r"^(a photo of |a drawing of )", "", caption.rstrip("."))
    body = re.sub(r" on an? \w+ background$", "", body)
    return [re.sub(r"^an? ", "", part) for part in body.split(" and ")]


# -- the tree ----------------------------------------------------------------------------------------

def test_registered_and_four_levels_with_48_leaves(small):
    h = small.hierarchy
    assert "taxonomy" in list_datasets()
    assert h.root == "shape" and len(h.children(h.root)) == 4
    assert len(h.leaves()) == 48 and len(h) == 1 + 4 + 12 + 48
    assert {h.depth(leaf) for leaf in h.leaves()} == {3}  # four levels counting the root
    assert all(len(h.children(family)) == 3 for family in h.children(h.root))
    assert all(len(h.children(kind)) == 4 for family in h.children(h.root) for kind in h.children(family))
    assert small.leaf_classes() == h.leaves()


def test_colours_are_not_shared_between_families():
    colours = [c for family in FAMILIES.values() for c in family.colours]
    outlines = [family.outline for family in FAMILIES.values()]
    assert len(set(colours)) == len(colours) == 12 and set(colours) == set(OBJECT_COLOURS)
    assert len(set(outlines)) == 4


# -- generation ----------------------------------------------------------------------------------------

def test_deterministic_and_seed_dependent():
    a, b = make_taxonomy(seed=3, per_leaf_train=3, per_leaf_test=1), make_taxonomy(seed=3, per_leaf_train=3, per_leaf_test=1)
    c = make_taxonomy(seed=4, per_leaf_train=3, per_leaf_test=1)
    assert torch.equal(a.pixels, b.pixels)
    assert a.captions == b.captions and a.labels == b.labels and a.pair_concepts == b.pair_concepts
    assert np.array_equal(a.splits, b.splits)
    assert not torch.equal(a.pixels, c.pixels) and a.captions != c.captions


def test_balanced_stratified_split_and_image_format(small):
    per_leaf = SMALL["per_leaf_train"] + SMALL["per_leaf_test"]
    labels = np.array(small.labels)
    for leaf in small.leaf_classes():
        assert (labels == leaf).sum() == per_leaf
        assert (small.splits[labels == leaf] == "test").sum() == SMALL["per_leaf_test"]
    assert len(set(labels[:48])) > 20  # shuffled: consecutive pairs mix classes
    images = small.images(np.arange(8))
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.float32
    assert float(images.std()) > 0.1


def test_load_dataset_options_and_other_image_size():
    ds = load_dataset("taxonomy", seed=1, image_size=48, per_leaf_train=1, per_leaf_test=1)
    assert len(ds) == 96 and ds.pixels.shape == (96, 3, 48, 48)


@pytest.mark.parametrize("options, named", [
    (dict(per_leaf_train=0), "per_leaf_train"),
    (dict(per_leaf_test=-1), "per_leaf_test"),
    (dict(image_size=8), "image_size"),
    (dict(two_object_share=1.5), "two_object_share"),
])
def test_bad_options_are_refused_by_name(options, named):
    with pytest.raises(DatasetError, match=named):
        make_taxonomy(**{"per_leaf_train": 1, **options})


# -- two-object pairs ------------------------------------------------------------------------------------

def test_two_object_pairs_per_leaf(small):
    per_leaf = SMALL["per_leaf_train"] + SMALL["per_leaf_test"]
    labels = np.array(small.labels)
    shows_two = np.array([len(leaves_of(small, i)) == 2 for i in range(len(small))])
    for leaf in small.leaf_classes():
        assert shows_two[labels == leaf].sum() == round(TWO_OBJECT_SHARE * per_leaf)
    assert shows_two[small.splits == "train"].any() and shows_two[small.splits == "test"].any()


def test_captions_name_every_object_in_order(small):
    """Each phrase names its object's leaf, kind or family; two-object captions name the label first."""
    h = small.hierarchy
    levels = np.zeros(3)
    for i, caption in enumerate(small.captions):
        shown = leaves_of(small, i)
        assert shown[0] == small.labels[i]
        phrases = object_phrases(caption)
        assert len(phrases) == len(shown), caption
        for phrase, leaf in zip(phrases, shown):
            named = [small.display_name(c) for c in [leaf] + h.ancestors(leaf)[:2]]
            assert phrase in named, (caption, leaf)
            levels[named.index(phrase)] += 1
        assert small.pair_concepts[i] == h.closure(shown)
    shares = levels / levels.sum()
    assert np.allclose(shares, NAMING_SHARES, atol=0.05), shares


def test_forgetting_a_leaf_removes_pairs_where_it_is_second(small):
    leaf = "dotted_red_circle"
    forget, retain = small.split_forget_retain([leaf])
    seconds = [i for i in small.indices("train") if leaf in small.pair_concepts[i] and small.labels[i] != leaf]
    assert seconds and set(seconds) <= set(forget.tolist())
    assert all(leaf not in small.pair_concepts[i] for i in retain)


@pytest.mark.parametrize("share, expected", [(0.0, 0), (1.0, 48 * 2)])
def test_two_object_share_extremes(share, expected):
    ds = make_taxonomy(per_leaf_train=1, per_leaf_test=1, two_object_share=share)
    assert sum(len(leaves_of(ds, i)) == 2 for i in range(len(ds))) == expected


# -- text --------------------------------------------------------------------------------------------------

def test_captions_and_prompts_fit_the_tiny_models(small):
    """No caption or prompt is cut by the tiny models' 20-token context, and all of them together use
    few enough distinct tokens for the compact vocabulary."""
    text = models.model_config("meru-tiny").text
    tokenizer = models.get_tokenizer(77)
    prompts = [p for c in small.hierarchy.concepts() for p in small.prompts(c)]
    tokens = tokenizer(sorted(set(small.captions)) + prompts)
    assert int((tokens != 0).sum(1).max()) <= text.context_length
    assert torch.unique(tokens).numel() <= text.vocab_size - 4


def test_longest_possible_caption_fits(small):
    """Every caption style filled with the two longest object phrases and the longest background."""
    tokenizer = models.get_tokenizer(77)
    length = lambda text: int((tokenizer(text) != 0).sum())
    names = [small.display_name(c) for c in small.hierarchy.concepts()]
    longest = with_article(max(names, key=length))
    background = with_article(max(BACKGROUNDS, key=length))
    captions = [style.format(x=f"{longest} and {longest}", bg=background) for style in _CAPTION_STYLES]
    assert max(map(length, captions)) <= models.model_config("meru-tiny").text.context_length, captions


def test_prompts_use_display_names_and_articles(small):
    assert small.prompts("striped_red_circle")[0] == "a striped red circle."
    assert small.prompts("orange_circle")[0] == "an orange circle."
    assert small.prompts("round")[1] == "a photo of a round shape."
    assert "a photo of a round shape." in small.captions or "a round shape." in small.captions


def test_named_background_fills_the_corners_and_differs_from_objects(small):
    checked = 0
    for i, caption in enumerate(small.captions):
        m = re.search(r"on an? (\w+) background", caption)
        if not m:
            continue
        corners = small.pixels[i, :, [0, 0, -1, -1], [0, -1, 0, -1]].float().T.numpy()  # (4, 3)
        nearest = min(BACKGROUNDS, key=lambda b: np.abs(corners.mean(0) - BACKGROUNDS[b]).sum())
        assert nearest == m.group(1), caption
        if len(leaves_of(small, i)) == 1:  # a lone object always has a background far from its colour
            colour = OBJECT_COLOURS[small.labels[i].split("_")[1]]
            assert np.linalg.norm(np.subtract(BACKGROUNDS[nearest], colour)) >= 120, caption
        checked += 1
    assert checked > 100


# -- appearance follows the tree ---------------------------------------------------------------------------

def test_class_means_follow_the_tree(small):
    """Mean RMS pixel distance between class-mean images: siblings < cousins < different families."""
    h = small.hierarchy
    leaves = h.leaves()
    pixels = small.pixels.float().div(255).flatten(1).numpy()
    labels = np.array(small.labels)
    means = np.stack([pixels[labels == leaf].mean(0) for leaf in leaves])
    distance = np.sqrt(((means[:, None] - means[None]) ** 2).mean(-1))
    by_relation = {"sibling": [], "cousin": [], "distant": []}
    for i, a in enumerate(leaves):
        for j in range(i):
            b = leaves[j]
            common = len(set(h.ancestors(a)) & set(h.ancestors(b)))  # shape=1, family=2, kind=3
            by_relation[{3: "sibling", 2: "cousin", 1: "distant"}[common]].append(distance[i, j])
    assert [len(v) for v in by_relation.values()] == [48 * 3 // 2, 48 * 8 // 2, 48 * 36 // 2]
    sibling, cousin, distant = (np.mean(v) for v in by_relation.values())
    assert sibling < cousin < distant, (sibling, cousin, distant)


@pytest.mark.parametrize("outline", ["circle", "square", "triangle", "star"])
def test_patterns_mark_part_of_every_outline(outline):
    """The share of an object's area covered by marks: none for plain, about half for stripes and
    checks, about a quarter for dots (area of a 0.3-period dot per period squared: 0.28)."""
    n = 8
    objects = Objects(leaf=np.zeros(n, dtype=int), centre=np.full((n, 2), 16.0), radius=np.full(n, 13.0),
                      angle_deg=np.linspace(-29, 29, n).astype(int), phase=np.random.default_rng(0).random((n, 2)))
    expected = {"plain": (0.0, 0.0), "striped": (0.35, 0.65), "checked": (0.35, 0.65), "dotted": (0.15, 0.4)}
    for pattern, (low, high) in expected.items():
        body, marks = _coverage(outline, pattern, objects, 32)
        assert (marks <= body + 1e-6).all()
        share = marks.sum((1, 2)) / body.sum((1, 2))
        assert (low <= share).all() and (share <= high).all(), (pattern, share)
