r"""Pure functions for the Poincaré ball model of hyperbolic space.

Conventions (``docs/SPEC.md`` section 1): curvature :math:`-c` with :math:`c > 0`; points are
vectors ``x`` of the open ball :math:`|x| < 1/\sqrt{c}` (geoopt's ``PoincareBall(c)``), the origin is
``0``, and the metric is :math:`\lambda_x^2 \langle\cdot,\cdot\rangle` with
:math:`\lambda_x = 2/(1 - c|x|^2)`. The ball and the Lorentz model (``lorentz_math``) are isometric:

.. math:: p = \frac{x_s}{1 + \sqrt{c}\,x_t}, \qquad
          (x_t, x_s) = \Bigl(\frac{1 + c|p|^2}{\sqrt{c}\,(1 - c|p|^2)},\ \frac{2p}{1 - c|p|^2}\Bigr),

so distances, angles and entailment cones agree between the two (the tests check it).

Every function takes the curvature as the keyword ``c`` (a float or a 0-dim tensor) and works on
the last dimension, broadcasting over the leading ones; ``d`` is the dimension of the ball.

Numerical notes. Everything is written with :math:`1 - c|x|^2`, which loses relative precision as
points approach the boundary; :func:`max_scaled_norm` keeps :math:`\sqrt{c}|x|` a dtype-dependent
distance from 1, which caps distances to the origin at about 12.2/√c in float32 (MERU's Lorentz cap
is 11.09/√c) and 28.3/√c in float64. Distances use the :math:`\operatorname{asinh}` form, exact
for nearby points where :math:`\operatorname{arccosh}(1 + \epsilon)` is not.
"""

from __future__ import annotations

import torch

from .lorentz_math import _safe_norm, near_one_eps, tiny


def max_scaled_norm(dtype: torch.dtype) -> float:
    r"""Largest :math:`\sqrt{c}|x|` a point may have in ``dtype``: ``1 - c|x|^2`` must keep a few
    significant digits (about 5 in float32, 4 in float64 at this bound)."""
    return 1.0 - (1e-12 if dtype == torch.float64 else 1e-5)


def project(x: torch.Tensor, *, c) -> torch.Tensor:
    r"""Pull points back inside :math:`\sqrt{c}|x| \le` :func:`max_scaled_norm`. ``(..., d) -> (..., d)``"""
    norm = _safe_norm(x, keepdim=True)
    limit = max_scaled_norm(x.dtype) / c**0.5
    # Guards 1 - c|x|^2 <= 0 (outside the ball) and its loss of all precision at the boundary.
    return torch.where(norm > limit, x * (limit / norm), x)


def expmap0(v: torch.Tensor, *, c) -> torch.Tensor:
    r"""The point at distance :math:`|v|` from the origin in the direction of ``v``:
    :math:`\tanh(\sqrt{c}|v|/2)\, v / (\sqrt{c}|v|)` (geoopt's ``expmap0`` of :math:`v/2`: the
    metric at the origin is 4 times the Euclidean one). Equal to the Lorentz model's map at the
    origin followed by :func:`from_lorentz`. ``(..., d) -> (..., d)``"""
    scaled_norm = c**0.5 * _safe_norm(v, keepdim=True)
    return project(torch.tanh(0.5 * scaled_norm) / scaled_norm * v, c=c)


def logmap0(x: torch.Tensor, *, c) -> torch.Tensor:
    r"""Inverse of :func:`expmap0`: :math:`2\operatorname{artanh}(\sqrt{c}|x|)\, x/(\sqrt{c}|x|)`.
    ``(..., d) -> (..., d)``"""
    scaled_norm = c**0.5 * _safe_norm(x, keepdim=True)
    # Guards artanh(1) = inf for points projected onto the bound.
    scaled_norm = scaled_norm.clamp_max(max_scaled_norm(x.dtype))
    return 2.0 * torch.atanh(scaled_norm) / scaled_norm * x


def dist0(x: torch.Tensor, *, c, keepdim: bool = False) -> torch.Tensor:
    r""":math:`d(0, x) = 2\operatorname{artanh}(\sqrt{c}|x|)/\sqrt{c}`. ``(..., d) -> (...)``"""
    scaled_norm = c**0.5 * _safe_norm(x, keepdim=keepdim)
    # Guards artanh(1) = inf for points projected onto the bound.
    return 2.0 * torch.atanh(scaled_norm.clamp_max(max_scaled_norm(x.dtype))) / c**0.5


def _conformal_gap(x: torch.Tensor, *, c, keepdim: bool = False) -> torch.Tensor:
    r""":math:`1 - c|x|^2 = 2/\lambda_x`, kept positive. ``(..., d) -> (...)``"""
    gap = 1.0 - c * x.pow(2).sum(-1, keepdim=keepdim)
    # Guards division by a gap that rounding pushed to 0 or below for points on the bound.
    return gap.clamp_min(1.0 - max_scaled_norm(x.dtype) ** 2)


def _distance_from_chord(chord_squared: torch.Tensor, gaps: torch.Tensor, *, c) -> torch.Tensor:
    r""":math:`d = 2\operatorname{asinh}\bigl(\sqrt{c\,\kappa^2/g}\bigr)/\sqrt{c}` for the squared
    Euclidean chord :math:`\kappa^2 = |x - y|^2` and :math:`g = (1 - c|x|^2)(1 - c|y|^2)`: the
    same as :math:`\operatorname{arccosh}(1 + 2c\kappa^2/g)/\sqrt{c}`, without arccosh's infinite
    slope at 1."""
    # Guards sqrt's infinite slope at 0 (identical points) and rounding below 0.
    ratio = (c * chord_squared / gaps).clamp_min(tiny(chord_squared.dtype))
    return 2.0 * torch.asinh(ratio.sqrt()) / c**0.5


def dist(x: torch.Tensor, y: torch.Tensor, *, c, keepdim: bool = False) -> torch.Tensor:
    r"""Geodesic distance, row-wise. ``(..., d), (..., d) -> (...)``"""
    chord_squared = (x - y).pow(2).sum(-1, keepdim=keepdim)
    gaps = _conformal_gap(x, c=c, keepdim=keepdim) * _conformal_gap(y, c=c, keepdim=keepdim)
    return _distance_from_chord(chord_squared, gaps, c=c)


def pairwise_dist(x: torch.Tensor, y: torch.Tensor, *, c) -> torch.Tensor:
    r"""Geodesic distances between all rows, the chords from one matrix product,
    :math:`|x|^2 + |y|^2 - 2x\cdot y`. ``(n, d), (m, d) -> (n, m)``"""
    x_squared, y_squared = x.pow(2).sum(-1, keepdim=True), y.pow(2).sum(-1).unsqueeze(-2)
    chord_squared = x_squared + y_squared - 2.0 * (x @ y.transpose(-1, -2))
    gaps = _conformal_gap(x, c=c, keepdim=True) * _conformal_gap(y, c=c).unsqueeze(-2)
    return _distance_from_chord(chord_squared, gaps, c=c)


def half_aperture(x: torch.Tensor, *, c, min_radius: float = 0.1) -> torch.Tensor:
    r"""Half-aperture of the entailment cone at ``x`` (Ganea et al., 2018, for curvature :math:`-c`):
    :math:`\arcsin\bigl(K (1 - c|x|^2) / (\sqrt{c}|x|)\bigr)` — the Lorentz model's
    :math:`\arcsin(2K/(\sqrt{c}|x_s|))` at the same point. ``(..., d) -> (...)``"""
    ratio = min_radius * _conformal_gap(x, c=c) / (c**0.5 * _safe_norm(x))
    # Guards asin's domain inside the minimum radius and its infinite slope at 1.
    return torch.asin(ratio.clamp(max=1.0 - near_one_eps(x.dtype)))


def oxy_angle(x: torch.Tensor, y: torch.Tensor, *, c) -> torch.Tensor:
    r"""Exterior angle at ``x`` between the ray from the origin through ``x`` and the geodesic from
    ``x`` to ``y`` (Ganea et al., 2018, eq. 28, applied to :math:`\sqrt{c}x, \sqrt{c}y`):

    .. math:: \arccos\frac{\langle x, y\rangle(1 + |x|^2) - |x|^2(1 + |y|^2)}
              {|x|\,|x - y|\,\sqrt{1 + |x|^2|y|^2 - 2\langle x, y\rangle}}.

    ``(..., d), (..., d) -> (...)``"""
    x, y = c**0.5 * x, c**0.5 * y
    xy = (x * y).sum(-1)
    x_squared, y_squared = x.pow(2).sum(-1), y.pow(2).sum(-1)
    numerator = xy * (1.0 + x_squared) - x_squared * (1.0 + y_squared)
    # 1 + |x|^2|y|^2 - 2<x, y> = |x|^2 |y - x/|x|^2|^2 >= (1 - |x||y|)^2 > 0 inside the ball.
    spread = (1.0 + x_squared * y_squared - 2.0 * xy).clamp_min(tiny(x.dtype))
    denominator = _safe_norm(x) * _safe_norm(x - y) * spread.sqrt()
    eps = near_one_eps(x.dtype)
    # Guards acos's domain and its infinite slope at +-1.
    return torch.acos((numerator / denominator).clamp(-1.0 + eps, 1.0 - eps))


def from_lorentz(x: torch.Tensor, *, c) -> torch.Tensor:
    r"""Lorentz full coordinates ``(..., d+1)`` (time first) -> ball ``(..., d)``:
    :math:`x_s / (1 + \sqrt{c}\,x_t)` (the denominator is at least 2)."""
    return x[..., 1:] / (1.0 + c**0.5 * x[..., :1])


def to_lorentz(p: torch.Tensor, *, c) -> torch.Tensor:
    r"""Ball ``(..., d)`` -> Lorentz full coordinates ``(..., d+1)``:
    :math:`\bigl((1 + c|p|^2)/(\sqrt{c}(1 - c|p|^2)),\ 2p/(1 - c|p|^2)\bigr)`."""
    gap = _conformal_gap(p, c=c, keepdim=True)
    time = (2.0 - gap) / (c**0.5 * gap)
    return torch.cat([time, 2.0 * p / gap], dim=-1)
