r"""Pure functions for Euclidean space :math:`\mathbb{R}^d` (pairwise distances and cones)."""

from __future__ import annotations

import torch

from .lorentz_math import _needs_grad, _safe_norm, near_one_eps, tiny


def pairwise_dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r""":math:`|x_i - y_j| = \sqrt{\max(|x_i|^2 + |y_j|^2 - 2 x_i\cdot y_j,\ \tau)}` (``tau`` is
    :func:`~manifolds.lorentz_math.tiny`) from one matrix product. ``(n, d), (m, d) -> (n, m)``.

    The product accumulates in place into :math:`|x_i|^2 + |y_j|^2` (one ``addmm_``); the clamp and
    the square root run in place on it (:func:`_squared_distances`). When a gradient is needed the
    backward is one elementwise pass and one matrix product per input (:class:`_PairwiseEuclidean`).
    Inputs with batch dimensions take :func:`pairwise_dist_formula`."""
    if x.dim() != 2 or y.dim() != 2:
        return pairwise_dist_formula(x, y)
    if _needs_grad(x, y):
        return _PairwiseEuclidean.apply(x, y)
    return _sqrt_in_place(_squared_distances(x, y))


def pairwise_dist_formula(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r""":func:`pairwise_dist` as one autograd expression, broadcasting over batch dimensions:
    ``(..., n, d), (..., m, d) -> (..., n, m)``. The reference of the fast path."""
    squared = (
        x.pow(2).sum(-1, keepdim=True)
        + y.pow(2).sum(-1).unsqueeze(-2)
        - 2.0 * (x @ y.transpose(-1, -2))
    )
    # Guards rounding below 0 and sqrt's infinite slope at 0 (identical points).
    return squared.clamp_min(tiny(x.dtype)).sqrt()


def _squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r""":math:`|x_i|^2 + |y_j|^2 - 2 x_i\cdot y_j`, ``(n, d), (m, d) -> (n, m)``: one pass writes
    :math:`|x_i|^2 + |y_j|^2` and ``addmm_`` accumulates :math:`-2 x_i\cdot y_j` into it in place
    (an out-of-place ``addmm`` would first copy its input into the result: one more pass over
    ``(n, m)``, about 3% of the product's time at 512x512x512 on the CPU). The squared norms are the
    sums of squares of :func:`pairwise_dist_formula` (``vecdot(x, x)``: the same numbers in one call;
    ``vector_norm`` squared would be faster but inexact for exact inputs, so identical points could
    miss the clamp)."""
    x_squared, y_squared = torch.linalg.vecdot(x, x), torch.linalg.vecdot(y, y)
    return torch.add(x_squared.unsqueeze(1), y_squared).addmm_(x, y.t(), alpha=-2.0)


def _sqrt_in_place(squared: torch.Tensor) -> torch.Tensor:
    """``sqrt(max(squared, tiny))`` in place, ``(n, m) -> (n, m)``."""
    # Guards rounding below 0 and sqrt's infinite slope at 0 (identical points).
    return squared.clamp_(min=tiny(squared.dtype)).sqrt_()


class _PairwiseEuclidean(torch.autograd.Function):
    r"""``d = sqrt(max(|x|^2 + |y|^2 - 2 x y^T, tau))``, ``(n, d), (m, d) -> (n, m)``, with the backward

    .. math:: w_{ij} = g_{ij}/d_{ij}\ (0 \text{ where clamped}),\quad
              \nabla_x = \operatorname{diag}(w\mathbf 1)\,x - w\,y,\quad
              \nabla_y = \operatorname{diag}(w^T\mathbf 1)\,y - w^T x ,

    the gradient of :func:`pairwise_dist_formula`, with one elementwise pass, a row and a column sum
    and one matrix product per input. "Clamped" is a squared distance of at most ``tau``, where
    ``torch.clamp``'s gradient is 0 too. Not twice differentiable."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        squared = _squared_distances(x, y)
        clamped = squared <= tiny(squared.dtype)
        distances = _sqrt_in_place(squared)
        ctx.save_for_backward(x, y, distances, clamped)
        return distances

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, y, distances, clamped = ctx.saved_tensors
        weights = torch.div(grad, distances).masked_fill_(clamped, 0.0)
        grad_x = grad_y = None
        # In-place addmm_ accumulates the products into the diagonal terms (no copy of them).
        if ctx.needs_input_grad[0]:
            grad_x = (x * weights.sum(1, keepdim=True)).addmm_(weights, y, alpha=-1.0)
        if ctx.needs_input_grad[1]:
            grad_y = (y * weights.sum(0).unsqueeze(1)).addmm_(weights.t(), x, alpha=-1.0)
        return grad_x, grad_y


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
