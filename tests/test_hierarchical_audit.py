"""Tests of the hierarchical audit (benchmarks/audits/hierarchical.py): exact values on a hand-built
tree, properties on random trees against a breadth-first-search reference, and the audit end to end
on hand-made embeddings of the ``shapes`` data (no training)."""

from __future__ import annotations

import math
from collections import deque
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import models
from benchmarks.audits import AuditContext, Embedded, audit_hierarchical, audit_zero_shot
from benchmarks.audits.context import GROUPS
from benchmarks.audits.hierarchical import TreeScores, hierarchical_scores
from benchmarks.common import EncodedDataset
from benchmarks.datasets import ConceptHierarchy, load_dataset
from manifolds import Lorentz

# thing ─┬─ animal ─┬─ mammal ─┬─ cat        depths: thing 0, animal/vehicle 1,
#        │          │          └─ dog        mammal/bird/car/boat 2, cat/dog 3
#        │          └─ bird
#        └─ vehicle ─┬─ car
#                    └─ boat
TREE = ConceptHierarchy({"thing": None, "animal": "thing", "vehicle": "thing", "mammal": "animal", "bird": "animal",
                         "cat": "mammal", "dog": "mammal", "car": "vehicle", "boat": "vehicle"})
CLASSES = ["bird", "boat", "car", "cat", "dog"]


def index(*names):
    return torch.tensor([CLASSES.index(name) for name in names])


def test_pair_scores_on_the_hand_built_tree():
    """A(v) = v and its ancestors without the root: A(cat) = {cat, mammal, animal}, A(bird) = {bird, animal}."""
    scores = TreeScores.build(TREE, CLASSES)
    cases = {  # (predicted, true): (TIE, LCA depth, precision, recall, Jaccard, sibling)
        ("cat", "cat"): (0, 3, 1, 1, 1, False),
        ("dog", "cat"): (2, 2, 2 / 3, 2 / 3, 2 / 4, True),
        ("bird", "cat"): (3, 1, 1 / 2, 1 / 3, 1 / 4, False),
        ("cat", "bird"): (3, 1, 1 / 3, 1 / 2, 1 / 4, False),
        ("car", "cat"): (5, 0, 0, 0, 0, False),
        ("boat", "car"): (2, 1, 1 / 2, 1 / 2, 1 / 3, True),
    }
    for (predicted, true), expected in cases.items():
        k, t = CLASSES.index(predicted), CLASSES.index(true)
        got = (scores.tree_error[k, t], scores.lca_depth[k, t], scores.precision[k, t], scores.recall[k, t],
               scores.jaccard[k, t], bool(scores.sibling[k, t]))
        assert got == pytest.approx(expected, abs=1e-15), (predicted, true)


def test_means_over_hand_picked_predictions():
    scores = TreeScores.build(TREE, CLASSES)
    results = hierarchical_scores(scores, index("cat", "dog", "bird", "car"), index("cat", "cat", "cat", "cat"))
    assert results == pytest.approx({
        "tree_error": (0 + 2 + 3 + 5) / 4, "lca_depth": (3 + 2 + 1 + 0) / 4,
        "precision": (1 + 2 / 3 + 1 / 2 + 0) / 4, "recall": (1 + 2 / 3 + 1 / 3 + 0) / 4,
        "jaccard": (1 + 1 / 2 + 1 / 4 + 0) / 4,
        "sibling_rate": 1 / 4, "sibling_share": 1 / 3,  # of the three wrong predictions, only "dog" shares cat's parent
        "tree_error_uniform": (3 + 5 + 5 + 0 + 2) / 5,  # bird, boat, car, cat, dog against cat
    }, abs=1e-15)


def test_all_correct_has_no_sibling_share_and_nothing_is_nan_everywhere():
    scores = TreeScores.build(TREE, CLASSES)
    correct = hierarchical_scores(scores, index("bird", "cat"), index("bird", "cat"))
    assert correct["tree_error"] == 0 and correct["lca_depth"] == 2.5 and correct["precision"] == 1
    assert math.isnan(correct["sibling_share"])  # no wrong prediction to place
    empty = hierarchical_scores(scores, torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    assert all(math.isnan(value) for value in empty.values())


def test_the_root_cannot_be_a_class():
    with pytest.raises(ValueError, match="'thing' is the root of the concept hierarchy"):
        TreeScores.build(TREE, ["thing", "cat"])


# ------------------------------------------------------------------------ random trees
@st.composite
def trees(draw):
    """A random rooted tree on ``n`` nodes (node ``i`` hangs below a node ``< i``) and its leaves."""
    n = draw(st.integers(3, 14))
    parents = [None] + [draw(st.integers(0, i - 1)) for i in range(1, n)]
    hierarchy = ConceptHierarchy({f"n{i}": (None if p is None else f"n{p}") for i, p in enumerate(parents)})
    return hierarchy, hierarchy.leaves()


def path_length(hierarchy, a: str, b: str) -> int:
    """Edges between ``a`` and ``b`` by breadth-first search on the undirected tree (HyCoCLIP's
    shortest path), independent of the ancestor arithmetic under test."""
    neighbours = {c: set(hierarchy.children(c)) | ({hierarchy.parent_of(c)} - {None}) for c in hierarchy.concepts()}
    seen, queue = {a: 0}, deque([a])
    while queue:
        node = queue.popleft()
        for other in neighbours[node] - set(seen):
            seen[other] = seen[node] + 1
            queue.append(other)
    return seen[b]


@given(trees())
def test_tree_scores_properties_on_random_trees(tree):
    hierarchy, leaves = tree
    scores = TreeScores.build(hierarchy, leaves)
    depth = np.array([hierarchy.depth(leaf) for leaf in leaves], dtype=np.float64)
    reference = np.array([[path_length(hierarchy, p, t) for t in leaves] for p in leaves], dtype=np.float64)
    np.testing.assert_array_equal(scores.tree_error, reference)
    np.testing.assert_array_equal(scores.tree_error, depth[:, None] + depth[None, :] - 2 * scores.lca_depth)
    np.testing.assert_array_equal(scores.lca_depth, scores.lca_depth.T)
    assert np.all(scores.lca_depth <= np.minimum(depth[:, None], depth[None, :]))
    np.testing.assert_allclose(scores.precision, scores.recall.T)
    for values in (scores.precision, scores.recall, scores.jaccard):
        assert np.all((0 <= values) & (values <= 1)) and np.all(np.diag(values) == 1)
    assert np.all(scores.jaccard <= np.minimum(scores.precision, scores.recall) + 1e-15)
    # Exactly the distinct pairs of one parent are siblings, two edges apart.
    assert not np.any(np.diag(scores.sibling))
    assert np.all(scores.tree_error[scores.sibling] == 2)


@given(trees(), st.data())
def test_means_are_in_range_and_zero_exactly_when_all_correct(tree, data):
    hierarchy, leaves = tree
    scores = TreeScores.build(hierarchy, leaves)
    n = data.draw(st.integers(1, 12))
    true = torch.tensor(data.draw(st.lists(st.integers(0, len(leaves) - 1), min_size=n, max_size=n)))
    predicted = torch.tensor(data.draw(st.lists(st.integers(0, len(leaves) - 1), min_size=n, max_size=n)))
    results = hierarchical_scores(scores, predicted, true)
    for key in ("precision", "recall", "jaccard", "sibling_rate"):
        assert 0 <= results[key] <= 1
    assert results["sibling_rate"] * n <= int((predicted != true).sum()) + 1e-9  # siblings are wrong predictions
    assert (results["tree_error"] == 0) == bool(torch.equal(predicted, true))
    assert results["tree_error"] >= 0 and results["lca_depth"] >= 0
    assert math.isnan(results["sibling_share"]) == bool(torch.equal(predicted, true))


# ------------------------------------------------------------------- the audit on shapes
@pytest.fixture(scope="module")
def encoded():
    shapes = load_dataset("shapes", seed=0, per_leaf_train=4, per_leaf_test=3)
    return EncodedDataset.build(shapes, models.create_model("meru-tiny").context_length)


def hand_made_embedded(context, forget_images_on: str):
    """Every image on its class's zero-shot embedding, except the forget-test images, which sit on
    the embedding of class ``forget_images_on``."""
    geometry = Lorentz(c=1.0)
    classes = context.data.classes
    class_points = geometry.lift(2.0 * torch.eye(len(classes)))
    targets = {g: torch.from_numpy(context.data.targets[context.group(g)]) for g in GROUPS}
    images = {g: class_points[targets[g]] for g in GROUPS}
    images["forget_test"] = class_points[classes.index(forget_images_on)].expand(len(targets["forget_test"]), -1)
    embedded = Embedded(images=images, texts=images, targets=targets, match_ids={}, classes=class_points,
                        parents=class_points[:1])
    return SimpleNamespace(geometry=geometry), embedded


@pytest.mark.parametrize("stand_in, tree_error, lca_depth, sibling_share", [
    ("triangle", 0.0, 2.0, math.nan),  # still recognised
    ("square", 2.0, 1.0, 1.0),         # reorganised: a sibling under "polygon"
    ("circle", 4.0, 0.0, 0.0),         # another branch: only the root in common
])
def test_audit_on_hand_made_embeddings(encoded, stand_in, tree_error, lca_depth, sibling_share):
    context = AuditContext.build(encoded, ["triangle"])
    model, embedded = hand_made_embedded(context, stand_in)
    results = audit_hierarchical(model, context, embedded)
    assert results["forget_tree_error"] == tree_error and results["forget_lca_depth"] == lca_depth
    assert results["forget_sibling_share"] == pytest.approx(sibling_share, nan_ok=True)
    assert results["retain_tree_error"] == 0 and results["retain_hierarchical_precision"] == 1
    assert "retain_sibling_share" not in results and results["retain_sibling_rate"] == 0
    assert results["forget_sibling_rate"] == (stand_in == "square")
    # shapes: 12 leaves at depth 2 in 3 families of 4; from a leaf: itself 0, 3 siblings at 2, 8 at 4.
    assert results["forget_tree_error_uniform"] == pytest.approx((3 * 2 + 8 * 4) / 12)


def test_the_audit_reuses_the_zero_shot_predictions(encoded):
    """Zero-shot and hierarchical audits classify once: the hierarchical audit reads the predictions
    the zero-shot audit left in the embedding cache (here replaced by hand to show it)."""
    context = AuditContext.build(encoded, ["triangle"])
    model, embedded = hand_made_embedded(context, "triangle")
    assert audit_zero_shot(model, context, embedded)["forget_accuracy"] == 1.0
    assert set(embedded.leaf_predictions) == {"forget_test", "retain_test"}
    square = encoded.classes.index("square")
    embedded.leaf_predictions["forget_test"] = torch.full_like(embedded.leaf_predictions["forget_test"], square)
    assert audit_hierarchical(model, context, embedded)["forget_sibling_share"] == 1.0
