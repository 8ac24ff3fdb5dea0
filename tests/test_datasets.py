"""Tests for benchmarks.datasets: built-in data, splitting rules and the file-format readers.

Every file-format test writes its own tiny dataset in the real on-disk format into a temp folder.
"""

from __future__ import annotations

import json
import pickle
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from PIL import Image

from benchmarks.datasets import (
    DATASETS, ConceptDataset, ConceptHierarchy, DatasetError, detect_format, fill_template,
    list_datasets, list_formats, load_cifar100, load_coco, load_dataset, load_folder, load_image_file,
    load_imagefolder, make_digits, make_shapes, validate_images, with_article,
)
from benchmarks.datasets import registry
from benchmarks.datasets.shapes import SHAPE_GROUPS, SHAPES_TEMPLATES

SMALL = dict(per_leaf_train=20, per_leaf_test=5)


@pytest.fixture(scope="module")
def shapes_small():
    return make_shapes(seed=0, **SMALL)


@pytest.fixture(scope="module")
def shapes_default():
    return make_shapes()


# --------------------------------------------------------------------------------------------------
# ConceptHierarchy
# --------------------------------------------------------------------------------------------------

ANIMALS = {"thing": None, "animal": "thing", "plant": "thing", "cat": "animal", "dog": "animal",
           "tree": "plant", "lion": "cat"}


def test_hierarchy_queries():
    h = ConceptHierarchy(ANIMALS)
    assert h.root == "thing"
    assert h.ancestors("lion") == ["cat", "animal", "thing"]
    assert h.ancestors("thing") == []
    assert h.children("animal") == ["cat", "dog"]
    assert h.leaves() == ["dog", "lion", "tree"]
    assert h.parent_of("dog") == "animal" and h.parent_of("thing") is None
    assert h.siblings("cat") == ["dog"] and h.siblings("tree") == [] and h.siblings("thing") == []
    assert [h.depth(c) for c in ("thing", "animal", "cat", "lion")] == [0, 1, 2, 3]
    assert h.concepts() == sorted(ANIMALS)
    assert h.is_known("cat") and not h.is_known("fish")
    assert h.descendants("animal") == ["cat", "dog", "lion"]
    assert h.closure(["lion", "tree"]) == {"lion", "cat", "animal", "thing", "tree", "plant"}


@pytest.mark.parametrize("parent, fragment", [
    ({"a": None, "b": "a", "c": "zzz"}, "zzz"),                      # unknown parent
    ({"a": None, "b": None}, "exactly one root"),                    # two roots
    ({"a": "b", "b": "a"}, "exactly one root"),                      # no root at all
    ({"r": None, "a": "b", "b": "c", "c": "a"}, "cycle"),            # cycle below the root
    ({}, "non-empty"),
])
def test_hierarchy_rejects_bad_trees(parent, fragment):
    with pytest.raises(DatasetError, match=fragment):
        ConceptHierarchy(parent)


def test_hierarchy_unknown_concept_query_lists_known():
    h = ConceptHierarchy(ANIMALS)
    with pytest.raises(DatasetError, match="unknown concept 'fish'.*'animal'"):
        h.ancestors("fish")


@st.composite
def random_trees(draw):
    n = draw(st.integers(1, 25))
    names = [f"c{i}" for i in range(n)]
    parent = {names[0]: None}
    for i in range(1, n):
        parent[names[i]] = names[draw(st.integers(0, i - 1))]
    return parent


@settings(max_examples=60, deadline=None)
@given(random_trees())
def test_hierarchy_properties_on_random_trees(parent):
    h = ConceptHierarchy(parent)
    for c in h.concepts():
        chain = h.ancestors(c)
        assert len(chain) == h.depth(c)
        assert (chain[-1] if chain else c) == h.root
        for kid in h.children(c):
            assert h.parent_of(kid) == c
            assert set(h.siblings(kid)) == set(h.children(c)) - {kid}
        assert h.is_leaf(c) == (c in h.leaves())
    assert sum(len(h.children(c)) for c in h.concepts()) == len(h) - 1


# --------------------------------------------------------------------------------------------------
# shapes
# --------------------------------------------------------------------------------------------------


def test_shapes_hierarchy_structure(shapes_small):
    h = shapes_small.hierarchy
    supers = h.children(h.root)
    assert h.root == "shape"
    assert len(supers) >= 3
    assert len(h.leaves()) >= 12
    assert max(h.depth(c) for c in h.concepts()) >= 2  # at least three levels
    for leaf in h.leaves():
        assert h.depth(leaf) == 2 and h.parent_of(leaf) in supers
    assert shapes_small.leaf_classes() == h.leaves()


def test_shapes_sizes_and_image_format(shapes_small):
    n_leaves = len(shapes_small.leaf_classes())
    assert len(shapes_small) == n_leaves * 25
    assert len(shapes_small.indices("train")) == n_leaves * 20
    assert len(shapes_small.indices("test")) == n_leaves * 5
    imgs = shapes_small.images(np.arange(10))
    assert imgs.shape == (10, 3, 32, 32) and imgs.dtype == torch.float32
    assert float(imgs.min()) >= 0.0 and float(imgs.max()) <= 1.0
    assert float(imgs.std()) > 0.1  # not blank
    counts = {c: shapes_small.labels.count(c) for c in shapes_small.leaf_classes()}
    assert set(counts.values()) == {25}


def test_shapes_other_image_size():
    ds = make_shapes(seed=1, per_leaf_train=2, per_leaf_test=1, image_size=48)
    assert ds.images([0, 1]).shape == (2, 3, 48, 48)


def test_shapes_labels_and_concepts(shapes_small):
    h = shapes_small.hierarchy
    for label, concepts in zip(shapes_small.labels, shapes_small.pair_concepts):
        assert h.is_leaf(label)
        assert concepts == {label, h.parent_of(label), "shape"}


def test_shapes_deterministic_and_seed_dependent():
    a, b = make_shapes(seed=3, **SMALL), make_shapes(seed=3, **SMALL)
    c = make_shapes(seed=4, **SMALL)
    idx = np.arange(len(a))
    assert torch.equal(a.images(idx), b.images(idx))
    assert a.captions == b.captions and a.labels == b.labels
    assert np.array_equal(a.splits, b.splits)
    assert not torch.equal(a.images(idx), c.images(idx))
    assert a.captions != c.captions


def test_shapes_caption_levels(shapes_default):
    ds = shapes_default
    h = ds.hierarchy
    leaf_level = parent_level = 0
    for caption, label in zip(ds.captions, ds.labels):
        words = set(re.findall(r"[a-z]+", caption))
        parent_noun = ds.display_name(h.parent_of(label)).split()[0]
        if label in words:
            leaf_level += 1
        else:
            assert parent_noun in words, caption
            assert not words & set(h.leaves()), caption  # a parent caption names no leaf
            parent_level += 1
    share = parent_level / len(ds)
    assert 0.2 <= share <= 0.3
    # several styles: with colour, with size, with background, bare
    assert any(c.startswith("a red ") for c in ds.captions)
    assert any(" on a " in c or " on an " in c for c in ds.captions)
    assert any(c.startswith(("a small ", "a large ")) for c in ds.captions)
    assert "a triangle." in ds.captions and "a polygon." in ds.captions


def test_shapes_captions_are_truthful(shapes_small):
    """Colour words in captions match the pixels: the named background fills the corners."""
    from benchmarks.datasets.shapes import COLOURS
    ds = shapes_small
    checked = 0
    for i, caption in enumerate(ds.captions):
        m = re.search(r"on an? (\w+) background", caption)
        if not m:
            continue
        corner = ds.images([i])[0, :, 0, 0].numpy() * 255
        nearest = min(COLOURS, key=lambda c: np.linalg.norm(corner - np.array(COLOURS[c])))
        assert nearest == m.group(1), caption
        checked += 1
    assert checked > 10


def test_shapes_templates_and_prompts(shapes_default):
    ds = shapes_default
    assert ds.templates == list(SHAPES_TEMPLATES)
    assert ds.prompts("triangle")[0] == "a triangle."
    assert "a photo of an arrow." in ds.prompts("arrow")
    assert all("curved shape" in p for p in ds.prompts("curved"))
    # every prompt of a leaf is itself a caption seen in training
    captions = {ds.captions[i] for i in ds.indices("train")}
    for leaf in ds.leaf_classes():
        assert set(ds.prompts(leaf)) <= captions, leaf


def test_shapes_generation_time():
    start = time.perf_counter()
    make_shapes()
    assert time.perf_counter() - start < 5.0


def _silhouette_features(images: torch.Tensor) -> torch.Tensor:
    """Colour-, position-, scale- and rotation-invariant statistics of the foreground mask."""
    background = images[:, :, :1, :1]                                   # corner pixel colour
    mask = ((images - background).abs().sum(1) > 0.3).float()           # (n, s, s)
    size = mask.shape[-1]
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32),
                            torch.arange(size, dtype=torch.float32), indexing="ij")
    area = mask.sum((1, 2)).clamp(min=1.0)
    cy = (mask * ys).sum((1, 2)) / area
    cx = (mask * xs).sum((1, 2)) / area
    dy, dx = ys - cy[:, None, None], xs - cx[:, None, None]
    radius = (dy**2 + dx**2).sqrt() / area.sqrt()[:, None, None]
    edges = torch.linspace(0.0, 1.2, 13)
    radial_histogram = torch.stack(
        [((radius >= lo) & (radius < hi)).float().mul(mask).sum((1, 2)) for lo, hi in zip(edges[:-1], edges[1:])], 1
    ) / area[:, None]
    sector = ((torch.atan2(dy, dx) + np.pi) / (2 * np.pi) * 24).long().clamp(max=23)
    outline = torch.zeros(len(mask), 24).scatter_reduce(1, sector.flatten(1), (radius * mask).flatten(1), "amax")
    perimeter = (mask[:, 1:] != mask[:, :-1]).sum((1, 2)) + (mask[:, :, 1:] != mask[:, :, :-1]).sum((1, 2))
    return torch.cat([radial_histogram, outline.sort(1).values, (perimeter / area.sqrt())[:, None]], 1)


def test_shapes_leaves_are_visually_distinct(shapes_default):
    """Nearest-class-mean on colour- and pose-invariant silhouette statistics separates the leaves."""
    ds = shapes_default
    feats = _silhouette_features(ds.images(np.arange(len(ds))))
    train, test = ds.indices("train"), ds.indices("test")
    mean, std = feats[train].mean(0), feats[train].std(0) + 1e-6
    feats = (feats - mean) / std
    y = ds.targets(np.arange(len(ds)))
    centroids = torch.stack([feats[train][y[train] == k].mean(0) for k in range(len(ds.leaf_classes()))])
    predicted = torch.cdist(feats[test], centroids).argmin(1).numpy()
    per_class = [np.mean(predicted[y[test] == k] == k) for k in range(len(centroids))]
    assert np.mean(predicted == y[test]) > 0.9  # chance is 1/12
    assert min(per_class) > 0.75, dict(zip(ds.leaf_classes(), per_class))


# --------------------------------------------------------------------------------------------------
# splitting
# --------------------------------------------------------------------------------------------------


def test_split_forget_leaf(shapes_small):
    forget, retain = shapes_small.split_forget_retain(["triangle"])
    labels = np.array(shapes_small.labels)
    assert set(labels[forget]) == {"triangle"} and len(forget) == 20
    assert "triangle" not in set(labels[retain])
    assert sorted(np.concatenate([forget, retain])) == sorted(shapes_small.indices("train"))
    assert set(shapes_small.splits[forget]) == {"train"}


def test_split_forget_parent_removes_its_leaves(shapes_small):
    forget, retain = shapes_small.split_forget_retain(["polygon"])
    labels = np.array(shapes_small.labels)
    assert set(labels[forget]) == set(SHAPE_GROUPS["polygon"])
    assert not set(labels[retain]) & set(SHAPE_GROUPS["polygon"])


def test_split_forget_several_and_test_split(shapes_small):
    forget, retain = shapes_small.split_forget_retain(["circle", "symbol"], split="test")
    labels = np.array(shapes_small.labels)
    assert set(labels[forget]) == {"circle", *SHAPE_GROUPS["symbol"]}
    assert len(forget) == 5 * 5 and len(retain) == 7 * 5
    assert set(shapes_small.splits[np.concatenate([forget, retain])]) == {"test"}


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(["shape", "polygon", "curved", "symbol", "triangle", "circle",
                                  "star", "ring", "heart", "arrow", "trapezoid"]), min_size=1, max_size=4))
def test_split_partition_property(forget_list):
    ds = make_shapes(seed=0, per_leaf_train=3, per_leaf_test=1)
    covered = {leaf for leaf in ds.leaf_classes()
               if ds.hierarchy.closure([leaf]) & set(forget_list)}
    if covered == set(ds.leaf_classes()):  # the root, or all three groups
        with pytest.raises(DatasetError, match="no train pairs to retain"):
            ds.split_forget_retain(forget_list)
        return
    forget, retain = ds.split_forget_retain(forget_list)
    assert not set(forget) & set(retain)
    assert sorted(np.concatenate([forget, retain])) == sorted(ds.indices("train"))
    for i in forget:
        assert ds.pair_concepts[i] & set(forget_list)
    for i in retain:
        assert not ds.pair_concepts[i] & set(forget_list)


def test_split_errors(shapes_small):
    with pytest.raises(DatasetError, match=r"unknown concept\(s\) 'unicorn'.*known concepts:.*'triangle'"):
        shapes_small.split_forget_retain(["unicorn"])
    with pytest.raises(DatasetError, match="no train pairs to retain"):
        shapes_small.split_forget_retain(["shape"])
    with pytest.raises(DatasetError, match="no train pairs to retain"):
        shapes_small.split_forget_retain(["polygon", "curved", "symbol"])
    with pytest.raises(DatasetError, match="empty"):
        shapes_small.split_forget_retain([])
    with pytest.raises(DatasetError, match="unknown split 'valid'"):
        shapes_small.split_forget_retain(["triangle"], split="valid")


def test_images_index_forms_and_errors(shapes_small):
    a = shapes_small.images(np.array([3, 4]))
    assert torch.equal(a, shapes_small.images(torch.tensor([3, 4])))
    assert torch.equal(a, shapes_small.images([3, 4]))
    assert torch.equal(a, shapes_small.images(slice(3, 5)))
    assert shapes_small.images(7).shape == (1, 3, 32, 32)
    assert shapes_small.images([]).shape == (0, 3, 32, 32)
    image, caption = shapes_small[3]
    assert torch.equal(image, a[0]) and caption == shapes_small.captions[3]
    with pytest.raises(DatasetError, match="out of range"):
        shapes_small.images([len(shapes_small)])


def test_dataset_constructor_validation():
    h = ConceptHierarchy(ANIMALS)
    px = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    base = dict(name="t", hierarchy=h, captions=["a", "b"], splits=["train", "test"], image_size=4)
    with pytest.raises(DatasetError, match="not leaf concepts"):
        ConceptDataset(labels=["dog", "animal"], pixels=px, **base)
    with pytest.raises(DatasetError, match="not concepts of the hierarchy"):
        ConceptDataset(labels=["dog", "fish"], pixels=px, **base)
    with pytest.raises(DatasetError, match="exactly one of pixels"):
        ConceptDataset(labels=["dog", "lion"], **base)
    with pytest.raises(DatasetError, match="unknown split"):
        ConceptDataset(**{**base, "splits": ["train", "val"]}, labels=["dog", "lion"], pixels=px)
    with pytest.raises(DatasetError, match="placeholder"):
        ConceptDataset(labels=["dog", "lion"], pixels=px, templates=["a photo"], **base)
    ds = ConceptDataset(labels=["dog", "lion"], pixels=px, pair_concepts=[["tree"], []],
                        prompts={"dog": ["woof"]}, **base)
    assert ds.pair_concepts[0] == {"dog", "animal", "thing", "tree", "plant"}
    assert ds.prompts("dog") == ["woof"]
    assert ds.prompts("animal") == ["an animal.", "a photo of an animal."]


def test_article_helpers():
    assert with_article("arrow") == "an arrow" and with_article("red arrow") == "a red arrow"
    assert with_article("one") == "a one" and with_article("orange star") == "an orange star"
    assert fill_template("a photo of a {}.", "ellipse") == "a photo of an ellipse."
    assert fill_template("a photo of a {}.", "star") == "a photo of a star."
    assert fill_template("{} in a box", "apple") == "apple in a box"


# --------------------------------------------------------------------------------------------------
# digits
# --------------------------------------------------------------------------------------------------


def test_digits():
    ds = make_digits(seed=0)
    h = ds.hierarchy
    assert h.root == "digit" and h.children("digit") == ["even", "odd"]
    assert len(h.leaves()) == 10 and ds.leaf_classes() == h.leaves()
    assert h.parent_of("seven") == "odd" and h.parent_of("eight") == "even"
    assert len(ds) == 1797
    test_share = len(ds.indices("test")) / len(ds)
    assert 0.17 < test_share < 0.23
    labels = np.array(ds.labels)
    for leaf in h.leaves():  # stratified
        share = np.mean(ds.splits[labels == leaf] == "test")
        assert 0.15 < share < 0.25, leaf
    imgs = ds.images(np.arange(8))
    assert imgs.shape == (8, 3, 32, 32) and 0 <= float(imgs.min()) and float(imgs.max()) <= 1
    assert any("handwritten seven" in c for c in ds.captions)
    assert any("odd digit" in c for c in ds.captions)
    assert ds.prompts("odd")[0] == "an odd digit."
    forget, retain = ds.split_forget_retain(["odd"])
    assert set(labels[forget]) == {"one", "three", "five", "seven", "nine"}
    again = make_digits(seed=0)
    assert again.captions == ds.captions and np.array_equal(again.splits, ds.splits)
    assert torch.equal(again.images(np.arange(50)), ds.images(np.arange(50)))
    other = make_digits(seed=1)
    assert not np.array_equal(other.splits, ds.splits)
    assert make_digits(image_size=16).images([0]).shape == (1, 3, 16, 16)


# --------------------------------------------------------------------------------------------------
# folder format
# --------------------------------------------------------------------------------------------------


def _png(path: Path, colour=(200, 30, 30), size=(40, 24)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def _write_folder(root: Path, pairs=None, hierarchy=None, prompts=None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    hierarchy = hierarchy or {"thing": None, "animal": "thing", "cat": "animal", "dog": "animal",
                              "car": "thing"}
    (root / "hierarchy.json").write_text(json.dumps(hierarchy))
    if pairs is None:
        pairs = []
        for k, (concepts, split) in enumerate([(["cat"], "train"), (["dog", "car"], "train"),
                                               (["car"], "train"), (["cat"], "test")]):
            _png(root / "imgs" / f"{k}.png", colour=(50 * k, 10, 200))
            pairs.append({"image": f"imgs/{k}.png", "caption": f"photo {k}", "concepts": concepts, "split": split})
    lines = [p if isinstance(p, str) else json.dumps(p) for p in pairs]
    (root / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    if prompts is not None:
        (root / "prompts.json").write_text(json.dumps(prompts))
    return root


def test_folder_format_roundtrip(tmp_path):
    root = _write_folder(tmp_path / "mydata", prompts={"templates": ["a snap of a {}."],
                                                       "prompts": {"cat": ["a cat!"]}})
    ds = load_folder(root, image_size=16)
    assert len(ds) == 4 and ds.name == "mydata"
    assert ds.labels == ["cat", "dog", "car", "cat"]
    assert ds.pair_concepts[1] == {"dog", "animal", "thing", "car"}
    assert list(ds.splits) == ["train", "train", "train", "test"]
    imgs = ds.images([0, 2])
    assert imgs.shape == (2, 3, 16, 16)
    assert torch.allclose(imgs[1, :, 8, 8], torch.tensor([100, 10, 200]) / 255.0, atol=2 / 255)
    assert ds.prompts("cat") == ["a cat!"] and ds.prompts("dog") == ["a snap of a dog."]
    assert ds.prompts("animal") == ["a snap of an animal."]
    forget, retain = ds.split_forget_retain(["animal"])
    assert list(forget) == [0, 1] and list(retain) == [2]
    assert detect_format(root) == "folder"
    assert load_dataset(root, image_size=16).captions == ds.captions


def test_folder_json_files_may_start_with_a_byte_order_mark(tmp_path):
    root = _write_folder(tmp_path / "bom", prompts={"templates": ["a snap of a {}."]})
    for name in ("hierarchy.json", "pairs.jsonl", "prompts.json"):  # as Windows editors save them
        (root / name).write_bytes(b"\xef\xbb\xbf" + (root / name).read_bytes())
    ds = load_folder(root, image_size=16)
    assert ds.labels == ["cat", "dog", "car", "cat"] and ds.prompts("dog") == ["a snap of a dog."]


def test_folder_images_are_centre_cropped_and_read_from_disk_each_time(tmp_path):
    root = tmp_path / "d"
    img = np.zeros((20, 60, 3), dtype=np.uint8)
    img[:, :20] = (255, 0, 0)
    img[:, 20:40] = (0, 255, 0)
    img[:, 40:] = (0, 0, 255)
    root.mkdir()
    Image.fromarray(img).save(root / "wide.png")
    _write_folder(root, pairs=[{"image": str(root / "wide.png"), "caption": "c", "concepts": ["car"], "split": "train"}])
    ds = load_folder(root, image_size=10)
    out = ds.images([0])[0]
    assert out.shape == (3, 10, 10)
    assert float(out[1].mean()) > 0.9  # the centre crop is the green middle third
    (root / "wide.png").unlink()
    with pytest.raises(DatasetError, match=r"wide\.png.* does not exist"):
        ds.images([0])  # nothing was cached: a corpus larger than memory is read when needed


@pytest.mark.parametrize("mutate, pattern", [
    (lambda r: (r / "pairs.jsonl").write_text('{"image": "imgs/0.png", "caption": "x"\n'),
     r"pairs\.jsonl line 1: malformed JSON"),
    (lambda r: (r / "pairs.jsonl").write_text(
        json.dumps({"image": "imgs/0.png", "caption": "x", "concepts": ["cat"], "split": "train"})
        + "\n" + json.dumps({"image": "imgs/0.png", "concepts": ["cat"], "split": "train"}) + "\n"),
     r"pairs\.jsonl line 2: missing key\(s\) caption"),
    (lambda r: (r / "pairs.jsonl").write_text(
        json.dumps({"image": "imgs/0.png", "caption": "x", "concepts": ["unicorn"], "split": "train"})),
     r"pairs\.jsonl line 1: concept\(s\) 'unicorn' not in hierarchy\.json"),
    (lambda r: (r / "pairs.jsonl").write_text(
        json.dumps({"image": "imgs/nope.png", "caption": "x", "concepts": ["cat"], "split": "train"})),
     r"pairs\.jsonl line 1: image file .*nope\.png' does not exist"),
    (lambda r: (r / "pairs.jsonl").write_text(
        json.dumps({"image": "imgs/0.png", "caption": "x", "concepts": ["cat"], "split": "dev"})),
     r"line 1: 'split' must be 'train' or 'test'"),
    (lambda r: (r / "pairs.jsonl").write_text(
        json.dumps({"image": "imgs/0.png", "caption": "x", "concepts": ["animal"], "split": "train"})),
     r"line 1: none of the concepts .* is a leaf"),
    (lambda r: (r / "hierarchy.json").unlink(), r"missing file .*hierarchy\.json"),
    (lambda r: (r / "pairs.jsonl").unlink(), r"missing file .*pairs\.jsonl"),
    (lambda r: (r / "hierarchy.json").write_text('{"a": null,\n "b": }'), r"hierarchy\.json line 2: malformed JSON"),
    (lambda r: (r / "hierarchy.json").write_text('{"a": null, "b": null}'), r"hierarchy\.json: .*exactly one root"),
    (lambda r: (r / "prompts.json").write_text('{"templates": ["no placeholder"]}'), r"prompts\.json: 'templates'"),
    (lambda r: (r / "prompts.json").write_text('{"prompts": {"fish": ["x"]}}'), r"prompts\.json: .*'fish'"),
])
def test_folder_format_errors(tmp_path, mutate, pattern):
    root = _write_folder(tmp_path / "bad")
    mutate(root)
    with pytest.raises(DatasetError, match=pattern) as info:
        load_folder(root)
    assert "\n" not in str(info.value)


def test_folder_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_folder(tmp_path / "absent")


@pytest.mark.parametrize("name, content", [
    ("pairs.jsonl", json.dumps({"image": "imgs/0.png", "caption": "x", "concepts": ["cat"], "split": "train"}).encode()
     + b'\n{"image": "imgs/1.png", "caption": "caf\xe9", "concepts": ["dog"], "split": "train"}\n'),  # Latin-1
    ("hierarchy.json", b'{"thing": null, "caf\xe9": "thing"}'),
    ("prompts.json", b'{"templates": ["une photo d\'un {} \xe0 Paris."]}'),
], ids=["pairs.jsonl", "hierarchy.json", "prompts.json"])
def test_folder_text_files_that_are_not_utf8_are_named(tmp_path, name, content):
    root = _write_folder(tmp_path / "latin1")
    (root / name).write_bytes(content)
    where = r"pairs\.jsonl line 2" if name == "pairs.jsonl" else re.escape(name)
    with pytest.raises(DatasetError, match=where + r": byte 0x[0-9a-f]{2} .*must be saved as UTF-8") as info:
        load_folder(root)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["hierarchy.json", "prompts.json"])
def test_folder_empty_json_file_is_named(tmp_path, name):
    root = _write_folder(tmp_path / "empty")
    (root / name).write_text(" \n")
    with pytest.raises(DatasetError, match=re.escape(name) + r": the \w+ file is empty"):
        load_folder(root)


# --------------------------------------------------------------------------------------------------
# image decoding (every PIL mode) and the validation pass
# --------------------------------------------------------------------------------------------------


def _halves(mode: str, left, right, size=(16, 16)) -> Image.Image:
    """A ``mode`` image whose left half is the colour ``left`` and right half ``right``."""
    img = Image.new(mode, size, left)
    img.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return img


def _palette_with_transparency(path: Path) -> None:
    img = _halves("P", 0, 1)
    img.putpalette([0, 0, 0, 255, 0, 0])  # index 0: black, transparent; index 1: red
    img.save(path, transparency=0)


def _exif_rotated_jpeg(path: Path) -> None:
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)  # wide: top half red, bottom half blue
    pixels[:10], pixels[10:] = (255, 0, 0), (0, 0, 255)
    img = Image.fromarray(pixels)
    exif = img.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display (the top goes right)
    img.save(path, exif=exif.tobytes(), quality=95)


def _two_frame_gif(path: Path) -> None:
    frames = [Image.new("RGB", (16, 16), (255, 0, 0)), Image.new("RGB", (16, 16), (0, 0, 255))]
    frames[0].save(path, save_all=True, append_images=frames[1:])


WHITE, BLACK, RED, BLUE = (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)

# name: (file name, writer, expected RGB of the decoded image's left column, of its right column)
IMAGE_MODE_CASES = {
    "16-bit PNG": ("g16.png", lambda p: Image.fromarray(np.full((12, 20), 32768, np.uint16)).save(p),
                   (0.5,) * 3, (0.5,) * 3),
    "32-bit TIFF": ("g32.tif", lambda p: Image.fromarray(np.full((12, 20), 2 ** 30, np.int32)).save(p),
                    (0.5,) * 3, (0.5,) * 3),
    "float TIFF": ("f.tif", lambda p: Image.fromarray(np.full((12, 20), 0.25, np.float32)).save(p),
                   (0.25,) * 3, (0.25,) * 3),
    "palette + transparency": ("p.png", _palette_with_transparency, WHITE, RED),
    "CMYK JPEG": ("c.jpg", lambda p: Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(p, quality=95), RED, RED),
    "LA": ("la.png", lambda p: _halves("LA", (0, 0), (0, 255)).save(p), WHITE, BLACK),
    "RGBA": ("rgba.png", lambda p: _halves("RGBA", (0, 0, 255, 128), (255, 0, 0, 0)).save(p),
             (0.5, 0.5, 1.0), WHITE),
    "bilevel": ("b.png", lambda p: _halves("1", 0, 1).save(p), BLACK, WHITE),
    "EXIF-rotated JPEG": ("e.jpg", _exif_rotated_jpeg, BLUE, RED),
    "2-frame GIF": ("two.gif", _two_frame_gif, RED, RED),
}


@pytest.mark.parametrize("case", list(IMAGE_MODE_CASES))
def test_image_files_of_every_mode_decode_to_the_right_pixels(tmp_path, case):
    file_name, write, left, right = IMAGE_MODE_CASES[case]
    write(tmp_path / file_name)
    out = load_image_file(str(tmp_path / file_name), 8)
    assert out.dtype == torch.float32 and out.shape == (3, 8, 8)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert torch.allclose(out[:, :, 0].mean(1), torch.tensor(left), atol=0.03), out[:, :, 0]
    assert torch.allclose(out[:, :, -1].mean(1), torch.tensor(right), atol=0.03), out[:, :, -1]


def test_folder_dataset_serves_16_bit_images_at_their_grey_level(tmp_path):
    root = tmp_path / "deep"
    root.mkdir()
    Image.fromarray(np.full((12, 20), 32768, np.uint16)).save(root / "g16.png")
    _write_folder(root, pairs=[{"image": "g16.png", "caption": "c", "concepts": ["car"], "split": "train"}])
    assert torch.allclose(load_folder(root, image_size=8).images([0]), torch.tensor(0.5), atol=1 / 255)


def _break_images(root: Path) -> None:
    """Truncate ``imgs/1.png`` half-way and replace ``imgs/3.png`` by text."""
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "imgs" / "1.png")
    whole = (root / "imgs" / "1.png").read_bytes()
    (root / "imgs" / "1.png").write_bytes(whole[: len(whole) // 2])
    (root / "imgs" / "3.png").write_text("not an image")


def test_validate_images_names_every_bad_file(tmp_path):
    root = _write_folder(tmp_path / "broken")
    _break_images(root)
    ds = load_folder(root, image_size=8)
    with pytest.raises(DatasetError, match=r"2 of 4 image files cannot be decoded") as info:
        validate_images(ds, progress=False, workers=2)
    message = str(info.value)
    assert "1.png" in message and "3.png" in message and "0.png" not in message and "\n" not in message
    with pytest.raises(DatasetError, match=r"cannot decode image file .*1\.png"):
        ds.images([1])  # decoding lazily names the file too


def test_file_images_are_decoded_on_every_read_never_cached(tmp_path):
    from PIL import Image

    root = _write_folder(tmp_path / "live")
    ds = load_folder(root, image_size=8)
    first = ds.load_pixels(0)
    assert first.dtype == torch.uint8 and first.shape == (3, 8, 8)
    Image.new("RGB", (16, 16), (255, 0, 0)).save(ds.image_path(0))  # the file changes on disk
    again = ds.load_pixels(0)
    assert torch.equal(again[0], torch.full((8, 8), 255, dtype=torch.uint8)) and not torch.equal(again, first)
    assert torch.equal(ds.images([0])[0], again.float() / 255)


def test_validate_images_passes_good_and_in_memory_datasets(tmp_path):
    ds = load_folder(_write_folder(tmp_path / "good"), image_size=8)
    assert validate_images(ds, progress=False) is None
    start = time.perf_counter()
    validate_images(make_shapes(seed=0, per_leaf_train=2, per_leaf_test=1), progress=False)
    assert time.perf_counter() - start < 0.1  # no files: nothing to decode


# --------------------------------------------------------------------------------------------------
# COCO
# --------------------------------------------------------------------------------------------------


def _write_coco(root: Path) -> Path:
    """Two parts (train2017, val2017) in the real annotation format, with tiny PNGs."""
    categories = [
        {"supercategory": "person", "id": 1, "name": "person"},
        {"supercategory": "vehicle", "id": 3, "name": "car"},
        {"supercategory": "animal", "id": 18, "name": "dog"},
        {"supercategory": "animal", "id": 17, "name": "cat"},
    ]
    parts = {
        "train2017": [  # (image id, [(category id, area)], captions)
            (9, [(18, 500.0), (1, 100.0)], ["A dog next to a man.", "A brown dog."]),
            (25, [(3, 30.0), (3, 40.0), (1, 100.0)], ["Cars parked by a person."]),
            (30, [], ["An empty street."]),                    # no instances: skipped
            (42, [(17, 300.0)], ["A cat on a sofa."]),
        ],
        "val2017": [
            (139, [(17, 10.0), (18, 20.0)], ["A dog and a cat."]),
        ],
    }
    ann_dir = root / "annotations"
    ann_dir.mkdir(parents=True)
    for part, images in parts.items():
        cap = {"info": {}, "licenses": [], "images": [], "annotations": []}
        inst = {"info": {}, "licenses": [], "images": [], "annotations": [], "categories": categories}
        for image_id, objects, texts in images:
            file_name = f"{image_id:012d}.jpg"
            entry = {"license": 1, "file_name": file_name, "height": 24, "width": 32, "id": image_id}
            cap["images"].append(entry)
            inst["images"].append(entry)
            _png(root / "images" / part / file_name, colour=(image_id % 256, 80, 120), size=(32, 24))
            for text in texts:
                cap["annotations"].append({"image_id": image_id, "id": len(cap["annotations"]) + 1000 * image_id, "caption": text})
            for cat_id, area in objects:
                inst["annotations"].append({"segmentation": [[0, 0, 1, 1, 2, 2]], "area": area, "iscrowd": 0,
                                            "image_id": image_id, "bbox": [0, 0, 2, 2], "category_id": cat_id,
                                            "id": len(inst["annotations"]) + 1})
        (ann_dir / f"captions_{part}.json").write_text(json.dumps(cap))
        (ann_dir / f"instances_{part}.json").write_text(json.dumps(inst))
    return root


def test_coco_reader(tmp_path):
    root = _write_coco(tmp_path / "coco")
    ds = load_coco(root / "annotations", root / "images", image_size=8)
    assert ds.captions == ["A dog next to a man.", "A brown dog.", "Cars parked by a person.",
                           "A cat on a sofa.", "A dog and a cat."]
    assert ds.labels == ["dog", "dog", "person", "cat", "dog"]  # the category with the largest area
    assert list(ds.splits) == ["train"] * 4 + ["test"]
    h = ds.hierarchy
    assert h.root == "object" and h.parent_of("person") == "object"
    assert h.parent_of("dog") == "animal" and h.parent_of("car") == "vehicle"
    assert ds.pair_concepts[0] == {"dog", "animal", "person", "object"}
    assert ds.pair_concepts[2] == {"car", "vehicle", "person", "object"}
    assert ds.images([0, 4]).shape == (2, 3, 8, 8)
    forget, retain = ds.split_forget_retain(["person"])
    assert list(forget) == [0, 1, 2] and list(retain) == [3]
    assert ds.prompts("animal")[0] == "a photo of an animal."
    one = load_coco(root / "annotations", root / "images", captions_per_image=1)
    assert len(one) == 4
    assert detect_format(root) == "coco"
    assert load_dataset(root, image_size=8).captions == ds.captions


def test_coco_label_is_largest_total_area(tmp_path):
    root = _write_coco(tmp_path / "coco")
    inst_path = root / "annotations" / "instances_train2017.json"
    inst = json.loads(inst_path.read_text())
    for ann in inst["annotations"]:
        if ann["image_id"] == 25 and ann["category_id"] == 3:
            ann["area"] = 60.0  # each car is smaller than the person (100), both together are not
    inst_path.write_text(json.dumps(inst))
    ds = load_coco(root / "annotations", root / "images")
    assert ds.labels[2] == "car"


def test_coco_errors(tmp_path):
    root = _write_coco(tmp_path / "coco")
    (root / "images" / "val2017" / "000000000139.jpg").unlink()
    with pytest.raises(DatasetError, match="000000000139.jpg"):
        load_coco(root / "annotations", root / "images")
    assert len(load_coco(root / "annotations", root / "images", skip_missing_images=True)) == 4
    (root / "annotations" / "instances_val2017.json").unlink()
    with pytest.raises(DatasetError, match="missing instances_val2017.json"):
        load_coco(root / "annotations", root / "images")
    with pytest.raises(DatasetError, match="no captions"):
        load_coco(tmp_path, root / "images")


def test_coco_annotations_that_are_not_utf8_are_named(tmp_path):
    root = _write_coco(tmp_path / "coco")
    cap_path = root / "annotations" / "captions_val2017.json"
    cap_path.write_bytes(cap_path.read_text().replace("A dog and a cat.", "Un chien \u00e0 Paris.").encode("latin-1"))
    with pytest.raises(DatasetError, match=r"captions_val2017\.json: byte 0xe0 .*must be saved as UTF-8"):
        load_coco(root / "annotations", root / "images")


# --------------------------------------------------------------------------------------------------
# ImageFolder
# --------------------------------------------------------------------------------------------------


def test_imagefolder_with_split_folders(tmp_path):
    root = tmp_path / "tree"
    for split, n in (("train", 3), ("val", 1)):
        for cls in ("golden_retriever", "tabby", "airliner"):
            for k in range(n):
                _png(root / split / cls / f"{k}.jpg", size=(20, 20))
    (root / "hierarchy.json").write_text(json.dumps({"thing": None, "animal": "thing",
                                                     "golden_retriever": "animal", "tabby": "animal"}))
    ds = load_imagefolder(root, image_size=12)
    assert len(ds) == 12 and len(ds.indices("test")) == 3
    h = ds.hierarchy
    assert h.parent_of("tabby") == "animal" and h.parent_of("airliner") == "thing"
    assert "a photo of a golden retriever." in ds.captions
    assert "a photo of an airliner." in ds.captions
    assert ds.images([0]).shape == (1, 3, 12, 12)
    forget, _ = ds.split_forget_retain(["animal"])
    assert {ds.labels[i] for i in forget} == {"golden_retriever", "tabby"}
    assert detect_format(root) == "imagefolder"


def test_imagefolder_flat_split_is_deterministic(tmp_path):
    root = tmp_path / "flat"
    for cls in ("a1", "b2"):
        for k in range(10):
            _png(root / cls / f"{k}.png", size=(8, 8))
    one, two = load_imagefolder(root, seed=5), load_imagefolder(root, seed=5)
    assert np.array_equal(one.splits, two.splits)
    labels = np.array(one.labels)
    for cls in ("a1", "b2"):
        assert np.sum((labels == cls) & (one.splits == "test")) == 2
    assert one.hierarchy.root == "object" and one.hierarchy.leaves() == ["a1", "b2"]
    others = [load_imagefolder(root, seed=s).splits for s in range(6, 10)]
    assert any(not np.array_equal(o, one.splits) for o in others)


# --------------------------------------------------------------------------------------------------
# CIFAR-100 pickles
# --------------------------------------------------------------------------------------------------

FINE = ["apple", "maple_tree", "oak_tree", "bus", "tractor", "orange"]
COARSE = ["fruit_and_vegetables", "trees", "vehicles_1"]
FINE_TO_COARSE = {0: 0, 1: 1, 2: 1, 3: 2, 4: 2, 5: 0}


def _write_cifar(parent: Path, per_class=(4, 2)) -> Path:
    folder = parent / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in zip(("train", "test"), per_class):
        fine = [f for f in range(len(FINE)) for _ in range(n)]
        data = rng.integers(0, 256, size=(len(fine), 3072), dtype=np.uint8)
        data[0, :1024] = 255  # first image: pure red plane
        data[0, 1024:] = 0
        record = {b"filenames": [f"img_{i}.png".encode() for i in range(len(fine))],
                  b"batch_label": f"{split} batch".encode(),
                  b"fine_labels": fine,
                  b"coarse_labels": [FINE_TO_COARSE[f] for f in fine],
                  b"data": data}
        with open(folder / split, "wb") as handle:
            pickle.dump(record, handle, protocol=2)
    with open(folder / "meta", "wb") as handle:
        pickle.dump({b"fine_label_names": [n.encode() for n in FINE],
                     b"coarse_label_names": [n.encode() for n in COARSE]}, handle, protocol=2)
    return folder


def test_cifar100_reader(tmp_path):
    folder = _write_cifar(tmp_path)
    ds = load_cifar100(tmp_path)  # parent folder is accepted too
    assert len(ds) == 6 * 6 and len(ds.indices("test")) == 12
    h = ds.hierarchy
    assert h.root == "object" and sorted(h.children("object")) == sorted(COARSE)
    assert h.parent_of("oak_tree") == "trees" and h.parent_of("orange") == "fruit_and_vegetables"
    assert h.leaves() == sorted(FINE)
    assert ds.captions[0] == "a photo of an apple." and "a photo of a maple tree." in ds.captions
    img = ds.images([0])[0]
    assert torch.all(img[0] == 1.0) and torch.all(img[1:] == 0.0)  # planes decoded as R, G, B
    forget, retain = ds.split_forget_retain(["trees"])
    assert {ds.labels[i] for i in forget} == {"maple_tree", "oak_tree"} and len(forget) == 8
    assert ds.images([1, 2]).shape == (2, 3, 32, 32)
    big = load_cifar100(folder, image_size=64, max_per_class=1)
    assert len(big) == 12 and big.images([0]).shape == (1, 3, 64, 64)
    assert detect_format(folder) == "cifar100" and detect_format(tmp_path) == "cifar100"
    assert len(load_dataset(tmp_path, max_per_class=2)) == 24


def test_cifar100_rejects_code_in_pickles(tmp_path):
    folder = _write_cifar(tmp_path)

    class Payload:
        def __reduce__(self):
            return (print, ("this must not run",))

    with open(folder / "meta", "wb") as handle:
        pickle.dump({b"fine_label_names": Payload()}, handle, protocol=2)
    with pytest.raises(DatasetError, match="not a readable CIFAR-100 pickle"):
        load_cifar100(folder)


# --------------------------------------------------------------------------------------------------
# load_dataset
# --------------------------------------------------------------------------------------------------


def test_registry_and_load_dataset(tmp_path):
    assert list_datasets() == sorted(DATASETS) and {"digits", "glyphs", "shapes", "taxonomy"} <= set(DATASETS)
    small = load_dataset("shapes", seed=2, image_size=24, per_leaf_train=2, per_leaf_test=1)
    assert small.image_size == 24 and len(small) == 36
    assert small.captions == make_shapes(seed=2, per_leaf_train=2, per_leaf_test=1, image_size=24).captions
    with pytest.raises(DatasetError, match="neither a built-in name nor an existing path.*shapes"):
        load_dataset("imagenet-21k")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="cannot tell the format.*pairs.jsonl"):
        load_dataset(tmp_path / "empty")
    with pytest.raises(DatasetError, match="not understood by the shapes reader"):
        load_dataset("shapes", colour="red")


# --------------------------------------------------------------------------------------------------
# The source registry
# --------------------------------------------------------------------------------------------------

WIDGETS_FILE = "widgets.txt"


@pytest.fixture
def format_registry(monkeypatch):
    """The registry module, with its formats restored after the test so none a test adds leaks out."""
    monkeypatch.setattr(registry, "_FORMATS", dict(registry._FORMATS))
    return registry


def _register_widgets(reg) -> dict:
    """Register a made-up format: ``widgets.txt`` names one leaf per line, every image is grey.

    Returns the arguments of each call to its reader, to check what ``load_dataset`` passes on.
    """
    calls = {}

    @reg.register_format("widgets", detect=lambda root: (root / WIDGETS_FILE).is_file(), layout=WIDGETS_FILE)
    def read_widgets(folder, image_size=32, seed=0, shade=128):
        calls.update(folder=folder, image_size=image_size, seed=seed, shade=shade)
        leaves = (folder / WIDGETS_FILE).read_text().split()
        return ConceptDataset(
            name="widgets", hierarchy=ConceptHierarchy({"widget": None, **{leaf: "widget" for leaf in set(leaves)}}),
            captions=[f"a {leaf}." for leaf in leaves], labels=leaves, splits=["train"] * len(leaves),
            image_size=image_size, pixels=torch.full((len(leaves), 3, 4, 4), shade, dtype=torch.uint8),
        )

    return calls


def test_registered_format_is_detected_and_loaded(tmp_path, format_registry):
    calls = _register_widgets(format_registry)
    root = tmp_path / "mine"
    root.mkdir()
    (root / WIDGETS_FILE).write_text("gear\nsprocket\ngear\n")
    assert detect_format(root) == "widgets"
    ds = load_dataset(root, seed=7, image_size=8, shade=255)
    assert calls == dict(folder=root, image_size=8, seed=7, shade=255)
    assert ds.labels == ["gear", "sprocket", "gear"] and ds.images([0]).shape == (1, 3, 8, 8)
    assert torch.all(ds.images([1]) == 1.0)
    with pytest.raises(DatasetError, match=r"option\(s\) colour are not understood by the widgets reader; "
                                           r"it accepts shade$"):
        load_dataset(root, colour="red")


def test_imagefolder_stays_the_last_format_tried(tmp_path, format_registry):
    _register_widgets(format_registry)
    assert list_formats() == ["folder", "cifar100", "coco", "webdataset", "widgets", "imagefolder"]
    root = tmp_path / "both"
    _png(root / "cat" / "0.png", size=(8, 8))
    assert detect_format(root) == "imagefolder"
    (root / WIDGETS_FILE).write_text("gear\n")
    assert detect_format(root) == "widgets"  # a class folder of images does not outrank it
    _write_folder(root)
    assert detect_format(root) == "folder"  # higher priority than a format registered by default


def test_duplicate_names_are_refused(format_registry):
    before = (list_formats(), list_datasets())
    with pytest.raises(ValueError, match="dataset format 'coco' is already registered"):
        format_registry.register_format("coco", detect=bool, layout="anything")(load_coco)
    with pytest.raises(ValueError, match="built-in dataset 'shapes' is already registered"):
        format_registry.register_builtin("shapes")(make_digits)
    with pytest.raises(TypeError, match="'gadgets' needs a callable reader and a callable detect"):
        format_registry.register_format("gadgets", detect="gadgets.txt", layout="gadgets.txt")(load_folder)
    assert (list_formats(), list_datasets()) == before


def test_list_formats_and_builtins():
    assert list_formats() == ["folder", "cifar100", "coco", "webdataset", "imagefolder"]
    assert list_datasets() == sorted(DATASETS) and DATASETS["digits"] is make_digits
    with pytest.raises(TypeError):
        DATASETS["mine"] = make_shapes  # a read-only view: register with register_builtin


def test_error_when_no_format_fits_names_every_format(tmp_path, format_registry):
    expected = (f"expected a built-in name ({', '.join(list_datasets())}) or a folder holding pairs.jsonl + hierarchy.json, "
                "CIFAR-100 pickles (cifar-100-python/ with train, test, meta), COCO annotations "
                "(captions_*.json + instances_*.json), *.tar shards + hierarchy.json or class sub-folders of images")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no data here")
    with pytest.raises(DatasetError) as info:
        load_dataset(tmp_path / "notes")
    assert str(info.value) == f"cannot tell the format of dataset folder {str(tmp_path / 'notes')!r}; {expected}"
    with pytest.raises(DatasetError) as info:
        load_dataset(tmp_path / "notes" / "readme.txt")
    assert str(info.value) == f"dataset path {str(tmp_path / 'notes' / 'readme.txt')!r} is a file; {expected}"
    with pytest.raises(DatasetError, match="needs a dataset name or path, got int"):
        load_dataset(3)
    _register_widgets(format_registry)
    with pytest.raises(DatasetError, match=r"instances_\*\.json\), \*\.tar shards \+ hierarchy\.json, widgets\.txt or class sub-folders of images$"):
        load_dataset(tmp_path / "notes")
