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
    # Negating x's time column turns the Minkowski form into a plain dot product.
    x_signed = torch.cat([-x[..., :1], x[..., 1:]], dim=-1)
    return x_signed @ y.transpose(-1, -2)


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
    r""":math:`\operatorname{arccosh}(-c\langle x, y\rangle_L)/\sqrt{c}` from the scaled inner product."""
    # Guards arccosh's domain (z >= 1, rounding gives z < 1 for near-identical points) and its
    # infinite slope at z = 1 (identical points, e.g. the diagonal of a pairwise matrix).
    clamped = minus_c_inner.clamp_min(1.0 + near_one_eps(minus_c_inner.dtype))
    return torch.acosh(clamped) / c**0.5


def dist(x: torch.Tensor, y: torch.Tensor, *, c, keepdim: bool = False) -> torch.Tensor:
    r"""Geodesic distance, row-wise and broadcasting:

    .. math:: d(x, y) = \frac{2}{\sqrt{c}} \operatorname{asinh}\Big(\frac{\sqrt{c}}{2}
              \sqrt{\langle x - y, x - y\rangle_L}\Big),

    which equals :math:`\operatorname{arccosh}(-c\langle x,y\rangle_L)/\sqrt{c}` on the hyperboloid
    but keeps full relative precision for nearby points (no cancellation in ``1 - z``). The time
    difference is computed as ``(x_s - y_s)·(x_s + y_s) / (x_t + y_t)``, which is exact on the
    manifold and free of the cancellation ``x_t - y_t`` suffers far from the origin.
    ``(..., D), (..., D) -> (...)``."""
    space_diff = x[..., 1:] - y[..., 1:]
    space_sum = x[..., 1:] + y[..., 1:]
    time_diff = (space_diff * space_sum).sum(-1, keepdim=True) / (x[..., :1] + y[..., :1])
    chord_sq = space_diff.pow(2).sum(-1, keepdim=True) - time_diff.pow(2)
    # Guards sqrt at 0 (identical points) and rounding below 0: value and gradient stay finite.
    chord = chord_sq.clamp_min(tiny(x.dtype)).sqrt()
    sqrt_c = c**0.5
    result = 2.0 / sqrt_c * torch.asinh(0.5 * sqrt_c * chord)
    return result if keepdim else result.squeeze(-1)


def pairwise_dist(x: torch.Tensor, y: torch.Tensor, *, c) -> torch.Tensor:
    """All geodesic distances ``d(x_i, y_j)`` from one matrix product. ``(n, D), (m, D) -> (n, m)``."""
    return acosh_distance(-c * pairwise_inner(x, y), c=c)


def proju(x: torch.Tensor, u: torch.Tensor, *, c) -> torch.Tensor:
    r"""Project ``u`` onto the tangent space at ``x``: :math:`u + c\langle x, u\rangle_L\, x`."""
    return u + c * inner(x, u, keepdim=True) * x


def egrad2rgrad(x: torch.Tensor, grad: torch.Tensor, *, c) -> torch.Tensor:
    """Riemannian gradient: apply the inverse Minkowski metric (flip the time sign), then project."""
    flipped = torch.cat([-grad[..., :1], grad[..., 1:]], dim=-1)
    return proju(x, flipped, c=c)


def expmap(x: torch.Tensor, u: torch.Tensor, *, c) -> torch.Tensor:
    r""":math:`\exp_x(u) = \cosh(\sqrt{c}|u|_L)\,x + \frac{\sinh(\sqrt{c}|u|_L)}{\sqrt{c}|u|_L}\,u`.

    ``(..., D), (..., D) -> (..., D)``; the result is projected back onto the hyperboloid."""
    scaled_norm = c**0.5 * lorentz_norm(u, keepdim=True)
    # Guards cosh/sinh overflow for huge steps (same cap as the map at the origin).
    capped = scaled_norm.clamp_max(MAX_SQRT_C_NORM)
    moved = torch.cosh(capped) * x + torch.sinh(capped) / scaled_norm * u
    return project(moved, c=c)


def logmap(x: torch.Tensor, y: torch.Tensor, *, c) -> torch.Tensor:
    r""":math:`\log_x(y) = d(x, y)\, w/|w|_L` with :math:`w = y + c\langle x, y\rangle_L\, x`.

    ``(..., D), (..., D) -> (..., D)``."""
    direction = y + c * inner(x, y, keepdim=True) * x
    return dist(x, y, c=c, keepdim=True) * direction / lorentz_norm(direction, keepdim=True)


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
    ``(..., D), (..., D) -> (...)`` (broadcasting)."""
    eps = near_one_eps(x.dtype)
    z = c * inner(x, y)
    numerator = y[..., 0] + z * x[..., 0]
    # Guards sqrt at z^2 = 1 (y at x, or on the ray through x): keep the slope finite.
    z_term = (z.pow(2) - 1.0).clamp_min(eps).sqrt()
    denominator = _safe_norm(x[..., 1:]) * z_term
    # Guards acos's domain and its infinite slope at +-1.
    return torch.acos((numerator / denominator).clamp(-1.0 + eps, 1.0 - eps))
