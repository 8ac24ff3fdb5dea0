"""The Poincaré ball geometry (:mod:`manifolds.poincare`): property tests as for the Lorentz model,
its isometry with the hyperboloid (distances, lifts and entailment cones agree), geoopt's own
``PoincareBall`` as a reference, numerical stability near the boundary, and a learnable curvature.

Points are drawn by distance to the origin ``r`` with ``sqrt(c) r`` in a range the dtype can hold
(the ball's float32 bound is ``sqrt(c) r ~ 12.2``); tolerances of float64 checks against the
hyperboloid grow like ``eps * e^{sqrt(c) r}``, the conditioning of either model there."""

from __future__ import annotations

import math

import geoopt
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from manifolds import Lorentz, Poincare
from manifolds import poincare_math as pm

curvatures = st.one_of(st.sampled_from([0.1, 1.0, 10.0]), st.floats(0.1, 10.0))
seeds = st.integers(0, 2**31 - 1)
dtypes = st.sampled_from([torch.float32, torch.float64])


def features(seed: int, n: int, d: int, scaled_norms, c: float, dtype=torch.float64) -> torch.Tensor:
    """Tangent features ``(n, d)`` at the origin with ``sqrt(c)|v|`` = ``scaled_norms`` (cycled)."""
    g = torch.Generator().manual_seed(seed)
    directions = torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    norms = torch.tensor([scaled_norms[i % len(scaled_norms)] for i in range(n)], dtype=torch.float64)
    return (directions * norms[:, None] / math.sqrt(c)).to(dtype)


@given(c=curvatures, seed=seeds, norms=st.lists(st.floats(0.0, 9.0), min_size=1, max_size=6))
def test_lift_puts_the_point_at_the_feature_norm_and_log_inverts_it(c, seed, norms):
    ball = Poincare(c=c)
    v = features(seed, 6, 5, norms, c)
    x = ball.lift(v)
    assert bool((math.sqrt(c) * x.norm(dim=-1) < 1).all())
    torch.testing.assert_close(ball.dist0(x), v.norm(dim=-1), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(pm.logmap0(x, c=c), v, rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(ball.poincare_radius(x), math.sqrt(c) * x.norm(dim=-1), rtol=1e-9, atol=1e-12)


@given(c=curvatures, seed=seeds, norms=st.lists(st.floats(0.0, 6.0), min_size=1, max_size=6))
def test_the_ball_and_the_hyperboloid_are_the_same_space(c, seed, norms):
    """Under the isometry, lifts, distances, cones and angles of the two models agree (float64)."""
    ball, hyperboloid = Poincare(c=c), Lorentz(c=c)
    v, w = features(seed, 6, 4, norms, c), features(seed + 1, 6, 4, norms[::-1], c)
    x, y = ball.lift(v), ball.lift(w)
    xl, yl = hyperboloid.lift(v), hyperboloid.lift(w)
    tolerance = 1e-12 * math.exp(2 * max(norms)) + 1e-10
    torch.testing.assert_close(pm.from_lorentz(xl, c=c), x, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(pm.to_lorentz(x, c=c), xl, rtol=tolerance, atol=tolerance)
    # (the hyperboloid's cdist floors at acosh(1 + 1e-12) / sqrt(c) ~ 1.4e-6 / sqrt(c) for equal points)
    torch.testing.assert_close(ball.cdist(x, y), hyperboloid.cdist(xl, yl), rtol=1e-7, atol=tolerance + 5e-6)
    torch.testing.assert_close(ball.dist0(x), hyperboloid.dist0(xl), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ball.half_aperture(x), hyperboloid.half_aperture(xl), rtol=1e-9, atol=1e-9)
    x_norms = torch.tensor([norms[i % len(norms)] for i in range(6)], dtype=torch.float64)
    distinct = (ball.dist(x, y) > 1e-3) & (x_norms > 1e-3)  # the angle at x is undefined at y = x or x = 0
    torch.testing.assert_close(ball.oxy_angle(x, y)[distinct], hyperboloid.oxy_angle(xl, yl)[distinct],
                               rtol=1e-6, atol=1e-6)


@given(c=curvatures, seed=seeds, norms=st.lists(st.floats(0.0, 3.0), min_size=1, max_size=6))
def test_distances_match_geoopt_and_are_a_metric(c, seed, norms):
    """geoopt's ``PoincareBall`` as the reference where it is accurate (``sqrt(c) r <= 3``: it goes
    through Möbius addition, whose float64 error grows to ~5e-5 relative at 5; the hyperboloid test
    above covers the rest)."""
    ball = Poincare(c=c)
    reference = geoopt.PoincareBall(c=c)
    x = ball.lift(features(seed, 5, 3, norms, c))
    y = ball.lift(features(seed + 7, 5, 3, norms[::-1], c))
    z = ball.lift(features(seed + 9, 5, 3, norms, c))
    pairwise = ball.cdist(x, y)
    torch.testing.assert_close(pairwise, reference.dist(x[:, None], y[None]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pm.dist(x, y, c=c), pairwise.diagonal(), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ball.dist0(x), reference.dist0(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ball.cdist(x, x).diagonal(), torch.zeros(5, dtype=x.dtype), rtol=0, atol=1e-6)
    d_xy, d_yz, d_xz = pm.dist(x, y, c=c), pm.dist(y, z, c=c), pm.dist(x, z, c=c)
    assert bool((d_xz <= d_xy + d_yz + 1e-7).all())
    torch.testing.assert_close(pairwise, ball.cdist(y, x).T, rtol=1e-12, atol=1e-12)


@given(c=curvatures, seed=seeds, radius=st.floats(0.05, 6.0), beyond=st.floats(0.01, 3.0))
def test_a_point_further_along_the_ray_is_inside_the_cone(c, seed, radius, beyond):
    ball = Poincare(c=c)
    direction = features(seed, 1, 4, [1.0], 1.0)
    x = ball.lift(direction * radius / math.sqrt(c))
    y = ball.lift(direction * (radius + beyond) / math.sqrt(c))
    assert float(ball.oxy_angle(x, y)) < 1e-3
    wider = ball.lift(direction * 0.5 * radius / math.sqrt(c))
    assert float(ball.half_aperture(wider)) >= float(ball.half_aperture(x)) - 1e-12  # apertures shrink outwards


@given(dtype=dtypes, c=curvatures, seed=seeds, scaled=st.floats(0.0, 60.0))
def test_huge_features_and_points_on_the_bound_stay_finite_with_finite_gradients(dtype, c, seed, scaled):
    ball = Poincare(c=c, learnable=True)
    v = features(seed, 4, 3, [scaled, 0.0, 1e-6, scaled / 2], c, dtype).requires_grad_(True)
    x = ball.lift(v)
    y = ball.lift(v.flip(0))
    assert bool((math.sqrt(c) * x.detach().double().norm(dim=-1) <= pm.max_scaled_norm(dtype) + 1e-6).all())
    total = (ball.cdist(x, y).sum() + ball.dist0(x).sum() + ball.half_aperture(x).sum()
             + ball.oxy_angle(x, y).sum() + ball.similarity(x, y).sum())
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(v.grad).all() and torch.isfinite(ball.log_c.grad)


def test_float32_distances_are_as_accurate_as_the_hyperboloids():
    """Pairwise float32 distances against float64, for points up to 5 from the origin: relative
    error ~1e-6 apart from nearly identical pairs, whose chord from one matrix product cancels —
    the same limit as the hyperboloid's ``cdist`` (measured side by side here)."""
    torch.manual_seed(0)
    v = torch.randn(64, 16, dtype=torch.float64)
    v = v / v.norm(dim=-1, keepdim=True) * torch.linspace(0.05, 5.0, 64, dtype=torch.float64)[:, None]
    w = v.roll(1, 0)
    errors = {}
    for geometry in (Poincare(c=1.0), Lorentz(c=1.0)):
        exact = geometry.cdist(geometry.lift(v), geometry.lift(w))
        single = geometry.cdist(geometry.lift(v.float()), geometry.lift(w.float())).double()
        error = (single - exact).abs()
        assert float((error / exact)[exact > 0.5].max()) < 1e-5
        errors[type(geometry).__name__] = float(error.max())
    assert errors["Poincare"] <= 2 * errors["Lorentz"] + 1e-3, errors


def test_learnable_curvature_is_a_log_on_an_interval_and_riemannian_adam_moves_it():
    ball = Poincare(c=10.0, learnable=True, c_range=(0.1, 10.0))  # started on the upper bound
    assert [name for name, _ in ball.named_parameters()] == ["log_c"]  # geoopt's isp_c is gone
    assert float(ball.k) == pytest.approx(-10.0)  # geoopt's methods read k = -c
    optimizer = geoopt.optim.RiemannianAdam(ball.parameters(), lr=0.05)
    x = torch.tensor([[0.2, 0.0]])  # fixed ball coordinates: d(0, x) = 2 artanh(sqrt(c) 0.2) / sqrt(c)
    assert float(ball.dist0(x)) == pytest.approx(2 * math.atanh(math.sqrt(10) * 0.2) / math.sqrt(10))
    for _ in range(100):  # ask for the distance of c = 1: the curvature must leave its bound
        optimizer.zero_grad()
        loss = (ball.dist0(x) - 2 * math.atanh(0.2)).pow(2).sum()
        loss.backward()
        optimizer.step()
        assert math.log(0.1) <= float(ball.log_c.detach()) <= math.log(10.0)
    assert float(ball.c.detach()) < 5.0
    with pytest.raises(ValueError, match=r"Poincare curvature c=20 must satisfy"):
        Poincare(c=20, c_range=(0.1, 10.0))
