"""geoopt parity for :class:`manifolds.Lorentz` (issue 10, item 3).

Our ``Lorentz(c)`` is geoopt's ``Lorentz(k)`` with ``k = 1/c``. This file checks

1. the methods added for parity — ``inner0``, ``logmap0back``, ``geodesic_unit``, the Poincaré-ball
   maps — by identities, inverses and round trips (hypothesis, float32 and float64, wide ranges), and
   against geoopt where geoopt is accurate (float64, moderate distances);
2. the float64 exponential map, exact far beyond MERU's float32 cap (``|u| = 20`` lands at distance
   20, as in geoopt), while float32 keeps MERU's cap;
3. parallel transport: float32 against the same inputs evaluated in float64 up to distance 8 from the
   origin, float64 against mpmath further out, and its geometric properties;
4. ``random_normal``: the wrapped normal at the origin;
5. the cases of geoopt's own Lorentz test suite (``tests/test_lorentz_math.py``), rewritten here.

Tolerances follow ``tests/test_manifolds.py``: a coordinate of a point at distance ``r`` from the
origin is of size ``e^{sqrt(c) r}``, so errors of round trips scale with ``eps * e^{sqrt(c) r}`` and
each test keeps its inputs where that bound is meaningful for the dtype.
"""

from __future__ import annotations

import math

import geoopt
import mpmath
import pytest
import torch
from geoopt.manifolds.lorentz import math as geoopt_lorentz_math
from hypothesis import example, given
from hypothesis import strategies as st

from manifolds import Lorentz
from manifolds import lorentz_math as lm

DTYPES = (torch.float32, torch.float64)
MERU_CAP = math.asinh(2.0**15)

curvatures = st.one_of(st.sampled_from([0.1, 1.0, 10.0]), st.floats(0.1, 10.0))
dtypes = st.sampled_from(DTYPES)
seeds = st.integers(0, 2**31 - 1)


def eps(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps


# --------------------------------------------------------------------------------------- builders
# Inputs are built in float64 from closed forms (independently of the code under test), then cast.


def unit_directions(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    raw = torch.randn(n, d, generator=g, dtype=torch.float64)
    return raw / raw.norm(dim=-1, keepdim=True)


def points_at(radii, d: int, c: float, seed: int) -> torch.Tensor:
    """Points ``(cosh(s), sinh(s) * direction) / sqrt(c)`` at distances ``s / sqrt(c)``, float64."""
    s = torch.as_tensor(radii, dtype=torch.float64).reshape(-1, 1) * math.sqrt(c)
    directions = unit_directions(s.shape[0], d, seed)
    return torch.cat([torch.cosh(s), torch.sinh(s) * directions], dim=-1) / math.sqrt(c)


def tangent_from_space(x: torch.Tensor, v_space: torch.Tensor) -> torch.Tensor:
    """The tangent vector at ``x`` with space part ``v_space``: time ``x_s . v_s / x_t``."""
    time = (x[..., 1:] * v_space).sum(-1, keepdim=True) / x[..., :1]
    return torch.cat([time, v_space], dim=-1)


def unit_tangent(x: torch.Tensor, seed: int) -> torch.Tensor:
    """Random tangent vectors at ``x`` (float64) of Lorentz norm 1."""
    g = torch.Generator().manual_seed(seed)
    u = tangent_from_space(x, torch.randn(x.shape[:-1] + (x.shape[-1] - 1,), generator=g, dtype=x.dtype))
    return u / inner64(u, u).clamp_min(0).sqrt()[..., None]


def origin_like(x: torch.Tensor, c: float) -> torch.Tensor:
    return lm.origin(*x.shape, c=c, dtype=x.dtype)


def inner64(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    u, v = u.double(), v.double()
    return (u[..., 1:] * v[..., 1:]).sum(-1) - u[..., 0] * v[..., 0]


def textbook_transp64(x, y, v, c):
    """``v + c<y,v>/(1 - c<x,y>) (x + y)`` in float64 on the projected inputs (``x``, ``y`` put on
    the hyperboloid from their space parts, ``v`` made tangent at ``x`` from its space part)."""
    x = lm.project(x.double(), c=c)
    y = lm.project(y.double(), c=c)
    v = tangent_from_space(x, v.double()[..., 1:])
    coefficient = c * inner64(y, v)[..., None] / (1.0 - c * inner64(x, y)[..., None])
    return v + coefficient * (x + y)


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """Row-wise ``|got - expected| / |expected|`` (Euclidean norms of the full coordinates)."""
    return (got.double() - expected).norm(dim=-1) / expected.norm(dim=-1)


# ================================================================ 1. inner0, logmap0back (geoopt)


@given(curvatures, dtypes, seeds, st.floats(0.0, 6.0), st.integers(1, 10))
def test_inner0_is_inner_with_origin(c, dtype, seed, radius, d):
    x = points_at([radius / math.sqrt(c)] * 3, d, c, seed).to(dtype)
    L = Lorentz(c)
    expected = inner64(x, origin_like(x, c))  # -x_t / sqrt(c), one product
    torch.testing.assert_close(L.inner0(x).double(), expected, rtol=4 * eps(dtype), atol=0)
    assert L.inner0(x, keepdim=True).shape == (3, 1)
    # On the hyperboloid -c<x, O>_L = cosh(sqrt(c) d(O, x)).
    torch.testing.assert_close((-c * L.inner0(x)).double(),
                               torch.full((3,), math.cosh(radius), dtype=torch.float64),
                               rtol=16 * eps(dtype), atol=0)


@given(curvatures, dtypes, seeds, st.floats(0.0, 1.0), st.integers(1, 10))
def test_logmap0back_points_to_the_origin(c, dtype, seed, fraction, d):
    # float32: up to sqrt(c) r = 4 (round trips lose eps * e^{2 sqrt(c) r}); float64: up to 12.
    top = 4.0 if dtype == torch.float32 else 12.0
    radius = fraction * top
    x64 = points_at([radius / math.sqrt(c)] * 4, d, c, seed)
    x = x64.to(dtype)
    L = Lorentz(c)
    v = L.logmap0back(x)
    # Tangent at x, of length d(O, x), equal to logmap(x, O).
    assert torch.all(inner64(x, v).abs() <= 64 * eps(dtype) * x.double().norm(dim=-1) ** 2)
    torch.testing.assert_close(lm.tangent_norm(x, v, c=c).double(),
                               torch.full((4,), radius / math.sqrt(c), dtype=torch.float64),
                               rtol=64 * eps(dtype), atol=64 * eps(dtype))
    torch.testing.assert_close(v, L.logmap(x, origin_like(x, c)), rtol=64 * eps(dtype),
                               atol=64 * eps(dtype) * float(x.double().norm(dim=-1).max()))
    # It points straight back: -logmap0back(x) is the outward radial direction times d(O, x), whose
    # space part is cosh(s) sinh... i.e. v_s = -(s/sqrt(c)) sqrt(c) x_t x_s/|x_s| in closed form.
    s = radius
    if s > 1e-3:
        expected_space = -(s / math.sqrt(c)) * math.sqrt(c) * x64[:, :1] * (x64[:, 1:] / x64[:, 1:].norm(dim=-1, keepdim=True))
        scale = x64[:, :1] * (s / math.sqrt(c) + 1.0)
        assert torch.all((v[:, 1:].double() - expected_space).norm(dim=-1) <= 256 * eps(dtype) * scale[:, 0])
    # The exponential map along it reaches the origin (cosh and sinh terms of size e^{2s} cancel).
    back = L.expmap(x, v)
    assert torch.all(lm.dist(back.double(), origin_like(x64, c), c=c) <= 64 * eps(dtype) * math.exp(2 * s) / math.sqrt(c))


@given(curvatures, seeds, st.floats(0.0, 3.0), st.integers(1, 8))
def test_inner0_and_logmap0back_agree_with_geoopt(c, seed, radius, d):
    x = points_at([radius / math.sqrt(c)] * 4, d, c, seed)
    L, G = Lorentz(c), geoopt.Lorentz(k=torch.tensor(1.0 / c, dtype=torch.float64))
    torch.testing.assert_close(L.inner0(x), G.inner0(x), rtol=1e-12, atol=1e-12)
    if radius > 1e-3:  # geoopt clamps |v|^2 at 1e-8 in its norm: meaningless near the origin
        torch.testing.assert_close(L.logmap0back(x), G.logmap0back(x), rtol=1e-7, atol=1e-9)


def test_logmap0back_is_reversed_transported_logmap0():
    """At x, the direction to the origin is minus the transported direction from the origin:
    ``log_x(O) = -P_{O->x}(log_O(x))`` (a geodesic's velocity is parallel along it)."""
    for c in (0.1, 1.0, 10.0):
        for dtype in DTYPES:
            L = Lorentz(c)
            x = points_at(torch.linspace(0.1, 4.0, 9) / math.sqrt(c), 5, c, 3).to(dtype)
            expected = -L.transp0(x, L.logmap0(x))
            scale = x.double().norm(dim=-1) * 4.0
            assert torch.all((L.logmap0back(x) - expected).double().norm(dim=-1) <= 1e3 * eps(dtype) * scale**2)


# ======================================================================== 1. geodesic_unit


@given(curvatures, dtypes, seeds, st.floats(0.0, 1.0), st.lists(st.floats(-1.0, 1.0), min_size=1, max_size=6),
       st.floats(0.1, 10.0), st.integers(1, 10))
def test_geodesic_unit_is_unit_speed(c, dtype, seed, base_fraction, time_fractions, scale, d):
    # Start within sqrt(c) r <= 2 and travel |sqrt(c) t| <= 3 (float32) / 12 (float64).
    span = 3.0 if dtype == torch.float32 else 12.0
    x = points_at([2.0 * base_fraction / math.sqrt(c)], d, c, seed).expand(len(time_fractions), -1)
    u = unit_tangent(x, seed + 1) * scale  # any length: the direction is normalised
    t = torch.tensor(time_fractions, dtype=torch.float64)[:, None] * span / math.sqrt(c)
    L = Lorentz(c)
    point = L.geodesic_unit(t.to(dtype), x.to(dtype), u.to(dtype))
    assert torch.all(L.projx(point) == point)
    # d(x, gamma(t)) = |t|.
    travelled = L.dist(x.to(dtype), point).double()
    tol = 64 * eps(dtype) * torch.exp(torch.tensor(2.0 + span)) / math.sqrt(c)
    assert torch.all((travelled - t[:, 0].abs()).abs() <= tol + 16 * eps(dtype) * t[:, 0].abs()), (travelled, t)
    # Independent closed form in float64: cosh(sqrt(c) t) x + sinh(sqrt(c) t)/sqrt(c) u/|u|.
    s = math.sqrt(c) * t
    expected = torch.cosh(s) * x + torch.sinh(s) / math.sqrt(c) * (u / scale)
    bound = 64 * eps(dtype) * expected.norm(dim=-1) * (1 + span)
    assert torch.all((point.double() - expected).norm(dim=-1) <= bound)


@given(curvatures, dtypes, seeds, st.floats(0.0, 2.0), st.floats(0.0, 3.0), st.integers(1, 8))
def test_geodesic_unit_identities(c, dtype, seed, radius, time, d):
    L = Lorentz(c)
    x64 = points_at([radius / math.sqrt(c)] * 3, d, c, seed)
    u64 = unit_tangent(x64, seed + 1)
    x, u = x64.to(dtype), u64.to(dtype)
    t = time / math.sqrt(c)
    tol = 256 * eps(dtype) * math.exp(radius + time) * (1 + time)
    # gamma(0) = x; gamma(t) = expmap(x, t u) for unit u; backwards is the opposite direction.
    assert torch.all((L.geodesic_unit(0.0, x, u) - x).double().norm(dim=-1) <= tol)
    forward = L.geodesic_unit(t, x, u)
    assert torch.all((forward - L.expmap(x, t * u)).double().norm(dim=-1) <= tol * math.exp(time))
    assert torch.all((L.geodesic_unit(-t, x, u) - L.geodesic_unit(t, x, -u)).double().norm(dim=-1) <= tol)
    # Scaling u does not change the curve.
    assert torch.all((L.geodesic_unit(t, x, 7.5 * u) - forward).double().norm(dim=-1) <= tol * math.exp(time))


@given(curvatures, seeds, st.floats(0.0, 2.0), st.floats(-3.0, 3.0), st.integers(1, 8))
def test_geodesic_unit_agrees_with_geoopt(c, seed, radius, time, d):
    x = points_at([radius / math.sqrt(c)] * 3, d, c, seed)
    u = unit_tangent(x, seed + 1)  # geoopt's formula assumes a unit direction
    t = torch.full((3, 1), time / math.sqrt(c), dtype=torch.float64)
    G = geoopt.Lorentz(k=torch.tensor(1.0 / c, dtype=torch.float64))
    torch.testing.assert_close(Lorentz(c).geodesic_unit(t, x, u), G.geodesic_unit(t, x, u), rtol=1e-9, atol=1e-9)


# =================================================================== 1. Poincaré-ball maps


@given(curvatures, dtypes, seeds, st.lists(st.floats(0.0, 1.0), min_size=1, max_size=6), st.integers(1, 12))
def test_lorentz_poincare_round_trips(c, dtype, seed, fractions, d):
    # sqrt(c) r up to 6 (float32) / 15 (float64); the ball coordinate 1 - sqrt(c)|p| ~ 2 e^{-sqrt(c) r}
    # is then still representable with room to spare.
    top = 6.0 if dtype == torch.float32 else 15.0
    s = torch.tensor(fractions, dtype=torch.float64) * top
    x = points_at(s / math.sqrt(c), d, c, seed).to(dtype)
    L = Lorentz(c)
    p = L.lorentz_to_poincare(x)
    assert p.shape == x.shape[:-1] + (d,)
    # Inside the ball of radius 1/sqrt(c), at |p| = tanh(sqrt(c) r / 2)/sqrt(c).
    torch.testing.assert_close((math.sqrt(c) * p.double().norm(dim=-1)), torch.tanh(s / 2),
                               rtol=16 * eps(dtype), atol=16 * eps(dtype))
    assert torch.all(math.sqrt(c) * p.double().norm(dim=-1) < 1)
    # Lorentz -> ball -> Lorentz: coordinates of size e^{s} come back with a few ulps of error
    # amplified by the conditioning of 1/(1 - c|p|^2) ~ e^{s}.
    back = L.poincare_to_lorentz(p)
    scale = torch.exp(s) / math.sqrt(c)
    assert torch.all((back - x).double().norm(dim=-1) <= 64 * eps(dtype) * scale * torch.exp(s))
    assert torch.all(L.projx(back) == back)  # on the hyperboloid by construction
    # Ball -> Lorentz -> ball: relative accuracy in the ball.
    again = L.lorentz_to_poincare(back)
    assert torch.all((again - p).double().norm(dim=-1) <= 64 * eps(dtype) * (1 + p.double().norm(dim=-1)))


@given(curvatures, dtypes, seeds, st.integers(1, 12), st.floats(0.0, 0.999))
def test_poincare_to_lorentz_inverts_lorentz_to_poincare_from_the_ball(c, dtype, seed, d, radius_fraction):
    g = torch.Generator().manual_seed(seed)
    direction = torch.randn(5, d, generator=g, dtype=torch.float64)
    direction = direction / direction.norm(dim=-1, keepdim=True)
    p = (direction * radius_fraction / math.sqrt(c)).to(dtype)
    L = Lorentz(c)
    x = L.poincare_to_lorentz(p)
    # Closed form of the time coordinate: (1 + c|p|^2) / (sqrt(c) (1 - c|p|^2)).
    q = c * p.double().pow(2).sum(-1)
    expected_time = (1 + q) / (math.sqrt(c) * (1 - q))
    conditioning = 1.0 / (1.0 - radius_fraction)
    torch.testing.assert_close(x[:, 0].double(), expected_time, rtol=64 * eps(dtype) * conditioning, atol=0)
    torch.testing.assert_close(L.lorentz_to_poincare(x).double(), p.double(),
                               rtol=64 * eps(dtype), atol=64 * eps(dtype) / math.sqrt(c))


@given(curvatures, seeds, st.floats(0.0, 4.0), st.floats(0.0, 4.0), st.integers(1, 8))
def test_poincare_maps_agree_with_geoopt(c, seed, rx, ry, d):
    x = points_at([rx / math.sqrt(c)] * 3, d, c, seed)
    y = points_at([ry / math.sqrt(c)] * 3, d, c, seed + 1)
    L = Lorentz(c)
    k = torch.tensor(1.0 / c, dtype=torch.float64)
    p, q = L.lorentz_to_poincare(x), L.lorentz_to_poincare(y)
    # geoopt's free functions use the unit ball: sqrt(c) times ours, and back to the same point.
    torch.testing.assert_close(math.sqrt(c) * p, geoopt_lorentz_math.lorentz_to_poincare(x, k), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(L.poincare_to_lorentz(p),
                               geoopt_lorentz_math.poincare_to_lorentz(math.sqrt(c) * p, k, eps=0.0),
                               rtol=1e-10, atol=1e-12)
    # Our ball is geoopt's PoincareBall(c): the map is an isometry onto it.
    ball = geoopt.PoincareBall(c=torch.tensor(c, dtype=torch.float64))
    torch.testing.assert_close(ball.dist(p, q), L.dist(x, y), rtol=1e-9, atol=1e-9)


# ======================================================= 2. exponential map: float64 exact, float32 MERU


def test_expmap_float64_is_exact_at_length_20():
    """The example of the issue: ``|u| = 20``, ``c = 1``: distance 20 (MERU's cap gave 11.09)."""
    L = Lorentz(1.0)
    for base_radius in (0.0, 0.5, 3.0):
        x = points_at([base_radius] * 4, 6, 1.0, 11)
        u = 20.0 * unit_tangent(x, 12)
        y = L.expmap(x, u)
        torch.testing.assert_close(L.dist(x, y), torch.full((4,), 20.0, dtype=torch.float64), rtol=1e-9, atol=0)
        G = geoopt.Lorentz(k=torch.tensor(1.0, dtype=torch.float64))
        torch.testing.assert_close(y, G.expmap(x, u), rtol=1e-9, atol=1e-9)
    zero = torch.zeros(3, 7, dtype=torch.float64)
    zero[:, 1] = 20.0
    torch.testing.assert_close(L.dist0(L.expmap0(zero)), torch.full((3,), 20.0, dtype=torch.float64), rtol=1e-12, atol=0)


# (Lengths below 1e-6 are left out: both maps freeze norms below sqrt(tiny) to keep gradients finite,
# each in its own way.)
@given(curvatures, seeds, st.one_of(st.just(0.0), st.floats(1e-6, 150.0)), st.integers(1, 8))
def test_expmap_float64_distance_is_the_tangent_length(c, seed, scaled_length, d):
    """Up to sqrt(c)|u| = 150 (below the float64 cap asinh(2^239) ~ 166.4) from the origin, and up to
    40 from a point at sqrt(c) r = 2: ``d(x, expmap(x, u)) = |u|``."""
    L = Lorentz(c)
    origin = lm.origin(3, d + 1, c=c, dtype=torch.float64)
    u = scaled_length / math.sqrt(c) * unit_tangent(origin, seed)
    length = torch.full((3,), scaled_length / math.sqrt(c), dtype=torch.float64)
    torch.testing.assert_close(L.dist(origin, L.expmap(origin, u)), length, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(L.expmap(origin, u), L.expmap0(u), rtol=4 * eps(torch.float64), atol=1e-300)
    x = points_at([2.0 / math.sqrt(c)] * 3, d, c, seed + 1)
    u = min(scaled_length, 40.0) / math.sqrt(c) * unit_tangent(x, seed + 2)
    length = torch.full((3,), min(scaled_length, 40.0) / math.sqrt(c), dtype=torch.float64)
    torch.testing.assert_close(L.dist(x, L.expmap(x, u)), length, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("c", [0.1, 1.0, 10.0])
def test_caps_per_dtype_and_expmap0_equals_expmap_at_origin(c):
    assert lm.max_sqrt_c_norm(torch.float32) == MERU_CAP == lm.MAX_SQRT_C_NORM
    assert lm.max_sqrt_c_norm(torch.bfloat16) == MERU_CAP
    assert lm.max_sqrt_c_norm(torch.float16) == MERU_CAP
    assert lm.max_sqrt_c_norm(torch.float64) == math.asinh(2.0**239) == lm.MAX_SQRT_C_NORM_FLOAT64
    # The float64 cap keeps products of four coordinates (z^2 in the pairwise distance) finite.
    assert (math.sinh(lm.MAX_SQRT_C_NORM_FLOAT64) ** 2 * 2) ** 2 < torch.finfo(torch.float64).max / 2**60
    L = Lorentz(c)
    for dtype, cap in ((torch.float32, MERU_CAP), (torch.float64, lm.MAX_SQRT_C_NORM_FLOAT64)):
        origin = lm.origin(5, 4, c=c, dtype=dtype)
        u = torch.zeros(5, 4, dtype=dtype)
        u[:, 1] = torch.tensor([1.0, 10.0, 20.0, 200.0, 1e4], dtype=dtype) / math.sqrt(c)
        from_origin, at_origin = L.expmap0(u), L.expmap(origin, u)
        torch.testing.assert_close(from_origin, at_origin, rtol=4 * eps(dtype), atol=0)
        # Steps beyond the dtype's cap are shortened to it; shorter ones are exact.
        expected = torch.clamp(u[:, 1].double() * math.sqrt(c), max=cap) / math.sqrt(c)
        torch.testing.assert_close(L.dist0(from_origin).double(), expected, rtol=64 * eps(dtype), atol=0)
        assert torch.all(torch.isfinite(L.cdist(from_origin, from_origin)))


def test_float32_expmap0_is_merus_map_unchanged():
    """The trained models' map: float32 ``lift`` equals MERU's capped formula (computed in float64)."""
    g = torch.Generator().manual_seed(4)
    direction = torch.randn(32, 16, generator=g, dtype=torch.float64)
    direction = direction / direction.norm(dim=-1, keepdim=True)
    norms = torch.logspace(-3, 2, 32, dtype=torch.float64)[:, None]
    for c in (0.1, 1.0, 10.0):
        v = direction * norms / math.sqrt(c)
        capped = torch.clamp(norms, max=MERU_CAP)
        meru = torch.sinh(capped) * v / norms  # sinh(min(sqrt(c)|v|, cap)) v / (sqrt(c)|v|)
        got = Lorentz(c).lift(v.float())[:, 1:]
        torch.testing.assert_close(got.double(), meru, rtol=16 * eps(torch.float32), atol=0)


# ============================================================================ 3. parallel transport

TRANSP_SEPARATIONS = ("near_1e-3", "near_1e-2", "near_0.1", "near_1", "near_3", "random", "to_origin", "from_origin")


def transport_case(separation: str, v_kind: str, r: float, c: float, n: int = 400, d: int = 8, seed: int = 0):
    """x at distance r from the origin (``y`` too, except for the near cases and the origin ones),
    ``v`` tangent at x: ``proju`` of a Gaussian ambient vector (large radial part) or a Gaussian
    space part (intrinsic size ~1). All in float64."""
    x = points_at([r] * n, d, c, seed)
    y = points_at([r] * n, d, c, seed + 1)
    if separation.startswith("near_"):
        step = float(separation[5:]) / math.sqrt(c)
        y = lm.expmap(x, step * unit_tangent(x, seed + 2), c=c)
    elif separation == "to_origin":
        y = origin_like(x, c)
    elif separation == "from_origin":
        x = origin_like(x, c)
    g = torch.Generator().manual_seed(seed + 3)
    if v_kind == "proju":
        v = lm.proju(x, torch.randn(x.shape, generator=g, dtype=torch.float64), c=c)
    else:
        v = tangent_from_space(x, torch.randn(x[..., 1:].shape, generator=g, dtype=torch.float64))
    return x, y, v


@pytest.mark.parametrize("separation", TRANSP_SEPARATIONS)
@pytest.mark.parametrize("v_kind", ["proju", "space"])
@pytest.mark.parametrize("r", [5.0, 8.0])
def test_transp_float32_matches_float64_far_from_origin(separation, v_kind, r):
    """c = 1, points at distance 5 and 8 from the origin: the float32 result is within 1e-4 (relative)
    of the same float32 inputs evaluated in float64 (the textbook form on the projected inputs).
    The textbook form in float32 was off by ~2e-3 at r = 5 and 0.5-0.9 at r = 8 for near points."""
    c = 1.0
    x, y, v = transport_case(separation, v_kind, r, c)
    x32, y32, v32 = x.float(), y.float(), v.float()
    got = lm.transp(x32, y32, v32, c=c)
    assert got.dtype == torch.float32
    error = relative_error(got, textbook_transp64(x32, y32, v32, c))
    assert float(error.max()) < 1e-4, float(error.max())
    # And through the manifold class (curvature a float64 tensor, inputs float32).
    error_class = relative_error(Lorentz(c).transp(x32, y32, v32), textbook_transp64(x32, y32, v32, c))
    assert float(error_class.max()) < 1e-4


@pytest.mark.parametrize("c", [0.1, 10.0])
def test_transp_float32_accuracy_other_curvatures(c):
    for separation in ("near_1e-2", "near_1", "to_origin", "random"):
        x, y, v = transport_case(separation, "proju", 8.0 / math.sqrt(c), c, n=200)
        x32, y32, v32 = x.float(), y.float(), v.float()
        error = relative_error(lm.transp(x32, y32, v32, c=c), textbook_transp64(x32, y32, v32, c))
        assert float(error.max()) < 1e-4, (separation, float(error.max()))


def mpmath_transp(x, y, v, c, digits=60):
    """Parallel transport in mpmath (textbook form) of exact float64 inputs, read through their space
    parts (times from the constraint / tangency)."""
    with mpmath.workdps(digits):
        c = mpmath.mpf(c)
        xs = [mpmath.mpf(float(a)) for a in x[1:]]
        ys = [mpmath.mpf(float(a)) for a in y[1:]]
        vs = [mpmath.mpf(float(a)) for a in v[1:]]
        xt = mpmath.sqrt(1 / c + sum(a * a for a in xs))
        yt = mpmath.sqrt(1 / c + sum(a * a for a in ys))
        vt = sum(a * b for a, b in zip(xs, vs)) / xt
        y_v = sum(a * b for a, b in zip(ys, vs)) - yt * vt
        x_y = sum(a * b for a, b in zip(xs, ys)) - xt * yt
        k = c * y_v / (1 - c * x_y)
        return [float(vt + k * (xt + yt))] + [float(b + k * (a + e)) for a, e, b in zip(xs, ys, vs)]


@pytest.mark.parametrize("separation", ["near_1e-3", "near_0.1", "near_1", "random", "to_origin"])
def test_transp_float64_matches_mpmath_at_distance_16(separation):
    """In float64 at distance 16 from the origin the textbook form loses ~1e-2 (measured); ours stays
    below 1e-6 (measured 2e-8 at most)."""
    c = 1.0
    x, y, v = transport_case(separation, "space", 16.0, c, n=12, d=5, seed=7)
    got = lm.transp(x, y, v, c=c)
    expected = torch.tensor([mpmath_transp(x[i], y[i], v[i], c) for i in range(x.shape[0])], dtype=torch.float64)
    assert float(relative_error(got, expected).max()) < 1e-6


@given(curvatures, dtypes, seeds, st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.integers(1, 8))
def test_transp_preserves_tangency_norm_and_inner_products(c, dtype, seed, fx, fy, d):
    # sqrt(c) r up to 4 (float32) / 10 (float64) for both points.
    top = 4.0 if dtype == torch.float32 else 10.0
    rx, ry = fx * top, fy * top
    x = points_at([rx / math.sqrt(c)] * 3, d, c, seed)
    y = points_at([ry / math.sqrt(c)] * 3, d, c, seed + 1)
    u, w = unit_tangent(x, seed + 2), 3.0 * unit_tangent(x, seed + 3)
    L = Lorentz(c)
    x, y, u, w = x.to(dtype), y.to(dtype), u.to(dtype), w.to(dtype)
    pu, pw = L.transp(x, y, u), L.transp(x, y, w)
    # Inner products are preserved, up to rounding relative to the size of the ambient coordinates
    # (of the inputs at x and of the results at y: Lorentz products of such vectors cancel).
    def size(a):
        return 1 + a.double().norm(dim=-1)

    tol = 64 * eps(dtype) * (size(u) * size(w) + size(pu) * size(pw))
    assert torch.all((inner64(pu, pw) - inner64(u, w)).abs() <= tol)
    assert torch.all((inner64(pu, pu) - inner64(u, u)).abs() <= 64 * eps(dtype) * (size(u) ** 2 + size(pu) ** 2))
    # Tangent at y (the time coordinate is the tangent one: <y, p>_L = 0 up to rounding of y_s . p_s).
    assert torch.all(inner64(y, pu).abs() <= 64 * eps(dtype) * size(y) * size(pu))
    # Back again: the rounding of pu (relative to its size) comes back through a map whose ambient
    # gain is at most ~ c x_t y_t.
    back = L.transp(y, x, pu)
    gain = 1 + c * x[:, 0].double() * y[:, 0].double()
    assert torch.all((back - u).double().norm(dim=-1) <= 256 * eps(dtype) * (size(u) + size(pu)) * gain)


@given(curvatures, dtypes, seeds, st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.integers(1, 8))
@example(5.152786001881959, torch.float64, 4, 0.9927870439507831, 1.0, 4)
def test_transp_of_geodesic_velocity(c, dtype, seed, fx, step_fraction, d):
    """Along the geodesic from x to y = expmap(x, u), u arrives as the velocity ``-logmap(y, x)``.

    Both sides are computed from float64 points whose coordinates are about ``x_t`` and ``y_t``, so
    each is good to about ``eps |u| c x_t y_t`` (the size of ``-c<x, y>``, as in the round-trip test
    above). The bound used to scale with ``|y| |u|`` only, which the example above broke (4.5e-9
    against 3.0e-9, both sides equally off against mpmath); over 3,000 random draws of this test's
    strategy the error reached 4.6 times ``eps |u| (1 + c x_t y_t)`` in float64 and 1.0 in float32."""
    top = 3.0 if dtype == torch.float32 else 8.0
    x = points_at([fx * top / math.sqrt(c)] * 3, d, c, seed)
    u = (0.05 + step_fraction * 2.0) / math.sqrt(c) * unit_tangent(x, seed + 1)
    y = lm.expmap(x, u, c=c)
    L = Lorentz(c)
    got = L.transp(x.to(dtype), y.to(dtype), u.to(dtype))
    expected = -lm.logmap(y, x, c=c)
    gain = 1 + c * x[:, 0] * y[:, 0]
    assert torch.all((got.double() - expected).norm(dim=-1) <= 256 * eps(dtype) * u.norm(dim=-1) * gain)


@given(curvatures, seeds, st.floats(0.0, 2.5), st.floats(0.0, 2.5), st.integers(1, 8))
def test_transp_agrees_with_geoopt(c, seed, rx, ry, d):
    x = points_at([rx / math.sqrt(c)] * 3, d, c, seed)
    y = points_at([ry / math.sqrt(c)] * 3, d, c, seed + 1)
    v = unit_tangent(x, seed + 2)
    G = geoopt.Lorentz(k=torch.tensor(1.0 / c, dtype=torch.float64))
    L = Lorentz(c)
    # geoopt's transport divides by d(x, y)^2 and clamps norms at 1e-8: only well-separated points.
    separated = lm.dist(x, y, c=c) * math.sqrt(c) > 1e-2
    torch.testing.assert_close(L.transp(x, y, v)[separated], G.transp(x, y, v)[separated], rtol=1e-6, atol=1e-6)
    if rx > 1e-2:
        origin_v = L.proju(origin_like(x, c), torch.cat([torch.zeros(3, 1, dtype=torch.float64), v[:, 1:]], dim=-1))
        torch.testing.assert_close(L.transp0(x, origin_v), G.transp0(x, origin_v), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(L.transp0back(x, v), G.transp0back(x, v), rtol=1e-6, atol=1e-6)


def test_transp_keeps_autograd_and_dtype():
    L = Lorentz(1.0, learnable=True)
    x = points_at([1.0] * 2, 4, 1.0, 0).float()
    y = points_at([2.0] * 2, 4, 1.0, 1).float()
    v = unit_tangent(x.double(), 2).float().requires_grad_()
    out = L.transp(x, y, v)
    assert out.dtype == torch.float32
    out.sum().backward()
    assert v.grad is not None and torch.all(torch.isfinite(v.grad))
    assert L.log_c.grad is not None and torch.isfinite(L.log_c.grad)


# ============================================================================== 4. random_normal


def test_random_normal_is_the_wrapped_normal_at_the_origin():
    L = Lorentz(2.0)
    torch.manual_seed(0)
    points = L.random_normal(4000, 6, mean=0.3, std=0.5, dtype=torch.float64)
    assert isinstance(points, geoopt.ManifoldTensor) and points.manifold is L
    assert points.shape == (4000, 6) and points.dtype == torch.float64
    # Exactly lift(v) for the same draws v ~ N(mean, std^2) of the space coordinates.
    torch.manual_seed(0)
    v = torch.randn(4000, 5, dtype=torch.float64) * 0.5 + 0.3
    torch.testing.assert_close(points.data, L.lift(v), rtol=0, atol=0)
    # logmap0 recovers them: coordinates with mean 0.3 and std 0.5 (4000 x 5 draws: the standard
    # errors are 0.004 and 0.003; tolerances are 5 of them), time component 0.
    tangent = L.logmap0(points)
    assert torch.all(tangent[:, 0] == 0)
    assert abs(float(tangent[:, 1:].mean()) - 0.3) < 0.02
    assert abs(float(tangent[:, 1:].std()) - 0.5) < 0.015
    assert L.check_point_on_manifold(points)
    # `random` is the same method; shapes as a tuple work too.
    assert Lorentz.random is Lorentz.random_normal
    assert L.random((3, 4)).shape == (3, 4)
    with pytest.raises(ValueError):
        L.random_normal(3, 1)


# ================================================== 5. geoopt's Lorentz test suite, rewritten here
# geoopt draws 100 points per seed 30..39 with k = seed - 29 (c = 1/k in [0.1, 1]) and |x_s|^2 up to
# k; the same cases run here over hypothesis-drawn curvatures and both dtypes.


def geoopt_style_points(c: float, dtype: torch.dtype, seed: int, n: int = 50, d: int = 9) -> torch.Tensor:
    """Space parts of Euclidean norm up to ``1/sqrt(c)`` in random directions, put on the manifold."""
    g = torch.Generator().manual_seed(seed)
    space = torch.randn(n, d, generator=g, dtype=torch.float64)
    space = space / space.norm(dim=-1, keepdim=True) * (torch.rand(n, 1, generator=g, dtype=torch.float64) / c).sqrt()
    return lm.from_space(space, c=c).to(dtype)


@given(st.floats(0.1, 1.0), dtypes, seeds)
def test_geoopt_suite_points_vectors_origin(c, dtype, seed):
    L = Lorentz(c)
    a, b = geoopt_style_points(c, dtype, seed), geoopt_style_points(c, dtype, seed + 1)
    a = L.projx(a)
    assert L.check_point_on_manifold(a)
    assert L.check_vector_on_tangent(a, L.proju(a, b))
    torch.testing.assert_close(L.origin(10, 10, dtype=dtype).data, L.projx(torch.zeros(10, 10, dtype=dtype)),
                               rtol=2 * eps(dtype), atol=0)
    tolerance = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(L.poincare_to_lorentz(L.lorentz_to_poincare(a)), a, **tolerance)


@given(st.floats(0.1, 1.0), dtypes, seeds)
def test_geoopt_suite_maps(c, dtype, seed):
    L = Lorentz(c)
    a, b = geoopt_style_points(c, dtype, seed), geoopt_style_points(c, dtype, seed + 1)
    tolerance = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(L.expmap(a, L.logmap(a, b)), b, **tolerance)
    v = L.logmap0(a)
    torch.testing.assert_close(L.expmap0(v), a, **tolerance)
    torch.testing.assert_close(L.norm(v), L.dist0(a), **tolerance)
    # Zero-point operations: inner0 and logmap0back are inner / logmap with the origin.
    zero = L.origin(*a.shape, dtype=dtype)
    torch.testing.assert_close(L.inner0(a), L.inner(None, a, zero), **tolerance)
    torch.testing.assert_close(L.logmap0back(a), L.logmap(a, zero), **tolerance)


@given(st.floats(0.1, 1.0), dtypes, seeds)
def test_geoopt_suite_geodesic_segment_unit_property(c, dtype, seed):
    L = Lorentz(c)
    a = geoopt_style_points(c, dtype, seed)
    direction = L.proju(a, geoopt_style_points(c, dtype, seed + 1))
    direction = direction / L.norm(direction, keepdim=True)
    t = torch.linspace(0, 1, 13, dtype=dtype).view(13, 1, 1)
    curve = L.geodesic_unit(t, a, direction)
    travelled = L.dist(curve[:1], curve, keepdim=True)
    tolerance = dict(rtol=1e-5, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(travelled[1:], t.expand_as(travelled)[1:], **tolerance)


@given(st.floats(0.1, 1.0), dtypes, seeds)
def test_geoopt_suite_parallel_transport(c, dtype, seed):
    L = Lorentz(c)
    a, b = geoopt_style_points(c, dtype, seed), geoopt_style_points(c, dtype, seed + 1)
    g = torch.Generator().manual_seed(seed + 2)
    zero = L.origin(*a.shape, dtype=dtype)
    v0 = L.proju(zero, torch.rand(a.shape, generator=g, dtype=torch.float64).to(dtype) + 1e-5)
    u0 = L.proju(zero, torch.rand(a.shape, generator=g, dtype=torch.float64).to(dtype) + 1e-5)
    tolerance = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    # transp0 preserves inner products and is transp from the origin.
    v_a, u_a = L.transp0(a, v0), L.transp0(a, u0)
    torch.testing.assert_close(L.inner(None, v_a, u_a), L.inner(None, v0, u0), **tolerance)
    torch.testing.assert_close(v_a, L.transp(zero, a, v0), **tolerance)
    # transp0back then transp0 is transport through the origin.
    va = L.proju(a, torch.rand(a.shape, generator=g, dtype=torch.float64).to(dtype) + 1e-5)
    torch.testing.assert_close(L.transp0(b, L.transp0back(a, va)), L.transp(zero, b, L.transp(a, zero, va)), **tolerance)
    # transp a -> b preserves inner products.
    ua = L.proju(a, torch.rand(a.shape, generator=g, dtype=torch.float64).to(dtype))
    torch.testing.assert_close(L.inner(None, L.transp(a, b, va), L.transp(a, b, ua)), L.inner(None, va, ua), **tolerance)


@given(st.floats(0.1, 1.0))
def test_geoopt_suite_random_normal_mean(c):
    L = Lorentz(c)
    torch.manual_seed(1)
    points = L.random_normal((10, 500), mean=0.0)
    # 499 standard-normal coordinates per row: the row mean has standard error 0.045.
    assert torch.all(L.logmap0(points).mean(dim=-1).abs() < 0.25)
