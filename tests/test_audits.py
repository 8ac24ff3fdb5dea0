"""Tests of benchmarks.audits: metric functions on hand-made inputs with known answers, the probe on
separable clusters for both geometries, and every audit family end to end on tiny pretrained
MERU and CLIP models (a few pretraining steps on a small shapes dataset)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import geoopt
import numpy as np
import pytest
import torch

import models
from benchmarks.audits import (
    AUDIT_FAMILIES, AuditContext, Embedded, auc, audit_relearn, audit_zero_shot, recall_at_k, run_audits,
)
from benchmarks.audits.alignment import alignment_gap
from benchmarks.audits.context import GROUPS, _match_ids, subsample
from benchmarks.audits.geometry import cone_fraction, in_cone
from benchmarks.audits.probe import train_probe
from benchmarks.audits.retrieval import group_recall
from benchmarks.common import EncodedDataset
from benchmarks.datasets import load_dataset
from benchmarks.pretrain import pretrain
from manifolds import Euclidean, Lorentz

REQUIRED_KEYS = (
    "forget_accuracy", "retain_accuracy", "parent_accuracy", "mia_auc", "probe_forget_accuracy",
    "relearn_forget_accuracy", "alignment_gap", "forget_image_dist0", "retain_image_dist0",
    "forget_in_cone", "recall",
)


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """One intra-op thread for this module: every tensor here is tiny, and on a shared 2-core
    machine two threads waiting on each other made the small ops 10-30x slower (measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


GEOMETRIES = {"lorentz": lambda: Lorentz(c=1.0, learnable=True), "euclidean": lambda: Euclidean(normalize=True)}


# ------------------------------------------------------------------------------------------ AUC
def test_auc_separated_reversed_and_tied():
    assert auc([2.0, 3.0, 4.0], [0.0, 1.0]) == 1.0
    assert auc([0.0, 1.0], [2.0, 3.0, 4.0]) == 0.0
    assert auc([1.0, 1.0], [1.0, 1.0, 1.0]) == 0.5


def test_auc_hand_example():
    # Positive 0.9 beats all three negatives (3); 0.4 beats 0.1 and ties 0.4 (1.5): 4.5 / 6.
    assert auc(np.array([0.9, 0.4]), np.array([0.5, 0.1, 0.4])) == pytest.approx(0.75)
    assert auc(torch.tensor([0.9, 0.4]), torch.tensor([0.5, 0.1, 0.4])) == pytest.approx(0.75)


def test_auc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    pos, neg = rng.integers(0, 5, 30).astype(float), rng.integers(0, 5, 20).astype(float)
    brute = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert auc(pos, neg) == pytest.approx(brute)


def test_auc_empty_or_nan_side_is_nan():
    assert math.isnan(auc([], [1.0]))
    assert math.isnan(auc([float("nan")], [1.0]))


# --------------------------------------------------------------------------------------- recall
def test_recall_identity_is_perfect():
    assert recall_at_k(torch.eye(7), (1, 5)) == {"1": 1.0, "5": 1.0}


def test_recall_known_ranks():
    # Query i's own item has exactly i wrong items above it, so recall@k = min(k, n) / n.
    n = 12
    similarity = -torch.arange(n, dtype=torch.float32).repeat(n, 1)
    similarity[torch.arange(n), torch.arange(n)] = -(torch.arange(n, dtype=torch.float32) - 0.5)
    assert recall_at_k(similarity, (1, 5, 10)) == {"1": pytest.approx(1 / 12), "5": pytest.approx(5 / 12),
                                                   "10": pytest.approx(10 / 12)}


def test_recall_permuted_gallery():
    # Image i is identical to caption perm[i]: only the fixed points of perm are found at rank 1.
    perm = torch.tensor([1, 0, 2, 4, 3, 5])
    texts = torch.nn.functional.normalize(torch.randn(6, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    images = texts[perm]
    recall = recall_at_k(images @ texts.t(), (1, 6))
    assert recall["1"] == pytest.approx(2 / 6) and recall["6"] == 1.0


def test_recall_ties_count_against_and_duplicates_match():
    assert recall_at_k(torch.ones(5, 5), (1, 4)) == {"1": 0.0, "4": 0.0}  # a collapsed embedding
    # Captions 0 and 1 are the same string: a query may find either of them.
    similarity = torch.tensor([[0.5, 0.9, 0.1], [0.9, 0.5, 0.1], [0.0, 0.2, 0.8]])
    ids = torch.tensor([0, 0, 1])
    assert recall_at_k(similarity, (1,))["1"] == pytest.approx(1 / 3)
    assert recall_at_k(similarity, (1,), ids, ids)["1"] == 1.0


@pytest.mark.parametrize("name", GEOMETRIES)
def test_group_recall_on_matched_embeddings(name):
    geometry = GEOMETRIES[name]()
    features = torch.randn(20, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        images, texts = geometry.lift(features), geometry.lift(features * 1.01)
    recall = group_recall(SimpleNamespace(geometry=geometry), images, texts)
    assert recall["image_to_text"]["1"] == 1.0 and recall["text_to_image"]["1"] == 1.0


def test_captions_of_one_image_are_interchangeable_in_retrieval_and_alignment():
    # COCO-like: images A and B with two captions each (pairs 0-3), and pair 4 whose caption
    # repeats pair 2's on an in-memory image.
    dataset = SimpleNamespace(captions=["a cat", "the cat", "a dog", "one dog", "a dog"],
                              image_path=lambda i: ["a.jpg", "a.jpg", "b.jpg", "b.jpg", None][i])
    ids = _match_ids(dataset, np.arange(5))
    assert ids[0] == ids[1] and ids[2] == ids[3] == ids[4] and ids[0] != ids[2]
    assert len(set(_match_ids(dataset, np.array([0, 2, 4])).tolist())) == 2  # within a subset too
    geometry = Euclidean(normalize=True)
    model = SimpleNamespace(geometry=geometry)
    images = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])  # a perfect model:
    texts = torch.tensor([[1.0, 0.1], [1.0, -0.1], [0.1, 1.0], [-0.1, 1.0]])  # captions near their image
    texts = geometry.lift(texts)
    ids = torch.tensor([0, 0, 1, 1])
    alone = group_recall(model, images, texts)  # the other caption of the same image counts as wrong
    assert alone["text_to_image"]["1"] == 0.0  # the two copies of each image tie
    recall = group_recall(model, images, texts, ids)
    assert recall["image_to_text"]["1"] == 1.0 and recall["text_to_image"]["1"] == 1.0
    gap = alignment_gap(model, images, texts, ids)
    assert gap["mismatched"] == pytest.approx(float((images @ texts.t())[:2, 2:].mean()))


# ------------------------------------------------------------------------------------ alignment
@pytest.mark.parametrize("name", GEOMETRIES)
def test_alignment_gap_sign(name):
    geometry = GEOMETRIES[name]()
    model = SimpleNamespace(geometry=geometry)
    features = torch.randn(16, 6, generator=torch.Generator().manual_seed(2))
    noise = 0.05 * torch.randn(16, 6, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        texts = geometry.lift(features)
        aligned = alignment_gap(model, geometry.lift(features + noise), texts)
        opposed = alignment_gap(model, geometry.lift(-features), texts)
    assert aligned["gap"] > 0.1
    assert opposed["gap"] < -0.1
    assert aligned["gap"] == pytest.approx(aligned["matched"] - aligned["mismatched"])


# ---------------------------------------------------------------------------------------- cones
def test_cone_membership_on_hand_made_lorentz_points():
    geometry = Lorentz(c=1.0)
    e1, e2 = torch.eye(4)[0], torch.eye(4)[1]
    text = geometry.lift(0.5 * e1).expand(5, -1)  # half-aperture asin(0.2 / sinh 0.5) = 0.394
    images = geometry.lift(torch.stack([
        2.0 * e1,                  # further out on the same ray: angle 0, inside
        2.0 * e1 + 0.2 * e2,       # slightly off the ray: angle 0.17, inside
        2.0 * e1 + 0.6 * e2,       # further off: angle 0.49, outside
        2.0 * e2,                  # a perpendicular direction: outside
        0.2 * e1,                  # towards the origin: angle pi, outside (the cone opens outwards)
    ]))
    assert in_cone(geometry, text, images).tolist() == [True, True, False, False, False]
    assert cone_fraction(geometry, text, images) == pytest.approx(0.4)
    assert math.isnan(cone_fraction(geometry, text[:0], images[:0]))


# ---------------------------------------------------------------------------------------- probe
@pytest.mark.parametrize("name", GEOMETRIES)
def test_probe_separates_clusters(name):
    geometry = GEOMETRIES[name]()
    generator = torch.Generator().manual_seed(4)
    centres = 1.5 * torch.eye(8)[:4]
    labels = torch.arange(4).repeat_interleave(40)
    features = centres[labels] + 0.15 * torch.randn(len(labels), 8, generator=generator)
    with torch.no_grad():
        embeddings = geometry.lift(features)
    train, test = torch.arange(len(labels)) % 2 == 0, torch.arange(len(labels)) % 2 == 1
    before = [p.detach().clone() for p in geometry.parameters()]
    probe = train_probe(geometry, embeddings[train], labels[train], 4, epochs=60)
    with torch.no_grad():
        accuracy = (probe(embeddings[test]).argmax(1) == labels[test]).float().mean().item()
    assert accuracy >= 0.98
    # The probe lives on a frozen copy: the model's (learnable) curvature is neither trained nor
    # given a gradient.
    assert all(torch.equal(a, b) and b.grad is None for a, b in zip(before, geometry.parameters()))
    assert probe.geometry is not geometry


# -------------------------------------------------------------------------- context on real data
@pytest.fixture(scope="module")
def shapes():
    return load_dataset("shapes", seed=0, per_leaf_train=24, per_leaf_test=8)


@pytest.fixture(scope="module")
def encoded(shapes):
    return EncodedDataset.build(shapes, models.create_model("meru-tiny").context_length)


def test_context_groups_and_classes(encoded):
    context = AuditContext.build(encoded, ["triangle"])
    assert [encoded.classes[k] for k in context.forget_classes] == ["triangle"]
    assert len(context.forget_train) == 24 and len(context.forget_test) == 8
    assert set(encoded.targets[context.retain_test]) == set(context.retain_classes)
    assert context.reference_parent("triangle") == "polygon"
    assert context.parent_concepts == ["curved", "polygon", "symbol"]

    inner = AuditContext.build(encoded, "polygon")
    assert sorted(encoded.classes[k] for k in inner.forget_classes) == ["rectangle", "square", "trapezoid", "triangle"]
    # A forgotten parent is replaced by its own parent at the parent level.
    assert inner.reference_parent("square") == "shape" and inner.reference_parent("star") == "symbol"
    assert inner.parent_concepts == ["curved", "shape", "symbol"]


def test_context_subsampling_is_deterministic_and_bounded(encoded):
    a = AuditContext.build(encoded, ["circle"], seed=3, max_pairs_per_group=10)
    b = AuditContext.build(encoded, ["circle"], seed=3, max_pairs_per_group=10)
    full = AuditContext.build(encoded, ["circle"])
    for group in GROUPS:
        assert np.array_equal(a.group(group), b.group(group)) and len(a.group(group)) <= 10
        assert set(a.group(group)) <= set(full.group(group))
    assert np.array_equal(subsample(np.arange(5), 10), np.arange(5))


def _hand_made_embedded(context, forget_leaf_stands_in_for: str):
    """Embeddings where every image sits exactly on its class's zero-shot embedding, except the
    forget-test images, which sit on the embedding of class ``forget_leaf_stands_in_for``."""
    geometry = Lorentz(c=1.0)
    classes, hierarchy = context.data.classes, context.data.dataset.hierarchy
    directions = torch.eye(len(classes) + 1)[: len(classes)]
    class_points = geometry.lift(2.0 * directions)
    parent_points = geometry.lift(torch.stack([
        sum(directions[classes.index(leaf)] for leaf in hierarchy.leaves() if parent in hierarchy.ancestors(leaf))
        for parent in context.parent_concepts
    ]))
    targets = {g: torch.from_numpy(context.data.targets[context.group(g)]) for g in GROUPS}
    images = {g: class_points[targets[g]] for g in GROUPS}
    images["forget_test"] = class_points[classes.index(forget_leaf_stands_in_for)].expand(len(targets["forget_test"]), -1)
    embedded = Embedded(images=images, texts=images, targets=targets, match_ids={}, classes=class_points,
                        parents=parent_points)
    return SimpleNamespace(geometry=geometry), embedded


@pytest.mark.parametrize("stand_in, leaf, parent", [("triangle", 1.0, 1.0), ("square", 0.0, 1.0), ("circle", 0.0, 0.0)])
def test_zero_shot_leaf_and_parent_accuracy_on_hand_made_embeddings(encoded, stand_in, leaf, parent):
    context = AuditContext.build(encoded, ["triangle"])
    model, embedded = _hand_made_embedded(context, stand_in)
    results = audit_zero_shot(model, context, embedded)
    assert results["forget_accuracy"] == leaf and results["parent_accuracy"] == parent
    assert results["retain_accuracy"] == 1.0 and results["retain_parent_accuracy"] == 1.0


# ------------------------------------------------------------------------- tiny trained models
@pytest.fixture(scope="module", params=["meru-tiny", "clip-tiny"])
def trained(request, encoded):
    torch.manual_seed(0)
    model = models.create_model(request.param)
    pretrain(model, encoded, steps=6, batch_size=48, lr=3e-3, warmup=1, progress=False)
    return model.eval()


@pytest.fixture(scope="module")
def context(encoded):
    return AuditContext.build(encoded, ["triangle"], seed=0)


FAST = {"relearn": {"steps": 2, "n_forget": 4}, "probe": {"epochs": 20}}


def test_run_audits_returns_every_key_finite(trained, context):
    results = run_audits(trained, context, options=FAST)
    missing = [key for key in REQUIRED_KEYS if key not in results]
    assert not missing
    json.dumps(results, allow_nan=False)  # JSON-serialisable and finite all the way down
    for direction in ("image_to_text", "text_to_image"):
        for group in ("retain", "forget"):
            assert set(results["recall"][group][direction]) == {"1", "5", "10"}
    assert results["alignment_groups"] == list(GROUPS)
    assert set(results["alignment_matrix"]) == set(GROUPS)
    for key in ("forget_accuracy", "retain_accuracy", "parent_accuracy", "mia_auc", "forget_in_cone"):
        assert 0.0 <= results[key] <= 1.0
    assert (results["curvature"] > 0) == trained.geometry.hyperbolic


def test_run_audits_rejects_unknown_families(trained, context):
    with pytest.raises(ValueError, match="unknown audit family"):
        run_audits(trained, context, families=["zero_shot", "nope"])
    assert set(run_audits(trained, context, families=["membership"])) == {"mia_auc", "retain_mia_auc", "mia_scores"}


def test_embedding_cache_follows_in_place_updates(trained, context, encoded):
    first = context.embed(trained)
    assert context.embed(trained) is first
    # A Riemannian Adam step with lr=0 rewrites every parameter in place with the same values: the
    # cache must notice the write (a model unlearned in place is embedded again).
    optimizer = geoopt.optim.RiemannianAdam(trained.parameters(), lr=0.0)
    rows = torch.from_numpy(context.retain_train[:4])
    trained.pretraining_loss(encoded.images(rows), encoded.tokens[rows])["loss"].backward()
    optimizer.step()
    trained.zero_grad(set_to_none=True)
    second = context.embed(trained)
    assert second is not first
    assert torch.allclose(second.images["forget_test"], first.images["forget_test"])


def test_relearn_leaves_the_model_untouched_and_is_deterministic(trained, context):
    before = {k: v.detach().clone() for k, v in trained.state_dict().items()}
    a = audit_relearn(trained, context, steps=3, n_forget=4)
    b = audit_relearn(trained, context, steps=3, n_forget=4)
    after = trained.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert a == b
    assert a["relearn_loss"]["first"] != a["relearn_loss"]["last"]  # the copy did train


def test_families_registry():
    assert list(AUDIT_FAMILIES) == ["zero_shot", "hierarchical", "retrieval", "alignment", "membership", "probe",
                                    "relearn", "geometry", "hyperbolicity"]


def test_each_audit_family_declares_its_report_columns():
    from benchmarks.audits import AUDIT_COLUMNS, Column, headline_columns, register_audit
    from benchmarks.report import table

    assert [c.key for c in AUDIT_COLUMNS["zero_shot"]] == ["forget_accuracy", "retain_accuracy", "parent_accuracy"]
    assert AUDIT_COLUMNS["retrieval"] == ()  # its numbers have their own table
    keys = [column.key for column in headline_columns()]
    assert len(keys) == len(set(keys)) == 15
    record = {"label": "x", "forget": ["a"], "after": {"forget_accuracy": 0.25, "mia_auc": 0.5, "forget_tree_error": 1.5}}
    assert table([record], "after").splitlines()[2].startswith("| x | a | 1 | 25.0% | n/a | n/a | 1.500 | n/a | n/a | 0.500 |")
    with pytest.raises(ValueError, match="'zero_shot' is already registered"):
        register_audit("zero_shot")(lambda *args: {})
    with pytest.raises(ValueError, match=r"columns \['mia_auc'\] are already shown"):
        register_audit("another", columns=(Column("MIA again", "mia_auc"),))(lambda *args: {})
    with pytest.raises(ValueError, match="format must be one of"):
        Column("x", "y", "percent")
