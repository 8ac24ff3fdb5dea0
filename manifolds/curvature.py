"""A curvature magnitude ``c`` stored as ``log c``, fixed or learnable within a range; shared by the
hyperbolic geometries (Lorentz, Poincaré ball)."""

from __future__ import annotations

import math
from typing import Tuple

import geoopt
import torch
from torch import nn

from .interval import Interval


def check_range(c: float, c_range: Tuple[float, float], *, owner: str) -> Tuple[float, float]:
    """``c_range`` as floats, after checking ``0 < low <= c <= high``; the error names ``owner``."""
    low, high = c_range
    if not (0 < low <= c <= high):
        raise ValueError(f"{owner} curvature c={c} must satisfy 0 < low <= c <= high for c_range={c_range}")
    return float(low), float(high)


def register_log_c(module: nn.Module, c: float, *, learnable: bool, c_range: Tuple[float, float]) -> None:
    """Give ``module`` its ``log_c``: a ``ManifoldParameter`` on ``Interval(log c_range)`` when
    ``learnable`` (Riemannian Adam keeps it in range by its retraction, with the gradient alive on
    the bounds), else a buffer. float64, so that float64 geometry sees ``c`` exactly; a 0-dim tensor
    does not promote float32 operands, so float32 code pays nothing for it."""
    low, high = c_range
    log_c = torch.tensor(math.log(c), dtype=torch.float64)
    if learnable:
        module.log_c = geoopt.ManifoldParameter(log_c, manifold=Interval(math.log(low), math.log(high)))
    else:
        module.register_buffer("log_c", log_c)


def read_c(log_c: torch.Tensor, c_range: Tuple[float, float]) -> torch.Tensor:
    """``exp(log_c)`` with its value clamped to ``c_range`` (0-dim tensor).

    Training keeps ``log_c`` in range (:class:`~manifolds.interval.Interval`); the clamp serves
    values set from outside (a loaded file) and passes the gradient straight through, because
    ``torch.clamp``'s is zero on a bound, which would freeze a curvature that reaches one."""
    low, high = c_range
    clamped = log_c.clamp(math.log(low), math.log(high))
    if not log_c.requires_grad:  # a fixed curvature: no gradient to pass through (three fewer operations)
        return clamped.exp()
    return (log_c + (clamped - log_c).detach()).exp()


class LearnableCurvature:
    """Mixin of the hyperbolic geometries: ``c`` read from ``log_c`` within ``c_range``. Listed
    before the geoopt base, so its ``c`` replaces geoopt's (every geoopt method then reads it)."""

    def _init_curvature(self, c: float, *, learnable: bool, c_range: Tuple[float, float]) -> None:
        self.c_range = check_range(c, c_range, owner=type(self).__name__)
        register_log_c(self, c, learnable=learnable, c_range=self.c_range)

    @property
    def c(self) -> torch.Tensor:
        """Curvature magnitude ``exp(log_c)``, kept in ``c_range`` (0-dim tensor; see :func:`read_c`)."""
        return read_c(self.log_c, self.c_range)

    def extra_repr(self) -> str:
        return f"c={float(self.c.detach()):.4g}, learnable={isinstance(self.log_c, nn.Parameter)}"
