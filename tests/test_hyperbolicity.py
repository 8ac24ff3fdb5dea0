"""Tests of the hyperbolicity audit (benchmarks/audits/hyperbolicity.py), of the metric functions it
uses (Gromov δ, rank correlation) and of the contract method it needs, ``Geometry.unlift``: exact
values on hand-built point sets, hypothesis properties (δ ≥ 0, invariance under isometries, inverse
maps) and the audit on hand-made embeddings (no training)."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import spearmanr

from benchmarks.audits import Embedded, audit_hyperbolicity
from benchmarks.audits.hyperbolicity import sample_rows, separated, tangent_agreement
from benchmarks.audits.metrics import gromov_delta, rank_correlation
from manifolds import Euclidean, Lorentz, Poincare

GEOMETRIES = {"lorentz": lambda c: Lorentz(c=c), "poincare": lambda c: Poincare(c=c),
              "euclidean": lambda c: Euclidean()}
SQUARE = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], dtype=torch.float64)

features = st.integers(0, 2**31 - 1).map(lambda seed: torch.randn(
    6, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))


def seeded(seed: int, *shape) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ----------------------------------------------------------------------- Geometry.unlift
@given(features, st.sampled_from(["lorentz", "poincare", "euclidean"]), st.floats(0.1, 4.0))
def test_unlift_inverts_lift_and_measures_dist0(v, name, c):
    geometry = GEOMETRIES[name](c)
    v = 2.0 * v  # radii up to ~10/sqrt(c): far from every cap in float64
    x = geometry.lift(v)
    torch.testing.assert_close(geometry.unlift(x), v, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(geometry.unlift(x).norm(dim=-1), geometry.dist0(x), rtol=1e-9, atol=1e-9)


def test_unlift_of_unit_embeddings_lifts_back():
    clip = Euclidean(normalize=True)
    x = clip.lift(seeded(0, 5, 4))
    torch.testing.assert_close(clip.lift(clip.unlift(x)), x)


def test_poincare_unlift_is_twice_geoopts_logmap0():
    import geoopt

    ball = Poincare(c=0.5)
    x = ball.lift(seeded(1, 3, 4))
    torch.testing.assert_close(ball.unlift(x), 2.0 * geoopt.PoincareBall(c=0.5).logmap0(x))


# --------------------------------------------------------------------------- Gromov δ
def brute_force_delta(distances: np.ndarray, base: int = 0) -> float:
    """max over all triples of min((x|y), (y|z)) - (x|z) at ``base``, by plain loops."""
    n = len(distances)
    product = lambda a, b: 0.5 * (distances[a, base] + distances[b, base] - distances[a, b])  # noqa: E731
    return max(min(product(x, y), product(y, z)) - product(x, z) for x, y, z in itertools.product(range(n), repeat=3))


def test_delta_of_the_unit_square_is_exact():
    """Base point (0, 0): (b|c) = (c|d) = √2/2 and (b|d) = 1 - √2/2, so δ = √2 - 1; diam = √2."""
    results = tangent_agreement(Euclidean(), SQUARE)
    assert results["gromov_delta"] == pytest.approx(math.sqrt(2) - 1, abs=1e-15)
    assert results["gromov_delta_relative"] == pytest.approx(2 - math.sqrt(2), abs=1e-15)


@given(st.integers(0, 2**31 - 1), st.integers(1, 7), st.sampled_from([1, 2, 32]))
def test_delta_matches_the_definition_and_is_non_negative(seed, n, chunk):
    points = seeded(seed, n, 2)
    distances = torch.cdist(points, points)
    delta = gromov_delta(distances, chunk=chunk)
    assert delta >= 0
    assert delta == pytest.approx(brute_force_delta(distances.numpy()), abs=1e-12)


def lorentz_isometry(seed: int, d: int, rapidity: float) -> torch.Tensor:
    """A Lorentz transformation ``(d+1, d+1)`` (acting on rows ``x @ M.T``): a boost along the
    first space axis after a random rotation of the space coordinates."""
    rotation, _ = torch.linalg.qr(seeded(seed, d, d))
    rotate = torch.block_diag(torch.ones(1, 1, dtype=torch.float64), rotation)
    boost = torch.eye(d + 1, dtype=torch.float64)
    boost[0, 0] = boost[1, 1] = math.cosh(rapidity)
    boost[0, 1] = boost[1, 0] = math.sinh(rapidity)
    return boost @ rotate


@given(st.integers(0, 2**31 - 1), st.floats(-1.5, 1.5))
def test_delta_is_invariant_under_lorentz_isometries(seed, rapidity):
    geometry = Lorentz(c=1.0)
    x = geometry.lift(seeded(seed, 12, 3))
    moved = geometry.projx(x @ lorentz_isometry(seed + 1, 3, rapidity).T)
    assert geometry._check_point_on_manifold(moved, atol=1e-9)[0]
    before, after = tangent_agreement(geometry, x), tangent_agreement(geometry, moved)
    assert after["gromov_delta"] == pytest.approx(before["gromov_delta"], abs=1e-6)
    assert after["gromov_delta_relative"] == pytest.approx(before["gromov_delta_relative"], abs=1e-6)


@given(st.integers(0, 2**31 - 1))
def test_tangent_agreement_is_invariant_under_rotations_about_the_origin(seed):
    """Rotations fix the origin, so they commute with the log map there: both tangent measures keep."""
    geometry = Lorentz(c=1.0)
    x = geometry.lift(seeded(seed, 12, 3))
    moved = x @ lorentz_isometry(seed + 1, 3, 0.0).T
    before, after = tangent_agreement(geometry, x), tangent_agreement(geometry, moved)
    for key in ("tangent_rank_agreement", "tangent_relative_gap"):
        assert after[key] == pytest.approx(before[key], abs=1e-9)


# ------------------------------------------------------------ hand-built point sets
def test_points_on_one_geodesic_through_the_origin_are_flat_and_tree_like():
    """On a geodesic through the origin the log map there is an isometry and a line is a tree:
    rank agreement 1, gap 0, δ 0 (up to the pairwise distance's float64 rounding)."""
    geometry = Lorentz(c=0.7)
    radii = 12.0 * torch.rand(25, generator=torch.Generator().manual_seed(0), dtype=torch.float64) - 6.0  # no tied distances
    line = geometry.lift(radii.view(-1, 1) * torch.tensor([[0.6, 0.8, 0.0]], dtype=torch.float64))
    results = tangent_agreement(geometry, line)
    assert results["tangent_rank_agreement"] == pytest.approx(1.0, abs=1e-12)
    assert results["tangent_relative_gap"] == pytest.approx(0.0, abs=1e-6)
    assert results["gromov_delta"] == pytest.approx(0.0, abs=1e-6)


def star(radius: float, *, arms: int = 3, points_per_arm: int = 8) -> torch.Tensor:
    """Tangent vectors along ``arms`` evenly spaced rays in the plane, out to ``radius``."""
    angles = torch.arange(arms, dtype=torch.float64) * (2 * math.pi / arms)
    directions = torch.stack([angles.cos(), angles.sin()], dim=1)
    steps = torch.linspace(radius / points_per_arm, radius, points_per_arm, dtype=torch.float64)
    return (steps.view(1, -1, 1) * directions.view(-1, 1, 2)).reshape(-1, 2)


def test_a_tree_like_sample_is_far_more_hyperbolic_in_hyperbolic_space():
    """The same star of three rays (radius 8/√c): its hyperbolic image has a small relative δ
    (8e-4) and tangent distances that underestimate geodesic ones; its flat image has neither (its
    relative δ, 0.108, does not depend on the radius)."""
    hyperbolic, flat = Lorentz(c=1.0), Euclidean()
    v = star(8.0)
    curved, straight = tangent_agreement(hyperbolic, hyperbolic.lift(v)), tangent_agreement(flat, flat.lift(v))
    assert curved["gromov_delta_relative"] < 0.01 < 0.1 < straight["gromov_delta_relative"]
    assert curved["tangent_relative_gap"] > 0.03 and straight["tangent_relative_gap"] == pytest.approx(0.0, abs=1e-12)


@given(st.integers(0, 2**31 - 1), st.sampled_from(["lorentz", "poincare"]), st.floats(0.2, 3.0))
def test_tangent_measures_are_in_range_on_hyperbolic_geometries(seed, name, c):
    """The log map at the origin never stretches distances on a hyperbolic space: gap in [0, 1)."""
    geometry = GEOMETRIES[name](c)
    results = tangent_agreement(geometry, geometry.lift(seeded(seed, 10, 3) / math.sqrt(c)))
    assert -1e-9 <= results["tangent_relative_gap"] < 1
    assert -1 <= results["tangent_rank_agreement"] <= 1
    assert 0 <= results["gromov_delta_relative"] <= 1 + 1e-9  # δ_w is at most the diameter / 2


# ------------------------------------------------------------------- rank correlation
@given(st.integers(0, 2**31 - 1), st.integers(3, 40))
def test_rank_correlation_is_scipys_spearman(seed, n):
    a, b = seeded(seed, n).numpy(), seeded(seed + 1, n).numpy().round(1)  # rounding makes ties
    assert rank_correlation(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    assert rank_correlation(a, 3 * a + 1) == pytest.approx(1.0)
    assert rank_correlation(a, -a) == pytest.approx(-1.0)


def test_rank_correlation_of_a_constant_sample_is_nan():
    assert math.isnan(rank_correlation([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="samples of one length, got 2 and 3"):
        rank_correlation([1.0, 2.0], [1.0, 2.0, 3.0])


# ---------------------------------------------------------------------------- sampling
def test_sample_rows_is_seeded_bounded_and_depends_on_the_count_only():
    points = seeded(2, 50, 3)
    sample = sample_rows(points, size=8, seed=5)
    assert len(sample) == 8 and torch.equal(sample, sample_rows(points, size=8, seed=5))
    rows = [int(np.flatnonzero((points == row).all(dim=1))[0]) for row in sample]
    assert rows == sorted(rows)  # original order
    other = seeded(3, 50, 3)  # other values, the same count: the same rows
    assert torch.equal(sample_rows(other, size=8, seed=5), other[rows])
    assert not torch.equal(sample_rows(points, size=8, seed=6), sample)
    assert torch.equal(sample_rows(points, size=50, seed=0), points)


def test_coincident_points_count_once():
    """Repeats of a point, exact or a few ulps off (one caption embedded in two batches), are one
    point: its zero distances would otherwise make a relative gap of noise."""
    geometry = Lorentz(c=1.0)
    x = geometry.lift(seeded(7, 6, 3))
    nudged = geometry.lift(seeded(7, 6, 3)[:2] * (1 + 1e-12))
    results = tangent_agreement(geometry, torch.cat([x, x[:3], nudged]))
    assert results["hyperbolicity_sample_size"] == 6
    assert results == pytest.approx(tangent_agreement(geometry, x), abs=1e-9)
    assert separated(torch.tensor([[0.0, 1.0, 3.0], [1.0, 0.0, 2.0], [3.0, 2.0, 0.0]]), resolution=1.0).tolist() == [
        True, False, True]
    assert math.isnan(tangent_agreement(geometry, x[:1])["gromov_delta"])  # no pair, nothing to measure


# ------------------------------------------------------------------------ the audit
def hand_made(geometry, *, n: int = 40):
    """Test images and captions lifted from seeded features (captions repeat: 10 distinct)."""
    v = {"forget_test": seeded(4, n // 4, 5), "retain_test": seeded(5, n - n // 4, 5)}
    texts = {group: geometry.lift(0.5 * seeded(6, 10, 5)[torch.arange(len(x)) % 10]) for group, x in v.items()}
    images = {group: geometry.lift(x).float() for group, x in v.items()}
    embedded = Embedded(images=images, texts=texts, targets={}, match_ids={}, classes=images["forget_test"][:1],
                        parents=images["forget_test"][:1])
    return SimpleNamespace(geometry=geometry), SimpleNamespace(seed=0), embedded, v


@pytest.mark.parametrize("name", ["lorentz", "poincare"])
def test_audit_quantiles_are_numpys_on_hyperbolic_geometries(name):
    geometry = GEOMETRIES[name](0.5)
    model, context, embedded, v = hand_made(geometry)
    results = audit_hyperbolicity(model, context, embedded)
    assert results["curvature"] == 0.5
    radii = math.sqrt(0.5) * torch.cat(list(v.values())).norm(dim=-1).numpy()  # dist0(lift(v)) = |v|
    expected = np.percentile(radii, [5, 25, 50, 75, 95])
    assert [results["image_scaled_dist0"][k] for k in ("5", "25", "50", "75", "95")] == pytest.approx(expected, rel=1e-5)
    assert results["image_scaled_dist0_median"] == results["image_scaled_dist0"]["50"]
    assert results["hyperbolicity_sample_size"] == 40 + 10  # the repeated captions count once
    assert 0 < results["tangent_relative_gap"] < 1 and results["gromov_delta"] > 0


def test_audit_on_a_flat_geometry():
    """Flat: scaled radii 0 (no curvature length), tangent distances are the distances."""
    model, context, embedded, _ = hand_made(Euclidean(normalize=True))
    results = audit_hyperbolicity(model, context, embedded, sample_size=30)
    pooled = torch.cat([embedded.images["forget_test"], embedded.images["retain_test"], embedded.texts["forget_test"],
                        embedded.texts["retain_test"]]).double()
    distinct_drawn = len(torch.unique((sample_rows(pooled, size=30, seed=0) * 1e9).round(), dim=0))
    assert results["curvature"] == 0 and set(results["text_scaled_dist0"].values()) == {0.0}
    assert results["tangent_rank_agreement"] == pytest.approx(1.0, abs=1e-12)
    assert results["tangent_relative_gap"] == pytest.approx(0.0, abs=1e-12)
    assert results["hyperbolicity_sample_size"] == distinct_drawn < 30 and 0 < results["gromov_delta_relative"] < 1
    with pytest.raises(ValueError, match="sample_size must be at least 2"):
        audit_hyperbolicity(model, context, embedded, sample_size=1)
