r"""Pure functions for the Lorentz (hyperboloid) model of hyperbolic space.

Conventions (``shared/SPEC.md`` section 1): curvature is :math:`-c` with :math:`c > 0`; a point is
stored in *full coordinates* ``x = (x_t, x_s)`` with the time coordinate first and

.. math:: \langle x, y \rangle_L = x_s \cdot y_s - x_t y_t, \qquad \langle x, x \rangle_L = -1/c .

The origin is ``O = (1/sqrt(c), 0, ..., 0)``. geoopt's ``Lorentz(k)`` is the same model with
``k = 1/c``. MERU stores only the space part ``x_s``; :func:`from_space` / :func:`to_space` convert.

Every function takes the curvature as the keyword ``c`` (a float or a 0-dim tensor) and works on
the last dimension, broadcasting over the leading ones. Shapes in the docstrings use ``D = d + 1``
for full coordinates and ``d`` for space components.

Numerical notes. In float32, ``1 + 1e-8 == 1``: every clamp below takes its epsilon from
:func:`near_one_eps` or :func:`tiny` for the dtype at hand, so that it actually does something.
Exponentials are capped at :data:`MAX_SQRT_C_NORM` (MERU's ``asinh(2**15)``), so no coordinate
exceeds ``2**15 / sqrt(c)`` and squares and products of coordinates stay finite in float32.
"""

from __future__ import annotations

import math

import torch

# MERU's cap on sqrt(c)·|v| in the exponential map: sinh of it is 2**15, so coordinates and their
# pairwise products (~2**30) stay far from the float32 overflow at ~3.4e38.
MAX_SQRT_C_NORM = math.asinh(2.0**15)


def near_one_eps(dtype: torch.dtype) -> float:
    """Gap from 1 that is representable in ``dtype``: used to keep acosh/asin/acos off their
    infinite-slope end points (``1 + 1e-8 == 1`` in float32, so one value cannot serve all)."""
    return 1e-12 if dtype == torch.float64 else 1e-6


def tiny(dtype: torch.dtype) -> float:
    """Smallest squared norm treated as non-zero: keeps ``sqrt`` and divisions by norms finite
    (and their gradients finite) for zero vectors, without touching any representable norm of
    interest."""
    return 1e-100 if dtype == torch.float64 else 1e-30


def _safe_norm(x: torch.Tensor, *, keepdim: bool = False) -> torch.Tensor:
    """Euclidean norm over the last dimension whose gradient is finite (zero) at ``x = 0``."""
    squared = x.pow(2).sum(dim=-1, keepdim=keepdim)
    # Guards sqrt'(0) = inf: below `tiny` the norm is frozen and its gradient is zero.
    return squared.clamp_min(tiny(x.dtype)).sqrt()


def time_component(x_space: torch.Tensor, *, c) -> torch.Tensor:
    r"""Time coordinate of the point with space part ``x_space``: :math:`\sqrt{1/c + |x_s|^2}`.

    ``(..., d) -> (..., 1)``."""
    return (1.0 / c + x_space.pow(2).sum(dim=-1, keepdim=True)).sqrt()


def from_space(x_space: torch.Tensor, *, c) -> torch.Tensor:
    """MERU's space components ``(..., d)`` -> full coordinates ``(..., d + 1)``, time first."""
    return torch.cat([time_component(x_space, c=c), x_space], dim=-1)


def to_space(x: torch.Tensor) -> torch.Tensor:
    """Full coordinates ``(..., d + 1)`` -> space components ``(..., d)``."""
    return x[..., 1:]


def project(x: torch.Tensor, *, c) -> torch.Tensor:
    """Put ``x`` back on the hyperboloid by recomputing its time coordinate from its space part.

    ``(..., D) -> (..., D)``."""
    return from_space(x[..., 1:], c=c)


def origin(*size: int, c, dtype=None, device=None) -> torch.Tensor:
    """The origin ``(1/sqrt(c), 0, ..., 0)`` broadcast to ``size`` (last entry is ``D``)."""
    point = torch.zeros(*size, dtype=dtype, device=device)
    point[..., 0] = 1.0 / math.sqrt(float(c))
    return point


def inner(u: torch.Tensor, v: torch.Tensor, *, keepdim: bool = False) -> torch.Tensor:
    r"""Lorentz inner product :math:`u_s \cdot v_s - u_t v_t`, row-wise.

    ``(..., D), (..., D) -> (...)`` (``(..., 1)`` with ``keepdim``)."""
    product = u * v
    result = product[..., 1:].sum(dim=-1, keepdim=True) - product[..., :1]
    return result if keepdim else result.squeeze(-1)


def pairwise_inner(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""All Lorentz inner products :math:`\langle x_i, y_j \rangle_L` as one matrix product.

    ``(n, D), (m, D) -> (n, m)``."""
    # Negating x's time column turns the Minkowski form into a plain dot product (one broadcast
    # multiply over x, cheaper than concatenating a negated column).
    return (x * _minkowski_signs(x, scale=1.0)) @ y.transpose(-1, -2)


def _minkowski_signs(x: torch.Tensor, *, scale) -> torch.Tensor:
    """``scale * (-1, 1, ..., 1)`` of length ``D``, in ``x``'s dtype and device: multiplying a row by
    it and taking plain dot products gives ``scale * <x, y>_L``."""
    signs = torch.ones(x.shape[-1], dtype=x.dtype, device=x.device)
    signs[0] = -1.0
    return signs * scale


def lorentz_norm(u: torch.Tensor, *, keepdim: bool = False) -> torch.Tensor:
    r"""Norm :math:`\sqrt{\langle u, u \rangle_L}` of a tangent (space-like) vector.

    ``(..., D) -> (...)``."""
    squared = inner(u, u, keepdim=keepdim)
    # Tangent vectors are space-like (<u,u>_L >= 0); rounding can make it slightly negative, and
    # sqrt'(0) is infinite: clamp at `tiny` so both the value and the gradient stay finite.
    return squared.clamp_min(tiny(u.dtype)).sqrt()


def expmap0_space(v: torch.Tensor, *, c) -> torch.Tensor:
    r"""MERU's exponential map at the origin on space components:

    .. math:: x_s = \frac{\sinh(\sqrt{c}\,|v|)}{\sqrt{c}\,|v|}\, v .

    ``(..., d) -> (..., d)``."""
    sqrt_c = c**0.5
    scaled_norm = sqrt_c * _safe_norm(v, keepdim=True)
    # Guards sinh overflow (and fp16/fp32 overflow of later squares): MERU's cap asinh(2**15).
    capped = scaled_norm.clamp_max(MAX_SQRT_C_NORM)
    return torch.sinh(capped) * v / scaled_norm


def logmap0_space(x_space: torch.Tensor, *, c) -> torch.Tensor:
    r"""MERU's logarithmic map at the origin on space components:

    .. math:: v = \frac{\operatorname{asinh}(\sqrt{c}\,|x_s|)}{\sqrt{c}\,|x_s|}\, x_s ,

    the same value as MERU's ``arccosh(sqrt(1 + c|x_s|^2))`` but with a finite slope at the origin.
    ``(..., d) -> (..., d)``."""
    scaled_norm = c**0.5 * _safe_norm(x_space, keepdim=True)
    return torch.asinh(scaled_norm) * x_space / scaled_norm


def expmap0(u: torch.Tensor, *, c) -> torch.Tensor:
    """Exponential map at the origin of a tangent vector in full coordinates.

    The tangent space at the origin is ``{u : u_t = 0}``, so the time component of ``u`` is
    ignored (this projects ``u`` onto that tangent space first). ``(..., D) -> (..., D)``."""
    return from_space(expmap0_space(u[..., 1:], c=c), c=c)


def logmap0(y: torch.Tensor, *, c) -> torch.Tensor:
    """Logarithmic map at the origin: a tangent vector ``(0, v)``. ``(..., D) -> (..., D)``."""
    v = logmap0_space(y[..., 1:], c=c)
    return torch.cat([torch.zeros_like(y[..., :1]), v], dim=-1)


def dist0(x: torch.Tensor, *, c, keepdim: bool = False) -> torch.Tensor:
    r"""Geodesic distance to the origin, :math:`\operatorname{asinh}(\sqrt{c}|x_s|)/\sqrt{c}`.

    (Equal to MERU's ``arccosh(sqrt(c) x_t)/sqrt(c)``, without arccosh's infinite slope at 1.)
    ``(..., D) -> (...)``."""
    sqrt_c = c**0.5
    return torch.asinh(sqrt_c * _safe_norm(x[..., 1:], keepdim=keepdim)) / sqrt_c


def acosh_distance(minus_c_inner: torch.Tensor, *, c) -> torch.Tensor:
    r""":math:`\operatorname{arccosh}(z)/\sqrt{c}` from the scaled inner product :math:`z = -c\langle x, y\rangle_L`.

    Evaluated as :math:`\log\big(z + \sqrt{z^2 - 1}\big)`, several times faster than
    ``torch.acosh`` (not vectorised on CPU). Rounding :math:`z^2 - 1` costs an error equal to that of
    perturbing :math:`z` by an ulp, which any :math:`z` coming out of a matrix product carries
    anyway. :math:`z^2` stays finite up to :math:`z \approx 1.8\cdot 10^{19}` in float32: points
    from :func:`expmap0_space` (capped) are at most :math:`z \approx 2^{31}` apart.
    ``(...) -> (...)``."""
    # Guards arccosh's domain (z >= 1, rounding gives z < 1 for near-identical points) and its
    # infinite slope at z = 1 (identical points, e.g. the diagonal of a pairwise matrix).
    clamped = minus_c_inner.clamp_min(1.0 + near_one_eps(minus_c_inner.dtype))
    root = torch.addcmul(_minus_one(clamped), clamped, clamped).sqrt()
    return torch.log(clamped + root) / c**0.5


def _acosh_distance_(minus_c_inner: torch.Tensor, *, c) -> torch.Tensor:
    """:func:`acosh_distance` computed in place in its argument (a temporary, no autograd):
    the same operations, so the same numbers."""
    # Same guard as in acosh_distance: arccosh's domain and its infinite slope at 1.
    clamped = minus_c_inner.clamp_(min=1.0 + near_one_eps(minus_c_inner.dtype))
    root = torch.addcmul(_minus_one(clamped), clamped, clamped).sqrt_()
    return root.add_(clamped).log_().div_(c**0.5)


def _minus_one(like: torch.Tensor) -> torch.Tensor:
    """``-1`` as a 0-dim tensor on ``like``'s device: ``addcmul(-1, z, z)`` computes ``z² - 1`` in one
    pass, and CUDA's ``addcmul`` refuses a CPU scalar tensor as its first argument."""
    return like.new_full((), -1.0)


def chord_sq(x: torch.Tensor, y: torch.Tensor, *, c) -> torch.Tensor:
    r"""Squared Lorentz norm of the chord, :math:`\langle x - y, x - y\rangle_L \ge 0`, accurately.

    With the Poincaré-ball denominators :math:`a = 1 + \sqrt{c}\,x_t`, :math:`b = 1 + \sqrt{c}\,y_t`
    (the ball point of ``x`` is :math:`\sqrt{c}\,x_s / a` and :math:`1 - |p|^2 = 2/a`), the
    Poincaré distance formula gives

    .. math:: \langle x - y, x - y\rangle_L = a\,b\,\big|x_s/a - y_s/b\big|^2 ,

    a squared Euclidean norm: no difference of large squares (``|x_s - y_s|^2 - (x_t - y_t)^2``
    cancels like :math:`e^{\sqrt{c}(r_x + r_y)}` far from the origin), and full relative precision
    for nearby points. ``(..., D), (..., D) -> (..., 1)``; clamped at :func:`tiny`."""
    sqrt_c = c**0.5
    a = 1.0 + sqrt_c * x[..., :1]
    b = 1.0 + sqrt_c * y[..., :1]
    squared = (a * b) * (x[..., 1:] / a - y[..., 1:] / b).pow(2).sum(-1, keepdim=True)
    # Guards sqrt at 0 (identical points): the value and the gradient stay finite.
    return squared.clamp_min(tiny(x.dtype))


def dist(x: torch.Tensor, y: torch.Tensor, *, c, keepdim: bool = False) -> torch.Tensor:
    r"""Geodesic distance, row-wise and broadcasting:

    .. math:: d(x, y) = \frac{2}{\sqrt{c}} \operatorname{asinh}\Big(\frac{\sqrt{c}}{2}
              \sqrt{\langle x - y, x - y\rangle_L}\Big),

    which equals :math:`\operatorname{arccosh}(-c\langle x,y\rangle_L)/\sqrt{c}` on the hyperboloid
    but keeps full relative precision for nearby points (no cancellation in ``1 - z``); the chord
    comes from :func:`chord_sq`. ``(..., D), (..., D) -> (...)``."""
    sqrt_c = c**0.5
    result = 2.0 / sqrt_c * torch.asinh(0.5 * sqrt_c * chord_sq(x, y, c=c).sqrt())
    return result if keepdim else result.squeeze(-1)


def pairwise_dist(x: torch.Tensor, y: torch.Tensor, *, c) -> torch.Tensor:
    r"""All geodesic distances :math:`\operatorname{arccosh}(-c\langle x_i, y_j\rangle_L)/\sqrt{c}`
    (MERU's pairwise form) from one matrix product. ``(n, D), (m, D) -> (n, m)``.

    ``-c`` and the Minkowski signs are folded into ``x`` before the product (an ``(n, D)`` pass
    instead of an ``(n, m)`` one). When nothing needs a gradient, the elementwise tail runs in place
    on the product; otherwise it is the differentiable :func:`acosh_distance`.

    Precision: for nearly coincident points far from the origin, :math:`z - 1` is swamped by the
    rounding of :math:`c\,x_t y_t` (about :math:`D\epsilon\,e^{\sqrt{c}(r_x + r_y)}`), so small
    distances come out as about the square root of that; :func:`dist` is accurate there."""
    minus_c_inner = (x * _minkowski_signs(x, scale=-c)) @ y.transpose(-1, -2)
    needs_grad = torch.is_grad_enabled() and (
        minus_c_inner.requires_grad or (isinstance(c, torch.Tensor) and c.requires_grad)
    )
    if needs_grad:
        return acosh_distance(minus_c_inner, c=c)
    return _acosh_distance_(minus_c_inner, c=c)


def proju(x: torch.Tensor, u: torch.Tensor, *, c) -> torch.Tensor:
    r"""Project ``u`` onto the tangent space at ``x``: :math:`u + c\langle x, u\rangle_L\, x`."""
    return u + c * inner(x, u, keepdim=True) * x


def egrad2rgrad(x: torch.Tensor, grad: torch.Tensor, *, c) -> torch.Tensor:
    """Riemannian gradient: apply the inverse Minkowski metric (flip the time sign), then project."""
    flipped = torch.cat([-grad[..., :1], grad[..., 1:]], dim=-1)
    return proju(x, flipped, c=c)


def _tangent_norm_space(x: torch.Tensor, u_space: torch.Tensor, *, c) -> torch.Tensor:
    """:func:`tangent_norm` from the space part ``u_space`` ``(..., d)``; returns ``(..., 1)``."""
    x_space = x[..., 1:]
    x_unit = x_space / _safe_norm(x_space, keepdim=True)
    along = (u_space * x_unit).sum(-1, keepdim=True)
    across = u_space - along * x_unit
    squared = across.pow(2).sum(-1, keepdim=True) + along.pow(2) / (c * x[..., :1].pow(2))
    # Guards sqrt'(0) = inf for a zero tangent vector.
    return squared.clamp_min(tiny(u_space.dtype)).sqrt()


def tangent_norm(x: torch.Tensor, u: torch.Tensor, *, c, keepdim: bool = False) -> torch.Tensor:
    r"""Lorentz norm of the tangent vector at ``x`` whose space part is ``u_s`` (``u``'s time
    coordinate is not read: it is the one that makes ``u`` tangent, :math:`x_s\cdot u_s / x_t`).

    Split :math:`u_s = \alpha\,\hat x_s + u_\perp` along :math:`\hat x_s = x_s/|x_s|`; then

    .. math:: |u|_L^2 = |u_\perp|^2 + \frac{\alpha^2}{c\,x_t^2},

    a sum of non-negative terms. The textbook :math:`|u_s|^2 - u_t^2` cancels catastrophically far
    from the origin (both terms grow like :math:`e^{2\sqrt{c}\,d(O, x)}`), which in float32 turns
    into garbage or NaN a few units from the origin. ``(..., D), (..., D) -> (...)``."""
    result = _tangent_norm_space(x, u[..., 1:], c=c)
    return result if keepdim else result.squeeze(-1)


def expmap(x: torch.Tensor, u: torch.Tensor, *, c) -> torch.Tensor:
    r""":math:`\exp_x(u) = \cosh(\sqrt{c}|u|_L)\,x + \frac{\sinh(\sqrt{c}|u|_L)}{\sqrt{c}|u|_L}\,u`.

    ``u`` is read through its space part (its time coordinate is taken as the one that makes it
    tangent at ``x``, see :func:`tangent_norm`); the result's time coordinate is recomputed from its
    space part, so it lies on the hyperboloid. Steps longer than ``MAX_SQRT_C_NORM / sqrt(c)`` are
    shortened to that length, as in MERU's map at the origin, so ``expmap`` at the origin equals
    :func:`expmap0`. ``(..., D), (..., D) -> (..., D)``."""
    scaled_norm = c**0.5 * tangent_norm(x, u, c=c, keepdim=True)
    # Guards cosh/sinh overflow for huge steps (same cap as the map at the origin).
    capped = scaled_norm.clamp_max(MAX_SQRT_C_NORM)
    moved = torch.cosh(capped) * x[..., 1:] + torch.sinh(capped) / scaled_norm * u[..., 1:]
    return from_space(moved, c=c)


def logmap(x: torch.Tensor, y: torch.Tensor, *, c) -> torch.Tensor:
    r""":math:`\log_x(y) = d(x, y)\, w/|w|_L` with :math:`w = y + c\langle x, y\rangle_L\, x`.

    On the hyperboloid :math:`c\langle x, y\rangle_L = -1 - \tfrac{c}{2}\kappa^2` with the chord
    :math:`\kappa^2 = \langle x-y, x-y\rangle_L` (:func:`chord_sq`), so
    :math:`w = (y - x) - \tfrac{c}{2}\kappa^2 x`, and with :math:`s = \sqrt{c}\,\kappa/2`,
    :math:`d = 2\operatorname{asinh}(s)/\sqrt{c}` and :math:`|w|_L = 2 s\sqrt{1+s^2}/\sqrt{c}`:

    .. math:: \log_x(y) = \frac{\operatorname{asinh}(s)}{s\sqrt{1 + s^2}}\, w .

    No norm of ``w`` is computed numerically (it cancels catastrophically far from the origin) and
    nothing is divided by a small distance (nearby points give a factor near 1). Only the space part
    is computed this way; the time coordinate is the one that makes the result tangent at ``x``,
    :math:`x_s\cdot v_s / x_t` (a difference of rounded time coordinates would leave a non-tangent
    residue of one ulp of :math:`x_t`). ``(..., D), (..., D) -> (..., D)``."""
    chord_squared = chord_sq(x, y, c=c)
    x_space = x[..., 1:]
    direction = (y[..., 1:] - x_space) - 0.5 * c * chord_squared * x_space
    half_scaled_chord = 0.5 * c**0.5 * chord_squared.sqrt()
    factor = torch.asinh(half_scaled_chord) / (
        half_scaled_chord * (1.0 + half_scaled_chord.pow(2)).sqrt()
    )
    v_space = factor * direction
    v_time = (x_space * v_space).sum(-1, keepdim=True) / x[..., :1]
    return torch.cat([v_time, v_space], dim=-1)


def transp(x: torch.Tensor, y: torch.Tensor, v: torch.Tensor, *, c) -> torch.Tensor:
    r"""Parallel transport of ``v`` from ``x`` to ``y`` along the geodesic:

    .. math:: v + \frac{c\langle y, v\rangle_L}{1 - c\langle x, y\rangle_L}\,(x + y).

    The denominator is at least 2 on the hyperboloid, so no clamp is needed."""
    coefficient = c * inner(y, v, keepdim=True) / (1.0 - c * inner(x, y, keepdim=True))
    return v + coefficient * (x + y)


def half_aperture(x: torch.Tensor, *, c, min_radius: float = 0.1) -> torch.Tensor:
    r"""Half-aperture of the entailment cone at ``x`` (MERU):
    :math:`\arcsin\big(2K / (\sqrt{c}\,|x_s|)\big)` with ``K = min_radius``.

    ``(..., D) -> (...)``."""
    eps = near_one_eps(x.dtype)
    ratio = 2.0 * min_radius / (c**0.5 * _safe_norm(x[..., 1:]))
    # Guards asin's domain: points within the minimum radius (ratio > 1) get the widest cone,
    # and asin's infinite slope at 1.
    return torch.asin(ratio.clamp(max=1.0 - eps))


def oxy_angle(x: torch.Tensor, y: torch.Tensor, *, c) -> torch.Tensor:
    r"""Exterior angle at ``x`` of the triangle origin–x–y (MERU). With :math:`z = c\langle x, y\rangle_L`,

    .. math:: \operatorname{ext}(x, y) = \arccos\frac{y_t + z\,x_t}{|x_s|\sqrt{z^2 - 1}} ,

    ``y`` lies in the cone of ``x`` when this is at most :func:`half_aperture` of ``x``.

    Evaluated, equivalently, as the angle between two unit tangent vectors at ``x``: the outward
    radial direction :math:`\hat a = \sqrt{c}\,(|x_s|,\; x_t\,x_s/|x_s|)` and the direction
    :math:`\hat b = w/|w|_L` of :func:`logmap` towards ``y``, by the half-angle form

    .. math:: \operatorname{ext}(x, y) = 2\operatorname{atan2}\big(|\hat a - \hat b|_L,\;
              |\hat a + \hat b|_L\big)

    with both norms from :func:`tangent_norm` (no cancellation). The arccos form loses
    :math:`\sqrt{\epsilon}\,e^{\sqrt{c}\,r}`-sized errors near 0 and pi: in float32 a point on the
    cone's own axis read angles of 0.01–0.3 rad, larger than the aperture there. Degenerate cases
    agree with MERU's clamped form: ``y = x`` or ``x`` at the origin give pi/2.
    ``(..., D), (..., D) -> (...)`` (broadcasting)."""
    sqrt_c = c**0.5
    x_space = x[..., 1:]
    outward = sqrt_c * x[..., :1] * (x_space / _safe_norm(x_space, keepdim=True))
    chord_squared = chord_sq(x, y, c=c)
    toward = (y[..., 1:] - x_space) - 0.5 * c * chord_squared * x_space
    half_scaled_chord = 0.5 * sqrt_c * chord_squared.sqrt()
    toward_norm = 2.0 * half_scaled_chord * (1.0 + half_scaled_chord.pow(2)).sqrt() / sqrt_c
    toward = toward / toward_norm
    outward, toward = torch.broadcast_tensors(outward, toward)
    x = x.expand(*outward.shape[:-1], x.shape[-1])
    difference = _tangent_norm_space(x, outward - toward, c=c)
    total = _tangent_norm_space(x, outward + toward, c=c)
    return (2.0 * torch.atan2(difference, total)).squeeze(-1)
