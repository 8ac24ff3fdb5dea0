"""A closed interval of the real line as a geoopt manifold: box-constrained scalar parameters."""

from __future__ import annotations

import geoopt
import torch


class Interval(geoopt.Euclidean):
    r"""The interval :math:`[low, high]` with the flat metric: a scalar parameter that Riemannian
    Adam keeps inside its bounds.

    The retraction steps in :math:`\mathbb{R}` and projects back, :math:`\operatorname{retr}_x(u) =
    \operatorname{clip}(x + u, low, high)`, so the parameter never leaves the interval and its
    gradient is that of the plain value — unlike reading ``p.clamp(low, high)`` in the forward pass,
    whose gradient is zero on and beyond a bound (a parameter that reaches a bound that way never
    comes back). MERU clamps its curvature's data after each optimiser step to the same effect.
    Momentum is carried over unchanged (flat transport).
    """

    name = "Interval"

    def __init__(self, low: float, high: float):
        super().__init__(ndim=0)
        if not low < high:
            raise ValueError(f"Interval needs low < high, got low={low}, high={high}")
        self.low, self.high = float(low), float(high)

    def extra_repr(self) -> str:
        return f"low={self.low:.6g}, high={self.high:.6g}"

    def projx(self, x: torch.Tensor) -> torch.Tensor:
        """The nearest point of the interval."""
        return x.clamp(self.low, self.high)

    def retr(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """A step of ``u`` from ``x``, stopped at the bounds."""
        return self.projx(x + u)

    expmap = retr

    def _check_point_on_manifold(self, x: torch.Tensor, *, atol=1e-5, rtol=1e-5):
        ok = bool(((x >= self.low - atol) & (x <= self.high + atol)).all())
        return ok, None if ok else f"values outside [{self.low:.6g}, {self.high:.6g}]"
