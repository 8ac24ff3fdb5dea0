"""The fast pairwise distances (issue 12): ``Lorentz.cdist`` and ``Euclidean.cdist`` compute the
reference formulas — :func:`manifolds.lorentz_math.acosh_distance` of the scaled Minkowski product and
:func:`manifolds.euclidean_math.pairwise_dist_formula` — in place on the matrix product, with
hand-written backwards. Checked here:

1. the in-place elementwise tail equals the reference formula on the same matrix product, over the
   whole range of arguments (below 1, at the clamp, up to the largest float32 argument);
2. both paths (no gradient, gradient) give the same numbers, equal to the formulas;
3. the hand-written backwards equal autograd of the reference formulas (clamped entries included),
   are as accurate in float32, and pass ``gradcheck`` in float64, the curvature's gradient included;
4. empty and batched inputs, second derivatives (refused), results edited in place before the
   backward, cached constants first built under ``torch.inference_mode``.

Speed is not tested here (no timing assertions): ``python -m benchmarks.geometry_speed`` measures it.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from manifolds import Euclidean, Lorentz
from manifolds import euclidean_math as em
from manifolds import lorentz_math as lm

DTYPES = (torch.float32, torch.float64)
dtypes = st.sampled_from(DTYPES)
curvatures = st.one_of(st.sampled_from([0.1, 1.0, 10.0]), st.floats(0.1, 10.0))
seeds = st.integers(0, 2**31 - 1)


def eps(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps


def lorentz_points(n: int, d: int, *, c: float, dtype, seed: int, max_scaled_norm: float) -> torch.Tensor:
    """``(n, d + 1)`` points at geodesic distances up to ``max_scaled_norm / sqrt(c)`` from the
    origin: random directions, scaled norms uniform in ``[0, max_scaled_norm]``."""
    generator = torch.Generator().manual_seed(seed)
    directions = torch.nn.functional.normalize(torch.randn(n, d, generator=generator, dtype=torch.float64), dim=-1)
    norms = torch.rand(n, 1, generator=generator, dtype=torch.float64) * max_scaled_norm / math.sqrt(c)
    return lm.from_space(lm.expmap0_space(directions * norms, c=c), c=c).to(dtype)


def minkowski_product(x: torch.Tensor, y: torch.Tensor, c) -> torch.Tensor:
    """``z = -c <x_i, y_j>_L`` formed exactly as :func:`lm.pairwise_dist` forms it (same bits)."""
    left, right = lm._fold_minkowski_signs(x, y, c=c)
    return torch.mm(left, right.t())


def reference_lorentz(x: torch.Tensor, y: torch.Tensor, c) -> torch.Tensor:
    """The reference formula: :func:`lm.acosh_distance` of the product, differentiated by autograd."""
    return lm.acosh_distance(minkowski_product(x, y, c), c=c)


def duplicated(x: torch.Tensor, y: torch.Tensor, count: int) -> torch.Tensor:
    """``y`` with the first ``count`` rows of ``x`` appended: identical pairs, where the clamps act."""
    return torch.cat([y, x[:count]])


# ====================================================== 1. the in-place tail, over all arguments


def formula_tolerance(dtype, c) -> dict:
    """How far the in-place evaluation may be from ``acosh_distance``: a few roundings of the
    result, plus a few of ``w = z + sqrt(z^2 - 1)``, whose logarithm is the distance times
    ``sqrt(c)`` (an ulp of ``w`` is ``eps / sqrt(c)`` of distance, which near ``z = 1`` is many ulps
    of the small result)."""
    return dict(rtol=4 * eps(dtype), atol=4 * eps(dtype) / math.sqrt(c))


@given(dtypes, curvatures, st.integers(1, 7), seeds)
def test_arccosh_in_place_equals_reference_formula_over_wide_range(dtype, c, columns, seed):
    """``_arccosh_in_place`` gives ``acosh_distance``'s values (:func:`formula_tolerance`) and
    the roots ``sqrt(max(z, 1 + eps)^2 - 1)`` the backward divides by, for arguments from -2 through 1 (clamped)
    to 2**31 and, in float64, 2**100."""
    generator = torch.Generator().manual_seed(seed)
    top = 31.0 if dtype == torch.float32 else 100.0
    gaps = torch.cat([torch.tensor([0.0, -1e-3, -0.5, -3.0]),
                      torch.pow(2.0, torch.empty(60).uniform_(-45.0, top, generator=generator))])
    floor = lm._arccosh_floor(dtype)
    z = torch.cat([1.0 + gaps.double(), torch.tensor([floor, 1.0 + 2 * eps(dtype)])]).to(dtype)
    z = z[torch.randperm(len(z), generator=generator)][: len(z) // columns * columns].reshape(-1, columns)
    roots = torch.empty_like(z)
    distances = lm._arccosh_in_place(z.clone(), roots, scale=c**-0.5)
    torch.testing.assert_close(distances, lm.acosh_distance(z, c=c), **formula_tolerance(dtype, c))
    clamped = z.clamp_min(floor)
    assert torch.equal(roots, torch.addcmul(torch.tensor(-1.0, dtype=dtype), clamped, clamped).sqrt())
    assert torch.all(distances > 0) and torch.all(distances.isfinite())


# ============================================================ 2. both paths against the formula


@given(dtypes, curvatures, st.integers(1, 6), st.integers(1, 6), st.integers(1, 6), st.integers(0, 3), seeds)
def test_lorentz_cdist_forward_equals_reference_formula(dtype, c, n, m, d, duplicates, seed):
    """Both paths of ``Lorentz.cdist`` equal ``acosh_distance`` of the same product
    (:func:`formula_tolerance`), from the origin out to the float32 cap (and to 30/sqrt(c) in
    float64), identical pairs (clamped) included."""
    top = lm.max_sqrt_c_norm(torch.float32) if dtype == torch.float32 else 30.0
    L = Lorentz(c, c_range=(0.1, 10.0))
    x = lorentz_points(n, d, c=c, dtype=dtype, seed=seed, max_scaled_norm=top)
    y = duplicated(x, lorentz_points(m, d, c=c, dtype=dtype, seed=seed + 1, max_scaled_norm=top), duplicates)
    reference = reference_lorentz(x, y, L.c)
    with torch.no_grad():
        fast = L.cdist(x, y)
    with_grad = L.cdist(x.clone().requires_grad_(), y)
    assert with_grad.requires_grad and torch.equal(fast, with_grad.detach())
    torch.testing.assert_close(fast, reference, **formula_tolerance(dtype, c))


@given(dtypes, st.integers(1, 6), st.integers(1, 6), st.integers(1, 6), st.floats(1e-3, 1e3), seeds)
def test_euclidean_cdist_forward_equals_reference_formula(dtype, n, m, d, scale, seed):
    """``Euclidean.cdist`` equals ``pairwise_dist_formula`` up to the rounding of the three-term sum
    (summed in another order): ``|d^2 - d_ref^2| <= 8 eps (|x| + |y|)^2``; both paths equal."""
    generator = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, d, generator=generator, dtype=torch.float64) * scale).to(dtype)
    y = duplicated(x, (torch.randn(m, d, generator=generator, dtype=torch.float64) * scale).to(dtype), 2)
    E = Euclidean()
    with torch.no_grad():
        fast = E.cdist(x, y)
    with_grad = E.cdist(x, y.clone().requires_grad_())
    assert torch.equal(fast, with_grad.detach())
    reference = em.pairwise_dist_formula(x, y)
    sizes = x.double().norm(dim=-1)[:, None] + y.double().norm(dim=-1)[None, :]
    gap = (fast.double().pow(2) - reference.double().pow(2)).abs()
    assert torch.all(gap <= 8 * eps(dtype) * sizes.pow(2))


# ============================================================ 3. backward against autograd of the formula


def lorentz_gradients(distance, x, y, grad, c):
    """Gradients of ``<grad, distance(x, y, c)>`` for ``x``, ``y`` and a learnable curvature's
    ``log c``, in ``x``'s dtype."""
    L = Lorentz(c, learnable=True, c_range=(0.1, 10.0)).to(x.dtype)
    inputs = (x.clone().requires_grad_(), y.clone().requires_grad_(), L.log_c)
    return torch.autograd.grad(distance(inputs[0], inputs[1], L.c), inputs, grad)


def fast_lorentz(x, y, c):
    return lm.pairwise_dist(x, y, c=c)


@given(curvatures, st.integers(1, 5), st.integers(1, 5), st.integers(1, 4), st.integers(0, 2), seeds)
def test_lorentz_backward_equals_autograd_of_reference(c, n, m, d, duplicates, seed):
    """Float64 gradients for ``x``, ``y`` and a learnable curvature equal autograd of
    ``acosh_distance`` on the same product, clamped (identical) pairs included, where both give 0.
    (The curvature's gradient sums terms of size ``e^{2 sqrt(c) r}`` that cancel, hence radii up to
    6/sqrt(c) and a tolerance relative to the largest gradient.)"""
    x = lorentz_points(n, d, c=c, dtype=torch.float64, seed=seed, max_scaled_norm=6.0)
    y = duplicated(x, lorentz_points(m, d, c=c, dtype=torch.float64, seed=seed + 1, max_scaled_norm=6.0),
                   duplicates)
    grad = torch.randn(x.shape[0], y.shape[0], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    fast = lorentz_gradients(fast_lorentz, x, y, grad, c)
    reference = lorentz_gradients(reference_lorentz, x, y, grad, c)
    for ours, theirs in zip(fast, reference):
        scale = float(theirs.abs().max().clamp_min(1.0))
        torch.testing.assert_close(ours, theirs, rtol=0.0, atol=1e-9 * scale)


def curvature_gradient_terms(x: torch.Tensor, y: torch.Tensor, grad: torch.Tensor, c: float) -> float:
    r"""Size of the terms that cancel in the gradient for ``log c`` (float64):
    :math:`\sum_{ij} |g_{ij}|\,(|a_i|\cdot|b_j|)/(\sqrt c\,\sqrt{z_{ij}^2 - 1})`, the Minkowski products
    summed with absolute values (each of size :math:`e^{\sqrt c (r_x + r_y)}`, where ``z`` is their
    difference)."""
    left, right = lm._fold_minkowski_signs(x.double(), y.double(), c=c)
    z = left @ right.t()
    magnitudes = left.abs() @ right.abs().t()
    return float((grad.double().abs() * magnitudes / (z.pow(2) - 1).sqrt()).sum() / math.sqrt(c))


@given(curvatures, st.integers(1, 5), st.integers(1, 5), st.integers(1, 4), seeds)
def test_lorentz_float32_backward_as_accurate_as_autograd(c, n, m, d, seed):
    """In float32 the hand-written backward is as accurate as autograd of the formula, against the
    float64 gradient of the same inputs (pairs apart, so that both dtypes take the same side of the
    clamp): for ``x`` and ``y``, at most twice autograd's error plus a few ulps; for ``log c``, whose
    gradient is a difference of Minkowski products (both computations cancel), within a few ulps of
    the cancelling terms per coordinate."""
    x = lorentz_points(n, d, c=c, dtype=torch.float32, seed=seed, max_scaled_norm=6.0)
    y = lorentz_points(m, d, c=c, dtype=torch.float32, seed=seed + 1, max_scaled_norm=6.0)
    assume(float(minkowski_product(x.double(), y.double(), c).min()) > 1.01)
    grad = torch.randn(n, m, generator=torch.Generator().manual_seed(seed))
    truth = lorentz_gradients(reference_lorentz, x.double(), y.double(), grad.double(), c)
    fast = lorentz_gradients(fast_lorentz, x, y, grad, c)
    reference = lorentz_gradients(reference_lorentz, x, y, grad, c)
    for ours, theirs, exact in list(zip(fast, reference, truth))[:2]:
        ours_error = float((ours.double() - exact).abs().max())
        reference_error = float((theirs.double() - exact).abs().max())
        assert ours_error <= 2 * reference_error + 16 * eps(torch.float32) * float(exact.abs().max())
    curvature_bound = 8 * (d + 1) * eps(torch.float32) * curvature_gradient_terms(x, y, grad, c)
    for gradient in (fast[2], reference[2]):
        assert abs(float(gradient) - float(truth[2])) <= curvature_bound


@given(st.integers(1, 5), st.integers(1, 5), st.integers(1, 4), st.integers(0, 2), seeds)
def test_euclidean_backward_equals_autograd_of_reference(n, m, d, duplicates, seed):
    """Float64 gradients of ``Euclidean.cdist`` equal autograd of ``pairwise_dist_formula``;
    identical pairs (small integer coordinates, so that both sums are exactly 0 and both clamp)
    contribute nothing to either. Tolerance: each pair's term ``g (x_i - y_j)/d_ij`` is known to
    ``eps (|x_i| + |y_j|)^2 / d_ij^2`` relative (both sides round ``|x|^2 + |y|^2 - 2 x.y``, in
    different orders), and summing the terms as matrix products adds ``eps (|x_i| + |y_j|)/d_ij``."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randint(-4, 5, (n, d), generator=generator).double()
    y = duplicated(x, torch.randn(m, d, generator=generator, dtype=torch.float64) * 3, duplicates)
    grad = torch.randn(x.shape[0], y.shape[0], generator=generator, dtype=torch.float64)

    def gradients(distance):
        inputs = (x.clone().requires_grad_(), y.clone().requires_grad_())
        return torch.autograd.grad(distance(*inputs), inputs, grad)

    sizes = x.norm(dim=-1)[:, None] + y.norm(dim=-1)[None, :]
    distances = torch.cdist(x, y)
    ratio = torch.where(distances > 0, sizes / distances, 0.0)  # identical pairs: clamped in both
    per_pair = 64 * eps(torch.float64) * grad.abs() * (ratio.pow(2) + ratio)
    tolerances = (per_pair.sum(1, keepdim=True), per_pair.sum(0).unsqueeze(1))
    for ours, theirs, tolerance in zip(gradients(em.pairwise_dist), gradients(em.pairwise_dist_formula), tolerances):
        assert torch.all((ours - theirs).abs() <= tolerance + 1e-300), (ours - theirs, tolerance)


@given(curvatures, st.integers(1, 4), st.integers(1, 4), st.integers(1, 3), seeds)
def test_gradcheck_float64(c, n, m, d, seed):
    """``gradcheck`` (finite differences, float64) of both hand-written backwards, with the Lorentz
    curvature as an input, on pairs far enough apart that no clamp acts within the step."""
    x = lorentz_points(n, d, c=c, dtype=torch.float64, seed=seed, max_scaled_norm=4.0)
    y = lorentz_points(m, d, c=c, dtype=torch.float64, seed=seed + 1, max_scaled_norm=4.0)
    assume(float(minkowski_product(x, y, c).min()) > 1.0 + 1e-3)
    curvature = torch.tensor(c, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, k: lm.pairwise_dist(a, b, c=k),
                                    (x.requires_grad_(), y.requires_grad_(), curvature))
    assume(float(torch.cdist(x.detach(), y.detach()).min()) > 1e-3)
    assert torch.autograd.gradcheck(em.pairwise_dist, (x, y))


# ================================================================================= 4. edge inputs


@pytest.mark.parametrize("geometry", [Lorentz(0.5), Euclidean()], ids=["lorentz", "euclidean"])
@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (0, 0)])
def test_empty_inputs(geometry, shape):
    """No rows on either side: an empty matrix, and empty (zero) gradients."""
    n, m = shape
    x = geometry.from_space(torch.randn(n, 2)).requires_grad_()
    y = geometry.from_space(torch.randn(m, 2)).requires_grad_()
    distances = geometry.cdist(x, y)
    assert distances.shape == (n, m)
    grad_x, grad_y = torch.autograd.grad(distances.sum(), (x, y), allow_unused=True)
    for grad, points in ((grad_x, x), (grad_y, y)):
        assert grad is None or (grad.shape == points.shape and not grad.abs().sum())


@pytest.mark.parametrize("geometry", [Lorentz(0.5), Euclidean()], ids=["lorentz", "euclidean"])
def test_batched_inputs_take_the_formula(geometry):
    """Inputs with a batch dimension give, batch by batch, the 2-d results."""
    torch.manual_seed(3)
    x, y = geometry.from_space(torch.randn(2, 4, 3)), geometry.from_space(torch.randn(2, 5, 3))
    batched = geometry.cdist(x, y)
    assert batched.shape == (2, 4, 5)
    for b in range(2):
        torch.testing.assert_close(batched[b], geometry.cdist(x[b], y[b]), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("geometry", [Lorentz(0.5), Euclidean()], ids=["lorentz", "euclidean"])
def test_second_derivatives_are_refused(geometry):
    """The hand-written backwards are not themselves differentiable: the gradient comes back outside
    the graph, so differentiating it again fails loudly instead of giving a silent zero."""
    torch.manual_seed(4)
    x = geometry.from_space(torch.randn(3, 2, dtype=torch.float64)).requires_grad_()
    y = geometry.from_space(torch.randn(4, 2, dtype=torch.float64))
    (grad,) = torch.autograd.grad(geometry.cdist(x, y).sum(), x, create_graph=True)
    assert not grad.requires_grad
    with pytest.raises(RuntimeError, match="does not require grad"):
        torch.autograd.grad(grad.sum(), x)


@pytest.mark.parametrize("learnable", [False, True])
def test_distances_may_be_edited_in_place_before_backward(learnable):
    """As with the formula, a caller may zero the diagonal of ``Lorentz.cdist`` in place and still
    backpropagate, the curvature learned or not; the gradients are those of the edited sum."""
    torch.manual_seed(5)
    L = Lorentz(0.5, learnable=learnable)
    x = L.from_space(torch.randn(4, 3, dtype=torch.float64)).detach().requires_grad_()
    distances = L.cdist(x, x * 1.5)
    distances.fill_diagonal_(0.0)
    distances.sum().backward()
    reference_x = x.detach().clone().requires_grad_()
    reference = reference_lorentz(reference_x, reference_x * 1.5, L.c)
    (reference * (1 - torch.eye(4, dtype=torch.float64))).sum().backward()
    torch.testing.assert_close(x.grad, reference_x.grad, rtol=1e-9, atol=1e-12)


def test_cached_constants_made_under_inference_mode_serve_autograd_later():
    """The cached sign vectors and scalars are normal tensors even when first built under
    ``torch.inference_mode`` (an inference tensor saved for a backward would raise)."""
    lm._cached_signs.cache_clear()
    lm._cached_scalar.cache_clear()
    L = Lorentz(0.5, learnable=True)
    x = L.from_space(torch.randn(3, 4, dtype=torch.float64)).detach()
    with torch.inference_mode():
        first = L.cdist(x, x * 1.2)
    moving = x.clone().requires_grad_()
    distances = L.cdist(moving, x * 1.2)
    distances.sum().backward()
    torch.testing.assert_close(distances.detach(), first)
    assert moving.grad is not None and L.log_c.grad is not None
