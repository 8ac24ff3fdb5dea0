"""Tests for :mod:`manifolds` (Lorentz geometry with MERU's conventions, and the Euclidean twin).

Layout:

1. property tests (hypothesis) over dtypes, curvatures in ``[0.1, 10]`` (both clamp ends always
   among the candidates) and wide norm ranges;
2. agreement with MERU's published formulas, re-written here in numpy float64 on space components;
3. agreement with ``geoopt.Lorentz(k=1/c)`` where geoopt is stable (float64, moderate norms);
4. entailment cones;
5. numerical stability (gradients, huge inputs, clamp ends, autocast / float16) and a contrast with
   geoopt's own float32 overflow;
6. optimisation with ``geoopt.optim.RiemannianAdam``;
7. exact values computed independently with mpmath;
8. the Euclidean manifold.

Tolerances. Points are stored in full ambient coordinates, whose size grows like
``e^{sqrt(c) d(O, x)}``; a rounding error of one unit in the last place of such a coordinate moves the
point by about ``eps * e^{sqrt(c) d(O, x)}`` along the hyperboloid. Round-trip tolerances therefore
scale with ``eps * exp(sqrt(c) * (r_x + r_y))`` (``r`` = distance to the origin), and each test
restricts its inputs to the range where that bound is meaningful for the dtype.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import geoopt
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from manifolds import Euclidean, Lorentz
from manifolds import lorentz_math as lm

DTYPES = (torch.float32, torch.float64)
# MERU's cap on sqrt(c)|v| in the exponential map at the origin (float32); float64 has its own.
CAP = math.asinh(2.0**15)
CAP_FLOAT64 = math.asinh(2.0**239)
K = 0.1  # minimum radius of the entailment cones

# Curvatures: both ends of the default clamp range are always candidates, plus everything between.
curvatures = st.one_of(st.sampled_from([0.1, 1.0, 10.0]), st.floats(0.1, 10.0))
dtypes = st.sampled_from(DTYPES)
seeds = st.integers(0, 2**31 - 1)


def eps(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps


def scaled_norms(low: float, high: float):
    """Values of ``sqrt(c)|v|`` in ``[low, high]``: uniform, plus tiny ones when ``low == 0``."""
    if low > 0:
        return st.floats(low, high)
    # (no subnormal-sized norms: numpy's reference norms underflow there)
    return st.one_of(st.floats(1e-6, high), st.floats(1e-12, 1e-2), st.just(0.0))


@dataclass
class Case:
    """One drawn configuration: curvature, dtype, dimension, rng seed and scaled norms."""

    c: float
    dtype: torch.dtype
    d: int
    seed: int
    norms: list

    @property
    def sqrt_c(self) -> float:
        return math.sqrt(self.c)

    def generator(self, offset: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed + offset)

    def directions(self, offset: int = 0, n: int | None = None) -> torch.Tensor:
        """Unit vectors ``(n, d)`` in float64."""
        g = self.generator(offset)
        raw = torch.randn(len(self.norms) if n is None else n, self.d, generator=g, dtype=torch.float64)
        return raw / raw.norm(dim=-1, keepdim=True)

    def space_vectors(self, offset: int = 0, norms=None) -> torch.Tensor:
        """Tangent vectors at the origin (space part, ``(n, d)``) with ``sqrt(c)|v| = norms``."""
        norms = torch.tensor(self.norms if norms is None else norms, dtype=torch.float64)
        return (self.directions(offset, len(norms)) * norms[:, None] / self.sqrt_c).to(self.dtype)

    def points(self, offset: int = 0, norms=None) -> torch.Tensor:
        """Points ``(n, d+1)`` at distance ``norms / sqrt(c)`` from the origin, built independently of
        the code under test: ``(cosh(s), sinh(s) * direction) / sqrt(c)`` in float64, then cast."""
        s = torch.tensor(self.norms if norms is None else norms, dtype=torch.float64)[:, None]
        full = torch.cat([torch.cosh(s), torch.sinh(s) * self.directions(offset, len(s))], dim=-1)
        return (full / self.sqrt_c).to(self.dtype)

    def manifold(self) -> Lorentz:
        return Lorentz(self.c)


@st.composite
def cases(draw, high, low=0.0, n_max=6, d_max=12):
    """A :class:`Case`; ``high`` (max of ``sqrt(c)|v|``) may be a dict per dtype."""
    dtype = draw(dtypes)
    top = high[dtype] if isinstance(high, dict) else high
    n = draw(st.integers(1, n_max))
    return Case(
        c=draw(curvatures),
        dtype=dtype,
        d=draw(st.integers(1, d_max)),
        seed=draw(seeds),
        norms=draw(st.lists(scaled_norms(low, top), min_size=n, max_size=n)),
    )


def scaled_dist0(x: torch.Tensor, c: float) -> torch.Tensor:
    """``sqrt(c) d(O, x)`` computed in float64 (used only to size tolerances)."""
    x = x.double()
    return torch.asinh(math.sqrt(c) * x[..., 1:].norm(dim=-1))


def relative_constraint_error(x: torch.Tensor, c: float) -> torch.Tensor:
    """``|<x,x>_L + 1/c| / max(1/c, x_t^2)`` evaluated in float64 on the stored coordinates."""
    x = x.double()
    constraint = (x[..., 1:].pow(2).sum(-1) - x[..., 0].pow(2)) + 1.0 / c
    return constraint.abs() / x[..., 0].pow(2).clamp_min(1.0 / c)


def constraint_bound(dtype: torch.dtype) -> float:
    return 1e-4 if dtype == torch.float32 else 1e-12


def zero_time(v: torch.Tensor) -> torch.Tensor:
    """Tangent vector at the origin ``(0, v)``."""
    return torch.cat([torch.zeros_like(v[..., :1]), v], dim=-1)


def lorentz_inner64(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    u, v = u.double(), v.double()
    return (u[..., 1:] * v[..., 1:]).sum(-1) - u[..., 0] * v[..., 0]


# ================================================================== 1. property tests (hypothesis)


@given(cases(high=CAP * 0.999))
def test_logmap0_inverts_expmap0(case):
    """``logmap0(expmap0((0, v))) == (0, v)`` for every norm below MERU's cap, both dtypes."""
    L, v = case.manifold(), case.space_vectors()
    u = zero_time(v)
    back = L.logmap0(L.expmap0(u))
    assert back.dtype == case.dtype
    assert torch.all(back[..., 0] == 0)
    # sinh/asinh are well conditioned in relative terms: a few ulps of |v|.
    error = (back[..., 1:] - v).double().norm(dim=-1)
    assert torch.all(error <= 64 * eps(case.dtype) * v.double().norm(dim=-1) + 1e-30), error
    # lift is the same map on space components.
    torch.testing.assert_close(L.lift(v), L.expmap0(u), rtol=8 * eps(case.dtype), atol=0)


@given(cases(high={torch.float32: CAP * 1.5, torch.float64: CAP_FLOAT64 * 1.5}))
def test_expmap0_caps_at_meru_limit(case):
    """Norms beyond the dtype's cap land at distance ``cap/sqrt(c)``, the direction is kept: MERU's
    ``asinh(2^15)`` in float32, ``asinh(2^239)`` in float64."""
    L, v = case.manifold(), case.space_vectors()
    x = L.expmap0(zero_time(v))
    cap = CAP if case.dtype == torch.float32 else CAP_FLOAT64
    assert cap == lm.max_sqrt_c_norm(case.dtype)
    expected = np.minimum(np.array(case.norms), cap) / case.sqrt_c
    got = L.dist0(x).double().numpy()
    # atol: norms below sqrt(tiny) (1e-15 in float32) are frozen there to keep gradients finite.
    np.testing.assert_allclose(got, expected, rtol=64 * eps(case.dtype), atol=1e-14)
    assert bool(torch.all(relative_constraint_error(x, case.c) < constraint_bound(case.dtype)))


# Points far out are only representable to eps * e^{sqrt(c) r}; and expmap shortens steps beyond the
# cap, so distances between the two points must stay below it (2 * 5.5 < asinh(2^15) = 11.09).
ROUNDTRIP_RANGE = {torch.float32: 3.0, torch.float64: 5.5}


@given(cases(high=ROUNDTRIP_RANGE))
def test_expmap_inverts_logmap(case):
    """``expmap(x, logmap(x, y)) == y``, measured intrinsically by ``dist``."""
    L = case.manifold()
    x, y = case.points(0), case.points(1)
    back = L.expmap(x, L.logmap(x, y))
    gap = case.sqrt_c * L.dist(back.double(), y.double())
    bound = 256 * eps(case.dtype) * torch.exp(scaled_dist0(x, case.c) + scaled_dist0(y, case.c))
    assert torch.all(gap <= bound), (gap, bound)
    assert torch.all(relative_constraint_error(back, case.c) < constraint_bound(case.dtype))


@given(cases(high=ROUNDTRIP_RANGE), st.lists(st.floats(0.0, 1.0), min_size=6, max_size=6))
def test_logmap_inverts_expmap(case, step_fractions):
    """``logmap(x, expmap(x, u)) == u`` for tangent ``u`` (``u`` = transport of ``(0, v)`` to x)."""
    L = case.manifold()
    x = case.points(0)
    step = [f * ROUNDTRIP_RANGE[case.dtype] for f in step_fractions[: len(case.norms)]]
    v = case.space_vectors(1, norms=step)
    u = L.transp0(x, zero_time(v))
    y = L.expmap(x, u)
    back = L.logmap(x, y)
    assert L.check_vector_on_tangent(x.double(), back.double(), atol=1e-5, rtol=1e-5)
    gap = case.sqrt_c * lm.tangent_norm(x.double(), (back - u).double(), c=case.c)
    bound = (
        64
        * eps(case.dtype)
        * torch.exp(scaled_dist0(x, case.c) + scaled_dist0(y, case.c))
        * (1 + torch.tensor(step, dtype=torch.float64))
    )
    assert torch.all(gap <= bound), (gap, bound)


@given(cases(high={torch.float32: 5.0, torch.float64: 8.0}, n_max=4))
def test_dist_symmetric_and_triangle_inequality(case):
    L = case.manifold()
    x, y, z = case.points(0), case.points(1), case.points(2)
    dxy, dyx = L.dist(x, y), L.dist(y, x)
    assert torch.equal(dxy, dyx)
    assert torch.all(dxy >= 0)
    assert torch.all(L.dist(x, x) <= 1e-10)
    r = torch.stack([scaled_dist0(p, case.c) for p in (x, y, z)]).max(dim=0).values
    slack = 64 * eps(case.dtype) * torch.exp(r) / case.sqrt_c
    lhs = L.dist(x, z).double()
    rhs = (dxy + L.dist(y, z)).double()
    assert torch.all(lhs <= rhs + slack), (lhs, rhs)


@given(cases(high=CAP * 0.999))
def test_dist0_is_log_norm_and_distance_from_origin(case):
    """``dist0(x) == |logmap0(x)| == dist(O, x) == sqrt(c)|v|/sqrt(c)`` for ``x = lift(v)``."""
    L, v = case.manifold(), case.space_vectors()
    x = L.lift(v)
    d0 = L.dist0(x).double()
    log_norm = L.logmap0(x)[..., 1:].double().norm(dim=-1)
    origin = L.origin(*x.shape, dtype=case.dtype)
    from_origin = L.dist(origin, x).double()
    expected = torch.tensor(case.norms, dtype=torch.float64) / case.sqrt_c
    tol = dict(rtol=64 * eps(case.dtype), atol=1e-14)  # atol: the norm floor sqrt(tiny)
    torch.testing.assert_close(d0, expected, **tol)
    torch.testing.assert_close(log_norm, expected, **tol)
    torch.testing.assert_close(from_origin, expected, **tol)
    # geoopt's keepdim convention.
    assert L.dist0(x, keepdim=True).shape == (*x.shape[:-1], 1)


@given(cases(high={torch.float32: 5.0, torch.float64: 8.0}, n_max=5), st.integers(1, 4))
def test_cdist_and_cinner_match_rowwise(case, m):
    """Every entry of ``cdist`` / ``cinner`` equals the row-wise ``dist`` / ``inner`` of its pair."""
    L = case.manifold()
    x = case.points(0)
    y = case.points(1, norms=(case.norms * m)[: max(1, len(case.norms) - 1)])
    D = x.shape[-1]
    xi, yj = x[:, None, :], y[None, :, :]
    # inner: a sum of D products, each rounded: error ~ D eps |x||y|.
    magnitude = (x.double().norm(dim=-1)[:, None] * y.double().norm(dim=-1)[None, :])
    inner_gap = (L.cinner(x, y) - L.inner(None, xi, yj)).double().abs()
    assert torch.all(inner_gap <= 4 * D * eps(case.dtype) * magnitude)
    # dist: cdist goes through arccosh(z) whose error, for an error dz in z and the clamp gap, is at
    # most arccosh(1 + dz + gap) (arccosh is concave); dist itself is accurate to eps e^r.
    dz = 4 * D * eps(case.dtype) * case.c * magnitude + lm.near_one_eps(case.dtype)
    r = scaled_dist0(x, case.c)[:, None] + scaled_dist0(y, case.c)[None, :]
    bound = (torch.acosh(1 + dz) + 64 * eps(case.dtype) * torch.exp(r)) / case.sqrt_c
    dist_gap = (L.cdist(x, y) - L.dist(xi, yj)).double().abs()
    assert L.cdist(x, y).shape == (x.shape[0], y.shape[0])
    assert torch.all(dist_gap <= bound), (dist_gap, bound)


@given(
    cases(high=1e4, low=0.0),
    st.floats(0.0, 5.0),
)
def test_points_stay_on_manifold(case, base_norm):
    """``lift``, ``expmap0``, ``expmap`` (huge steps included) and ``projx`` land on the hyperboloid."""
    L = case.manifold()
    bound = constraint_bound(case.dtype)
    v = case.space_vectors()
    for point in (L.lift(v), L.expmap0(zero_time(v))):
        assert torch.all(torch.isfinite(point))
        assert torch.all(relative_constraint_error(point, case.c) < bound)
    x = case.points(1, norms=[base_norm] * len(case.norms))
    u = L.proju(x, zero_time(v))
    moved = L.expmap(x, u)
    assert torch.all(torch.isfinite(moved))
    assert torch.all(relative_constraint_error(moved, case.c) < bound)
    # projx of arbitrary ambient vectors, coordinates from 1e-4 to 1e8.
    g = case.generator(2)
    scale = 10.0 ** (torch.rand(len(case.norms), 1, generator=g, dtype=torch.float64) * 12 - 4)
    ambient = (torch.randn(len(case.norms), case.d + 1, generator=g, dtype=torch.float64) * scale)
    projected = L.projx(ambient.to(case.dtype))
    assert torch.all(relative_constraint_error(projected, case.c) < bound)
    torch.testing.assert_close(projected[..., 1:], ambient[..., 1:].to(case.dtype), rtol=0, atol=0)


@given(cases(high={torch.float32: 5.0, torch.float64: 8.0}), st.floats(-2.0, 2.0))
def test_proju_gives_tangent_vectors(case, log_scale):
    L = case.manifold()
    x = case.points(0)
    g = case.generator(1)
    u = (torch.randn(x.shape, generator=g, dtype=torch.float64) * 10.0**log_scale).to(case.dtype)
    p = L.proju(x, u)
    D = x.shape[-1]
    xn, un = x.double().norm(dim=-1), u.double().norm(dim=-1)
    # p = u + c<x,u>x: rounding in <x,u> (~ D eps |x||u|) is multiplied by c|x|^2 when it re-enters.
    bound = 8 * D * eps(case.dtype) * xn * un * (1 + case.c * xn**2)
    assert torch.all(lorentz_inner64(x, p).abs() <= bound)
    # Idempotent.
    torch.testing.assert_close(
        L.proju(x, p).double(), p.double(), rtol=0, atol=float((bound * xn).max()) + 1e-300
    )


@given(cases(high={torch.float32: 3.0, torch.float64: 5.0}, n_max=4))
def test_transp_preserves_inner_products(case):
    L = case.manifold()
    x, y = case.points(0), case.points(1)
    g = case.generator(2)
    u = L.proju(x, torch.randn(x.shape, generator=g, dtype=torch.float64).to(case.dtype))
    w = L.proju(x, torch.randn(x.shape, generator=g, dtype=torch.float64).to(case.dtype))
    pu, pw = L.transp(x, y, u), L.transp(x, y, w)
    r = scaled_dist0(x, case.c) + scaled_dist0(y, case.c)
    scale = 256 * eps(case.dtype) * torch.exp(2 * r) * (
        u.double().norm(dim=-1) * w.double().norm(dim=-1)
    )
    assert torch.all((lorentz_inner64(pu, pw) - lorentz_inner64(u, w)).abs() <= scale)
    assert torch.all((lorentz_inner64(pu, pu) - lorentz_inner64(u, u)).abs() <= scale)
    # Tangent at y afterwards, and transporting back returns u.
    assert torch.all(lorentz_inner64(y, pu).abs() <= scale / w.double().norm(dim=-1) * x.double().norm(dim=-1))
    back = L.transp(y, x, pu)
    assert torch.all((back - u).double().norm(dim=-1) <= scale / w.double().norm(dim=-1))
    # transp(x, x, u) = u + c<x,u>_L x: the rounding of <x,u>_L ~ 0 re-enters multiplied by c|x|^2.
    same = L.transp(x, x, u)
    xn = x.double().norm(dim=-1)
    bound = 64 * eps(case.dtype) * (1 + case.c * xn**2) * u.double().norm(dim=-1)
    assert torch.all((same - u).double().norm(dim=-1) <= bound)


# ===================================================== 2. MERU's published formulas (numpy, float64)
# Written from the formulas in docs/SPEC.md section 1, on MERU's space components.


def meru_exp_map0(v, c, cap=math.asinh(2.0**15)):
    rc_norm = math.sqrt(c) * np.linalg.norm(v, axis=-1, keepdims=True)
    capped = np.minimum(rc_norm, cap)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.sinh(capped) * v / rc_norm
    return np.where(rc_norm > 0, out, 0.0)


def meru_log_map0(x, c):
    rc_time = np.sqrt(1 + c * np.sum(x**2, axis=-1, keepdims=True))
    distance0 = np.arccosh(np.maximum(rc_time, 1.0))
    rc_norm = math.sqrt(c) * np.linalg.norm(x, axis=-1, keepdims=True)
    return distance0 * x / rc_norm


def meru_time(x, c):
    return np.sqrt(1 / c + np.sum(x**2, axis=-1))


def meru_pairwise_inner(x, y, c):
    return x @ y.T - meru_time(x, c)[:, None] * meru_time(y, c)[None, :]


def meru_pairwise_dist(x, y, c):
    return np.arccosh(np.maximum(-c * meru_pairwise_inner(x, y, c), 1.0)) / math.sqrt(c)


def meru_half_aperture(x, c, min_radius=K):
    ratio = 2 * min_radius / (np.linalg.norm(x, axis=-1) * math.sqrt(c))
    return np.arcsin(np.clip(ratio, -1.0, 1.0))


def meru_oxy_angle(x, y, c):
    x_time, y_time = meru_time(x, c), meru_time(y, c)
    z = c * (np.sum(x * y, axis=-1) - x_time * y_time)
    numerator = y_time + z * x_time
    denominator = np.linalg.norm(x, axis=-1) * np.sqrt(np.maximum(z**2 - 1, 0.0))
    return np.arccos(np.clip(numerator / denominator, -1.0, 1.0))


MERU_RTOL = 1e-6


@given(cases(high=2 * CAP, n_max=8).filter(lambda k: k.dtype == torch.float64))
def test_meru_exp_map0_lift_expmap0_from_space(case):
    L, v = case.manifold(), case.space_vectors()
    # MERU's formula with float64's cap (MERU's own cap asinh(2^15) holds in float32 only).
    reference = meru_exp_map0(v.numpy(), case.c, cap=CAP_FLOAT64)
    lifted = L.lift(v)
    np.testing.assert_allclose(L.to_space(lifted).numpy(), reference, rtol=MERU_RTOL, atol=1e-300)
    expmapped = L.expmap0(zero_time(v))
    np.testing.assert_allclose(expmapped[..., 1:].numpy(), reference, rtol=MERU_RTOL, atol=1e-300)
    full = L.from_space(torch.from_numpy(reference))
    np.testing.assert_allclose(full[..., 0].numpy(), meru_time(reference, case.c), rtol=MERU_RTOL)
    np.testing.assert_allclose(full[..., 1:].numpy(), reference, rtol=0, atol=0)
    np.testing.assert_allclose(lifted[..., 0].numpy(), meru_time(reference, case.c), rtol=MERU_RTOL)


@given(cases(high=CAP, low=1e-3, n_max=8).filter(lambda k: k.dtype == torch.float64))
def test_meru_log_map0(case):
    # low = 1e-3: MERU's arccosh(sqrt(1 + c|x|^2)) itself loses relative accuracy ~ eps / (c|x|^2)
    # closer to the origin, so it stops being a 1e-6 reference there.
    L = case.manifold()
    x_space = meru_exp_map0(case.space_vectors().numpy(), case.c)
    reference = meru_log_map0(x_space, case.c)
    got = L.logmap0(L.from_space(torch.from_numpy(x_space)))
    np.testing.assert_allclose(got[..., 1:].numpy(), reference, rtol=MERU_RTOL, atol=1e-300)
    np.testing.assert_allclose(
        L.dist0(L.from_space(torch.from_numpy(x_space))).numpy(),
        np.linalg.norm(reference, axis=-1),
        rtol=MERU_RTOL,
    )


@given(cases(high=8.0, low=1e-2, n_max=8).filter(lambda k: k.dtype == torch.float64), st.integers(1, 6))
def test_meru_pairwise_dist(case, m):
    L = case.manifold()
    x = L.to_space(case.points(0)).numpy()
    y = L.to_space(case.points(1, norms=(case.norms * m)[:m])).numpy()
    reference = meru_pairwise_dist(x, y, case.c)
    X, Y = L.from_space(torch.from_numpy(x)), L.from_space(torch.from_numpy(y))
    # atol: for (nearly) coincident points both evaluate arccosh at 1 + rounding, the rounding of
    # c<x,y>_L being ~ eps c (x_t y_t + |x_s||y_s|); ours also clamps the argument 1e-12 above 1.
    magnitude = case.c * (
        np.outer(meru_time(x, case.c), meru_time(y, case.c))
        + np.outer(np.linalg.norm(x, axis=-1), np.linalg.norm(y, axis=-1))
    )
    atol = float(np.arccosh(1 + 1e-12 + 16 * 2.3e-16 * magnitude.max())) / case.sqrt_c
    np.testing.assert_allclose(L.cdist(X, Y).numpy(), reference, rtol=MERU_RTOL, atol=atol)
    np.testing.assert_allclose(
        L.cinner(X, Y).numpy(),
        meru_pairwise_inner(x, y, case.c),
        rtol=0,
        atol=float(16 * 2.3e-16 * magnitude.max() / case.c),
    )
    rowwise = L.dist(X[:, None], Y[None]).numpy()
    np.testing.assert_allclose(rowwise, reference, rtol=MERU_RTOL, atol=atol)


@given(cases(high=10.0, low=1e-4, n_max=8).filter(lambda k: k.dtype == torch.float64))
def test_meru_half_aperture(case):
    L = case.manifold()
    x = case.points(0)
    reference = meru_half_aperture(L.to_space(x).numpy(), case.c)
    got = L.half_aperture(x).numpy()
    outside = 2 * K / np.sinh(np.array(case.norms)) < 1 - 1e-3
    np.testing.assert_allclose(got[outside], reference[outside], rtol=MERU_RTOL)
    # Inside the minimum radius the aperture is clamped just below pi/2 (both clamp near 1).
    assert np.all(np.abs(got[~outside] - math.pi / 2) < 0.05)


@given(cases(high=6.0, low=1e-2, n_max=8).filter(lambda k: k.dtype == torch.float64))
def test_meru_oxy_angle(case):
    L = case.manifold()
    x, y = case.points(0), case.points(1)
    # The angle is undefined at y = x (MERU's clamps give pi/2 there, and so do we).
    torch.testing.assert_close(L.oxy_angle(x, x), torch.full_like(x[..., 0], math.pi / 2))
    apart = (L.dist(x, y) > 1e-4).numpy()
    reference = meru_oxy_angle(L.to_space(x).numpy(), L.to_space(y).numpy(), case.c)
    got = L.oxy_angle(x, y).numpy()
    # atol: MERU's arccos form itself is accurate only to ~sqrt(eps) near 0 and pi.
    np.testing.assert_allclose(got[apart], reference[apart], rtol=MERU_RTOL, atol=2e-6)


# ============================================== 3. geoopt.Lorentz(k = 1/c) where geoopt is stable


@given(cases(high=3.0, low=0.1, n_max=6).filter(lambda k: k.dtype == torch.float64))
def test_agrees_with_geoopt(case):
    L = case.manifold()
    G = geoopt.Lorentz(k=torch.tensor(1.0 / case.c, dtype=torch.float64))
    tol = dict(rtol=1e-9, atol=1e-9)
    x, y = case.points(0), case.points(1)
    v = case.space_vectors(2)
    u0 = zero_time(v)
    g = case.generator(3)
    ambient = torch.randn(x.shape, generator=g, dtype=torch.float64)
    # Tangent steps with sqrt(c)|u|_L in [0.1, 3] (ours shortens steps beyond MERU's cap).
    u = L.proju(x, ambient)
    steps = 0.1 + 2.9 * torch.rand(x.shape[:-1], generator=g, dtype=torch.float64)
    u = u * (steps / (case.sqrt_c * L.norm(u)))[:, None]
    w = L.proju(x, torch.randn(x.shape, generator=g, dtype=torch.float64))

    torch.testing.assert_close(L.expmap0(u0), G.expmap0(u0), **tol)
    torch.testing.assert_close(L.logmap0(y), G.logmap0(y), **tol)
    torch.testing.assert_close(L.expmap(x, u), G.expmap(x, u), **tol)
    torch.testing.assert_close(L.proju(x, ambient), G.proju(x, ambient), **tol)
    torch.testing.assert_close(L.inner(x, u, w), G.inner(x, u, w), **tol)
    torch.testing.assert_close(L.inner(x, u), G.inner(x, u), **tol)
    torch.testing.assert_close(L.norm(u), G.norm(u), **tol)
    # geoopt's egrad2rgrad flips the sign of the time coordinate of its argument in place.
    grad = ambient.clone()
    torch.testing.assert_close(L.egrad2rgrad(x, grad), G.egrad2rgrad(x, grad.clone()), **tol)
    torch.testing.assert_close(grad, ambient, rtol=0, atol=0)  # ours does not mutate
    torch.testing.assert_close(L.projx(ambient), G.projx(ambient), **tol)

    apart = L.dist(x, y) > 1e-3  # geoopt's arccosh clamps z^2 - 1 at 1e-15
    if bool(apart.any()):
        xs, ys, us = x[apart], y[apart], u[apart]
        torch.testing.assert_close(L.dist(xs, ys), G.dist(xs, ys), **tol)
        torch.testing.assert_close(L.logmap(xs, ys), G.logmap(xs, ys), **tol)
        torch.testing.assert_close(L.transp(xs, ys, us), G.transp(xs, ys, us), **tol)
        torch.testing.assert_close(L.dist0(ys), G.dist0(ys), **tol)


# =========================================================================== 4. entailment cones


@given(
    cases(high=4.0, low=math.asinh(2 * K) + 0.3, n_max=6),
    st.floats(0.05, 0.95),
    st.floats(0.0, 4.0),
)
def test_cone_contains_geodesic_continuation(case, fraction, behind):
    """For y on the segment O–x outside the minimum radius, x lies in y's cone (angle ~ 0); points on
    the other side of y (towards and beyond the origin) lie outside (angle ~ pi)."""
    L = case.manifold()
    v = case.space_vectors()
    norms = np.array(case.norms)
    # keep y outside the minimum radius: sqrt(c)|y_s| = sinh(t * s) > 2K (with 5% margin)
    t = np.maximum(fraction, np.arcsinh(2 * K * 1.05) / norms)
    t_tensor = torch.tensor(t, dtype=case.dtype)[:, None]
    x, y = L.lift(v), L.lift(t_tensor * v)
    assert torch.all(case.sqrt_c * L.to_space(y).double().norm(dim=-1) > 2 * K)
    aperture = L.half_aperture(y)
    angle = L.oxy_angle(y, x)
    # acos near 1 turns a rounding error delta of its argument into sqrt(2 delta).
    tol = 3e-3 if case.dtype == torch.float32 else 1e-5
    assert torch.all(angle <= tol), angle
    assert torch.all(angle <= aperture + tol)
    # Opposite side: between O and y, and beyond O.
    between = L.lift(0.5 * t_tensor * v)
    beyond = L.lift(-(behind / case.sqrt_c) * v / v.norm(dim=-1, keepdim=True).clamp_min(1e-30))
    for other in (between, beyond):
        outside = L.oxy_angle(y, other)
        assert torch.all(outside > aperture)
        assert torch.all(outside >= math.pi - 0.05)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", [0.1, 1.0, 10.0])
def test_half_aperture_decreases_with_norm(dtype, c):
    L = Lorentz(c)
    s = torch.linspace(1e-4, 10.0, 2001, dtype=torch.float64)
    direction = torch.nn.functional.normalize(torch.ones(5, dtype=torch.float64), dim=0)
    x = L.from_space((torch.sinh(s)[:, None] * direction / math.sqrt(c)).to(dtype))
    aperture = L.half_aperture(x).double()
    steps = aperture[1:] - aperture[:-1]
    assert torch.all(steps <= 0)
    outside = torch.sinh(s[1:]) > 2 * K * 1.001
    assert torch.all(steps[outside & (torch.sinh(s[1:]) < 1e3)] < 0)
    assert torch.all(aperture[torch.sinh(s) < 2 * K] >= math.pi / 2 - 2e-3)
    assert float(aperture[-1]) == pytest.approx(math.asin(2 * K / math.sinh(10.0)), rel=1e-4)


# ======================================================================== 5. numerical stability


def all_finite(*tensors):
    return all(bool(torch.isfinite(t).all()) for t in tensors)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", [0.1, 1.0, 10.0])
def test_gradients_finite_for_identical_points(dtype, c):
    L = Lorentz(c)
    torch.manual_seed(0)
    v = (torch.randn(6, 8, dtype=dtype) * 2).requires_grad_()
    x = L.lift(v)
    distances = L.cdist(x, x)
    # cdist evaluates MERU's arccosh(-c<x,y>_L): on the diagonal -c<x,x>_L = 1 + rounding of
    # ~D eps c x_t^2, so the diagonal is only ~sqrt(eps) e^{sqrt(c) r}, not 0 (dist is exact there).
    rounding = 4 * x.shape[-1] * eps(dtype) * c * x.detach().double()[:, 0] ** 2
    bound = torch.acosh(1 + lm.near_one_eps(dtype) + rounding) / math.sqrt(c)
    assert torch.all(distances.diagonal().double() <= bound)
    (grad_v,) = torch.autograd.grad(distances.sum(), v, retain_graph=True)
    assert all_finite(grad_v)
    x2 = L.lift(v)
    checks = [
        L.dist(x, x2).sum(),
        L.dist(x, x).sum(),
        L.logmap(x, x2).sum(),
        L.oxy_angle(x, x2).sum(),
        L.oxy_angle(x, L.lift(3 * v)).sum(),  # on the ray: acos argument at 1
    ]
    for value in checks:
        (grad,) = torch.autograd.grad(value, v, retain_graph=True)
        assert all_finite(value, grad)
    # Zero vectors and the origin itself.
    zero = torch.zeros(3, 8, dtype=dtype, requires_grad=True)
    origin = L.lift(zero)
    for value in (origin.sum(), L.dist0(origin).sum(), L.half_aperture(origin).sum(),
                  L.logmap0(origin).sum(), L.dist(origin, origin).sum(), L.cdist(origin, origin).sum()):
        (grad,) = torch.autograd.grad(value, zero, retain_graph=True)
        assert all_finite(value, grad)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", [0.1, 1.0, 10.0])
@pytest.mark.parametrize("norm", [30.0, 1e3, 1e4])
def test_gradients_finite_for_antipodal_large_inputs(dtype, c, norm):
    L = Lorentz(c)
    torch.manual_seed(1)
    direction = F.normalize(torch.randn(4, 16, dtype=dtype), dim=-1)
    v = (direction * norm).requires_grad_()
    x, y = L.lift(v), L.lift(-v)
    values = [
        L.dist(x, y),
        L.cdist(x, y),
        L.cdist(torch.cat([x, y]), torch.cat([x, y])),
        L.dist0(x),
        L.half_aperture(x),
        L.oxy_angle(x, y),
        L.logmap(x, y),
        L.logmap0(y),
    ]
    for value in values:
        (grad,) = torch.autograd.grad(value.sum(), v, retain_graph=True)
        assert all_finite(value, grad)
    # Antipodal points at the cap are 2 cap/sqrt(c) apart (cap: asinh(2^15) in float32, asinh(2^239)
    # in float64).
    cap = CAP if dtype == torch.float32 else CAP_FLOAT64
    expected = 2 * min(norm * math.sqrt(c), cap) / math.sqrt(c)
    torch.testing.assert_close(L.dist(x, y).double(), torch.full((4,), expected, dtype=torch.float64),
                               rtol=1e-4, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", [0.1, 10.0])
def test_huge_tangent_norms(dtype, c):
    """Tangent norms from 1e-8 up to 1e4 in expmap0 / lift / expmap: finite values and gradients."""
    L = Lorentz(c)
    torch.manual_seed(2)
    norms = torch.logspace(-8, 4, 25, dtype=dtype)[:, None]
    v = (F.normalize(torch.randn(25, 6, dtype=dtype), dim=-1) * norms).requires_grad_()
    base = L.lift(torch.randn(25, 6, dtype=dtype)).detach()
    outputs = [L.lift(v), L.expmap0(zero_time(v)), L.expmap(base, L.proju(base, zero_time(v)))]
    for out in outputs:
        (grad,) = torch.autograd.grad(out.sum(), v, retain_graph=True)
        assert all_finite(out, grad)
        assert torch.all(relative_constraint_error(out, c) < constraint_bound(dtype))


def test_curvature_clamped_to_range():
    with pytest.raises(ValueError):
        Lorentz(c=20.0)
    with pytest.raises(ValueError):
        Lorentz(c=0.05)
    L = Lorentz(c=1.0, learnable=True)
    with torch.no_grad():
        L.log_c.fill_(math.log(100.0))
    assert float(L.c.detach()) == pytest.approx(10.0)
    with torch.no_grad():
        L.log_c.fill_(math.log(1e-3))
    assert float(L.c.detach()) == pytest.approx(0.1)
    assert float(L.k.detach()) == pytest.approx(10.0)


@pytest.mark.parametrize("normalize", [True, False])
def test_euclidean_geometry_runs_in_float32_under_autocast(normalize):
    E = Euclidean(normalize=normalize)
    torch.manual_seed(4)
    layer = torch.nn.Linear(32, 16)
    features = torch.randn(8, 32)
    reference = E.lift(layer(features))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        v = layer(features)
        assert v.dtype == torch.bfloat16
        x = E.lift(v)
        outputs = {
            "lift": x, "cinner": E.cinner(x, x), "csimilarity": E.csimilarity(x, x), "cdist": E.cdist(x, x),
            "similarity": E.similarity(x, x.flip(0)), "dist0": E.dist0(x),
            "half_aperture": E.half_aperture(x), "oxy_angle": E.oxy_angle(x, x.flip(0)),
        }
    for name, out in outputs.items():
        assert out.dtype == torch.float32, name
    # Only the layer ran in bfloat16: the logits carry its rounding, not a second one of their own.
    exact = E.csimilarity(reference, reference)
    upcast = E.csimilarity(E.lift(v.float()), E.lift(v.float()))
    assert torch.allclose(outputs["csimilarity"], upcast, rtol=0, atol=1e-6)
    assert not torch.allclose(outputs["csimilarity"], exact, rtol=0, atol=1e-6)  # the layer did round


@pytest.mark.parametrize("c", [0.1, 1.0, 10.0])
def test_autocast_bfloat16_and_float16_inputs_run_in_float32(c):
    L = Lorentz(c)
    torch.manual_seed(3)
    layer = torch.nn.Linear(32, 16)
    features = torch.randn(8, 32) * 30
    with torch.autocast("cpu", dtype=torch.bfloat16):
        v = layer(features)
        assert v.dtype == torch.bfloat16
        x = L.lift(v)
        outputs = {
            "lift": x,
            "cdist": L.cdist(x, x),
            "cinner": L.cinner(x, x),
            "dist": L.dist(x, x.flip(0)),
            "dist0": L.dist0(x),
            "half_aperture": L.half_aperture(x),
            "oxy_angle": L.oxy_angle(x, x.flip(0)),
            "logmap0": L.logmap0(x),
            "expmap0": L.expmap0(zero_time(v)),
            "csimilarity": L.csimilarity(x, x),
        }
        loss = outputs["cdist"].sum() + outputs["oxy_angle"].sum() + outputs["half_aperture"].sum()
    for name, out in outputs.items():
        assert out.dtype == torch.float32, name
        assert all_finite(out), name
    loss.backward()
    assert all_finite(layer.weight.grad)
    # float16 inputs with norms whose squares overflow float16 (max 65504).
    v16 = (F.normalize(torch.randn(8, 16), dim=-1) * 1e3).half()
    x16 = L.lift(v16)
    assert x16.dtype == torch.float32 and all_finite(x16)
    assert torch.all(relative_constraint_error(x16, c) < 1e-4)
    # float16 points (moderate coordinates: they must be representable in float16).
    p16 = L.lift(torch.randn(8, 16) / math.sqrt(c)).half()
    assert p16.dtype == torch.float16
    outputs = (L.cdist(p16, p16), L.cdist(x16, p16), L.dist0(p16), L.half_aperture(p16),
               L.oxy_angle(p16, p16.flip(0)), L.logmap0(p16), L.dist(p16, p16.flip(0)))
    for out in outputs:
        assert out.dtype == torch.float32 and all_finite(out)


def test_geoopt_float32_overflow_contrast():
    """Documented contrast: geoopt 0.5.1's Lorentz computes the time coordinate as
    ``sqrt(k + |x_s|^2)`` with ``|x_s| ~ cosh(50) ~ 2.6e21``, whose square overflows float32 (3.4e38);
    ours caps ``sqrt(c)|v|`` at ``asinh(2^15)`` (MERU) and stays finite and on the manifold."""
    torch.manual_seed(4)
    v = F.normalize(torch.randn(4, 8), dim=-1) * 50.0
    u = zero_time(v)
    theirs = geoopt.Lorentz().expmap0(u)
    assert not bool(torch.isfinite(theirs).all())
    ours = Lorentz().expmap0(u)
    assert all_finite(ours)
    assert torch.all(relative_constraint_error(ours, 1.0) < 1e-4)
    assert all_finite(Lorentz().cdist(ours, ours), Lorentz().dist(ours, ours.flip(0)))


# ============================================================ 6. optimisation with RiemannianAdam


def contrastive_loss(manifold: Lorentz, points: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over ``-cdist``: point i's positive is i +- 32, the diagonal is masked."""
    n = points.shape[0]
    logits = -manifold.cdist(points, points)
    logits = logits.masked_fill(torch.eye(n, dtype=torch.bool), float("-inf"))
    targets = (torch.arange(n) + n // 2) % n
    return F.cross_entropy(logits, targets)


@contextlib.contextmanager
def single_thread():
    """64 x 64 problems gain nothing from intra-op threads, and on a busy machine their
    synchronisation makes each step several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@single_thread()
def run_adam(manifold: Lorentz, steps: int, extra_params=()):
    torch.manual_seed(5)
    points = geoopt.ManifoldParameter(manifold.random_normal(64, 17, std=0.5), manifold=manifold)
    assert points.dtype == torch.float32
    # Curvature first in the group: it is updated before the points, so the retraction of the points
    # already uses the new c and they stay exactly on the (new) hyperboloid.
    optimizer = geoopt.optim.RiemannianAdam([*extra_params, points], lr=1e-2)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = contrastive_loss(manifold, points)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        assert math.isfinite(losses[-1])
    return points.detach(), losses


def test_riemannian_adam_on_lorentz():
    L = Lorentz()
    points, losses = run_adam(L, steps=300)  # ~2-5 s on one core
    assert all_finite(points)
    assert torch.all(relative_constraint_error(points, 1.0) < 1e-4)
    assert L.check_point_on_manifold(points)
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])


def test_riemannian_adam_with_learnable_curvature():
    L = Lorentz(learnable=True)
    points, losses = run_adam(L, steps=200, extra_params=[L.log_c])
    c = float(L.c.detach())
    assert L.c_range[0] <= c <= L.c_range[1]
    assert c != 1.0  # it received gradients and moved
    assert L.log_c.grad is not None and bool(torch.isfinite(L.log_c.grad))
    assert all_finite(points)
    assert torch.all(relative_constraint_error(points, c) < 1e-4)
    assert losses[-1] < losses[0]
    # Set far out of range (as a file may hold), the curvature reads as the clamp end and its
    # gradient still flows (a zero gradient there froze the curvature for good), and one Riemannian
    # Adam step brings log c back into the range.
    with torch.no_grad():
        L.log_c.fill_(math.log(1e3))
    L.log_c.grad = None
    contrastive_loss(L, L.projx(points)).backward()
    assert float(L.c.detach()) == pytest.approx(L.c_range[1])
    assert float(L.log_c.grad) != 0.0
    geoopt.optim.RiemannianAdam([L.log_c], lr=1e-3).step()
    assert math.log(L.c_range[0]) <= float(L.log_c.detach()) <= math.log(L.c_range[1])


# ============================================================ 7. exact values (mpmath, 50 digits)
# Computed with mpmath at mp.dps = 50 from first principles, independently of the code under test:
# points are (sqrt(1/c + |x_s|^2), x_s); dist = acosh(-c <x,y>_L)/sqrt(c); dist0 = dist(O, x) (also by
# acosh); half_aperture = asin(2 * 0.1 / (sqrt(c)|x_s|)); oxy_angle = the angle, in the Lorentz metric
# at x, between -log_x(O) (the continuation of O -> x) and log_x(y), with
# log_x(y) = d(x, y) w / |w|_L, w = y + c<x,y>_L x (a geometric definition, not MERU's closed form);
# expmap0((0, v)) = (cosh(sqrt(c)|v|)/sqrt(c), sinh(sqrt(c)|v|) v / (sqrt(c)|v|)).
X_SPACE = [0.3, -1.2, 0.5]
Y_SPACE = [-0.7, 0.4, 2.0]
V_TANGENT = [0.8, -0.6, 1.5]
MPMATH_VALUES = {
    1.0: dict(
        dist=1.9694705295776363294,
        dist0_x=1.0991120325972883936,
        half_aperture_x=0.15047353943546003079,
        oxy_x_y=2.4853563526891940214,
        oxy_y_x=2.7545018149561948489,
    ),
    0.5: dict(
        dist=2.1209423895479779303,
        dist0_x=1.189040266818317112,
        half_aperture_x=0.21362059128599352601,
        oxy_x_y=2.3490374785591127667,
        oxy_y_x=2.6853142530930902752,
    ),
}
MPMATH_EXPMAP0 = {
    1.0: [3.1156515670217539064, 1.3094522871132002513, -0.98208921533490018851, 2.4552230383372504713],
    2.0: [4.5533952660672150115, 1.9961024644108310383, -1.4970768483081232787, 3.7426921207703081968],
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", sorted(MPMATH_VALUES))
def test_mpmath_reference_values(c, dtype):
    L = Lorentz(c)
    rtol = 1e-13 if dtype == torch.float64 else 2e-6
    x = L.from_space(torch.tensor(X_SPACE, dtype=dtype))
    y = L.from_space(torch.tensor(Y_SPACE, dtype=dtype))
    expected = MPMATH_VALUES[c]
    got = dict(
        dist=L.dist(x, y),
        dist0_x=L.dist0(x),
        half_aperture_x=L.half_aperture(x),
        oxy_x_y=L.oxy_angle(x, y),
        oxy_y_x=L.oxy_angle(y, x),
    )
    for name, value in got.items():
        assert float(value) == pytest.approx(expected[name], rel=rtol), name
    assert float(L.cdist(x[None], y[None])) == pytest.approx(expected["dist"], rel=max(rtol, 1e-12))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", sorted(MPMATH_EXPMAP0))
def test_mpmath_expmap0(c, dtype):
    L = Lorentz(c)
    rtol = 1e-13 if dtype == torch.float64 else 2e-6
    v = torch.tensor(V_TANGENT, dtype=dtype)
    expected = torch.tensor(MPMATH_EXPMAP0[c], dtype=torch.float64)
    torch.testing.assert_close(L.expmap0(zero_time(v)).double(), expected, rtol=rtol, atol=0)
    torch.testing.assert_close(L.lift(v).double(), expected, rtol=rtol, atol=0)
    torch.testing.assert_close(L.logmap0(expected.to(dtype))[1:], v, rtol=8 * rtol, atol=0)


# ===================================================================================== 8. Euclidean


@given(st.integers(1, 8), st.integers(1, 8), st.integers(1, 16), dtypes, seeds, st.floats(-3, 3))
def test_euclidean_cdist_and_cinner(n, m, d, dtype, seed, log_scale):
    E = Euclidean()
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, d, generator=g, dtype=torch.float64) * 10.0**log_scale).to(dtype)
    y = (torch.randn(m, d, generator=g, dtype=torch.float64) * 10.0**log_scale).to(dtype)
    torch.testing.assert_close(E.cinner(x, y), x @ y.T, rtol=0, atol=0)
    # |x|^2 + |y|^2 - 2x.y loses ~sqrt(eps) relative to |x|+|y| for nearby points.
    scale = float(x.double().norm(dim=-1).max() + y.double().norm(dim=-1).max())
    atol = 4 * math.sqrt(d * eps(dtype)) * scale
    torch.testing.assert_close(E.cdist(x, y), torch.cdist(x, y), rtol=1e-5, atol=atol)
    assert torch.all(E.cdist(x, x).diagonal() <= atol)
    assert E.similarity(x[:1], y[:1]).shape == (1,)


def test_euclidean_lift_normalises_and_cosine_similarity():
    torch.manual_seed(6)
    v = torch.randn(7, 5) * 3
    assert torch.equal(Euclidean().lift(v), v)
    E = Euclidean(normalize=True)
    u = E.lift(v)
    torch.testing.assert_close(u.norm(dim=-1), torch.ones(7))
    w = E.lift(torch.randn(4, 5))
    cosine = F.cosine_similarity(u[:, None, :], w[None, :, :], dim=-1)
    torch.testing.assert_close(E.csimilarity(u, w), cosine)
    torch.testing.assert_close(E.dist0(u), torch.ones(7))


def test_euclidean_mean_features_is_clip_average():
    torch.manual_seed(7)
    prompts = torch.randn(5, 12) * torch.tensor([0.1, 1, 10, 3, 0.5])[:, None]
    E = Euclidean(normalize=True)
    clip = F.normalize(F.normalize(prompts, dim=-1).mean(dim=0), dim=-1)
    torch.testing.assert_close(E.lift(E.mean_features(prompts)), clip)
    # MERU averages tangent features, then lifts.
    L = Lorentz()
    torch.testing.assert_close(L.lift(L.mean_features(prompts)), L.lift(prompts.mean(dim=0)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_euclidean_cones(dtype):
    torch.manual_seed(8)
    E = Euclidean()
    x = torch.randn(6, 4, dtype=dtype) * 3 + 0.5
    aperture = E.half_aperture(x)
    ahead = E.oxy_angle(x, 2.5 * x)  # on the ray beyond x
    assert torch.all(ahead <= 2e-3)
    assert torch.all(ahead <= aperture)
    for behind in (0.5 * x, -x):
        angle = E.oxy_angle(x, behind)
        assert torch.all(angle > aperture)
        assert torch.all(angle >= math.pi - 2e-3)
    # Aperture: asin(K / |x|), clamped inside the minimum radius, and decreasing.
    norms = torch.tensor([0.05, 0.1, 0.2, 1.0, 10.0], dtype=dtype)
    ap = E.half_aperture(norms[:, None] * F.normalize(torch.ones(1, 4, dtype=dtype), dim=-1))
    assert torch.all(ap[1:] <= ap[:-1])
    assert float(ap[-1]) == pytest.approx(math.asin(0.01), rel=1e-5)


@single_thread()
def test_euclidean_manifold_parameter_with_riemannian_adam():
    torch.manual_seed(9)
    E = Euclidean()
    target = torch.randn(10, 6)
    param = geoopt.ManifoldParameter(torch.zeros(10, 6), manifold=E)
    optimizer = geoopt.optim.RiemannianAdam([param], lr=5e-2)
    first = None
    for _ in range(300):
        optimizer.zero_grad()
        loss = (E.cdist(param, target).diagonal() ** 2).mean()
        loss.backward()
        optimizer.step()
        first = float(loss) if first is None else first
    assert float(loss) < 1e-2 * first
    torch.testing.assert_close(param.detach(), target, atol=0.05, rtol=0)


# ============================================================== cdist's two evaluation paths


@pytest.mark.parametrize("dtype", DTYPES)
def test_cdist_inplace_and_autograd_paths_agree(dtype):
    """cdist runs its elementwise tail in place when nothing needs a gradient: same numbers."""
    torch.manual_seed(10)
    L = Lorentz(0.7)
    x, y = L.lift(torch.randn(9, 5, dtype=dtype) * 2), L.lift(torch.randn(7, 5, dtype=dtype) * 2)
    with torch.no_grad():
        fast = L.cdist(x, y)
    slow = L.cdist(x.clone().requires_grad_(), y)
    assert slow.requires_grad and not fast.requires_grad
    torch.testing.assert_close(fast, slow.detach(), rtol=0, atol=0)
    # The log(z + sqrt(z^2 - 1)) form of arccosh agrees with torch.acosh to within what an ulp of
    # z changes: acosh'(z) * 4 eps z, plus a few ulps of the result.
    z = torch.cat(
        [1 + torch.logspace(-10, 0, 50, dtype=torch.float64), torch.logspace(0.5, 30, 50, dtype=torch.float64)]
    )
    gap = (lm.acosh_distance(z, c=1.0) - torch.acosh(z)).abs()
    bound = 4 * eps(torch.float64) * (z / (z**2 - 1).sqrt() + torch.acosh(z))
    assert torch.all(gap <= bound)
    # float32: finite far beyond z = 2^31, the largest z between two capped points.
    assert torch.all(lm.acosh_distance(z[z < 2.0**50].float(), c=1.0).isfinite())


def test_cdist_gradcheck_including_learnable_curvature():
    torch.manual_seed(11)
    L = Lorentz(2.0, learnable=True).double()
    x = L.lift(torch.randn(4, 3, dtype=torch.float64)).detach().requires_grad_()
    y = L.lift(torch.randn(3, 3, dtype=torch.float64)).detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: L.cdist(a, b), (x, y))
    assert torch.autograd.gradcheck(lambda a, b: L.dist(a[:3], b), (x, y))
    assert torch.autograd.gradcheck(lambda a, b: L.oxy_angle(a[:3], b), (x, y))
    L.cdist(x, y).sum().backward()
    assert L.log_c.grad is not None and float(L.log_c.grad) != 0.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_clamps_act_in_each_dtype(dtype):
    """SPEC: in float32 ``1 + 1e-8 == 1``, so an epsilon that does not depend on the dtype makes the
    clamps no-ops. Ours must move values off the infinite-slope end points in both dtypes."""
    one = torch.tensor(1.0, dtype=dtype)
    gap = lm.near_one_eps(dtype)
    assert bool(one + gap > one) and bool(one - gap < one)
    assert torch.tensor(lm.tiny(dtype), dtype=dtype) > 0
    # arccosh's slope near z = 1 is cut at about 1/sqrt(2 gap), one ulp above 1 included.
    ulp = torch.finfo(dtype).eps
    z = (1 + torch.arange(0, 4, dtype=dtype) * ulp).requires_grad_()
    (slope,) = torch.autograd.grad(lm.acosh_distance(z, c=1.0).sum(), z)
    assert torch.all(slope.abs() <= 1.01 / math.sqrt(2 * gap))
    assert torch.all(lm.acosh_distance(z.detach(), c=1.0) >= 0.9 * math.sqrt(2 * gap))
    # asin's end point: the widest cone stays strictly below pi/2, by about sqrt(2 gap).
    L = Lorentz()
    inside = L.from_space(torch.full((1, 3), 1e-3, dtype=dtype))
    aperture = float(L.half_aperture(inside))
    assert aperture == pytest.approx(math.pi / 2 - math.sqrt(2 * gap), rel=1e-3 if dtype == torch.float64 else 1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_norm_of_zero_null_and_rounded_vectors(dtype):
    """``Lorentz.norm`` of a zero vector, a null vector and one made slightly time-like by
    rounding: finite, non-negative, with finite gradients."""
    L = Lorentz()
    u = torch.tensor(
        [[0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0 + 1e-6, 1.0, 0.0], [0.0, 3.0, 4.0]], dtype=dtype
    ).requires_grad_()
    norms = L.norm(u)
    (grad,) = torch.autograd.grad(norms.sum(), u)
    assert all_finite(norms, grad)
    assert torch.all(norms >= 0)
    assert float(norms[-1]) == pytest.approx(5.0)


# ------------------------------------------------------------------------- learnable curvature
@pytest.mark.parametrize("start,target", [(0.1, 1.0), (10.0, 1.0), (1.0, 1e-3), (1.0, 1e3)])
def test_learnable_curvature_stays_in_range_and_leaves_a_bound(start, target):
    """Riemannian Adam keeps ``log c`` inside ``c_range`` and a curvature on a bound still learns:
    ``torch.clamp`` in the forward pass has a zero gradient on its bounds, which froze it there."""
    manifold = Lorentz(c=1.0, learnable=True, c_range=(0.1, 10.0))
    with torch.no_grad():
        manifold.log_c.fill_(math.log(start))
    optimizer = geoopt.optim.RiemannianAdam([manifold.log_c], lr=0.05)
    for _ in range(200):
        optimizer.zero_grad()
        (manifold.c.log() - math.log(target)).pow(2).backward()
        assert manifold.log_c.grad.abs().item() > 0 or manifold.c.item() == pytest.approx(target)
        optimizer.step()
        assert 0.1 * (1 - 1e-12) <= manifold.c.item() <= 10.0 * (1 + 1e-12)
    expected = min(max(target, 0.1), 10.0)  # the target, or the bound nearest to it
    assert manifold.c.item() == pytest.approx(expected, rel=1e-2)


def test_curvature_read_from_outside_its_range_is_clamped_with_a_live_gradient():
    manifold = Lorentz(c=1.0, learnable=True, c_range=(0.5, 2.0))
    with torch.no_grad():
        manifold.log_c.fill_(math.log(8.0))  # as a loaded file may hold
    assert manifold.c.item() == pytest.approx(2.0)
    manifold.c.backward()
    assert manifold.log_c.grad.item() == pytest.approx(2.0)  # d exp(log c) / d log c, straight through
