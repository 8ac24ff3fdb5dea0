r"""Pure functions for Euclidean space :math:`\mathbb{R}^d` (pairwise distances and cones)."""

from __future__ import annotations

import torch

from .lorentz_math import _safe_norm, near_one_eps, tiny


def pairwise_dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r""":math:`|x_i - y_j|` from :math:`|x|^2 + |y|^2 - 2 x\cdot y`: one matrix product.

    ``(n, d), (m, d) -> (n, m)``."""
    squared = (
        x.pow(2).sum(-1, keepdim=True)
        + y.pow(2).sum(-1).unsqueeze(-2)
        - 2.0 * (x @ y.transpose(-1, -2))
    )
    # Guards rounding below 0 and sqrt's infinite slope at 0 (identical points).
    return squared.clamp_min(tiny(x.dtype)).sqrt()


def half_aperture(x: torch.Tensor, *, min_radius: float = 0.1) -> torch.Tensor:
    r"""Euclidean cone half-aperture :math:`\arcsin(K/|x|)`. ``(..., d) -> (...)``."""
    ratio = min_radius / _safe_norm(x)
    # Guards asin's domain inside the minimum radius and its infinite slope at 1.
    return torch.asin(ratio.clamp(max=1.0 - near_one_eps(x.dtype)))


def oxy_angle(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""Angle at ``x`` between ``x`` and ``y - x``:
    :math:`\arccos\frac{x\cdot(y-x)}{|x|\,|y-x|}`. ``(..., d), (..., d) -> (...)``."""
    eps = near_one_eps(x.dtype)
    offset = y - x
    cosine = (x * offset).sum(-1) / (_safe_norm(x) * _safe_norm(offset))
    # Guards acos's domain and its infinite slope at +-1.
    return torch.acos(cosine.clamp(-1.0 + eps, 1.0 - eps))
