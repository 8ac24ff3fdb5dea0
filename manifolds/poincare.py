"""The Poincaré ball as a geoopt manifold with the geometry contract: a third geometry for
image–text models next to MERU's hyperboloid and CLIP's sphere."""

from __future__ import annotations

from typing import Tuple

import geoopt
import torch

from . import poincare_math as pm
from ._precision import full_precision
from .curvature import LearnableCurvature
from .geometry import DEFAULT_MIN_RADIUS, Geometry, register_geometry


class Poincare(LearnableCurvature, geoopt.PoincareBall, Geometry):
    r"""The ball :math:`|x| < 1/\sqrt{c}` of curvature :math:`-c`: geoopt's ``PoincareBall`` (every
    geoopt method keeps its meaning and reads this curvature) with MERU-style image–text methods:

    - :meth:`lift`: a feature read as a tangent vector at the origin -> the point at distance
      :math:`|v|` in its direction (the same point as :meth:`Lorentz.lift` under the isometry of
      :func:`~manifolds.poincare_math.from_lorentz`);
    - :meth:`cdist` / :meth:`csimilarity` (``-cdist``), :meth:`dist0`;
    - :meth:`half_aperture` / :meth:`oxy_angle`: hyperbolic entailment cones of Ganea et al. (2018),
      identical to MERU's cones on the hyperboloid.

    Parameters
    ----------
    c:
        Initial curvature magnitude (``c > 0``).
    learnable:
        Make ``c`` a parameter, stored as ``log c`` on an :class:`~manifolds.Interval`.
    c_range:
        ``(low, high)``: the curvature is kept in this range.
    min_radius:
        The entailment cones' minimum radius ``K``.

    All computations run in float32 or float64 (see :mod:`manifolds._precision`).
    """

    name = "Poincare"
    hyperbolic = True

    def __init__(self, c: float = 1.0, learnable: bool = False, c_range: Tuple[float, float] = (0.1, 10.0),
                 min_radius: float = DEFAULT_MIN_RADIUS):
        super().__init__(c=c)
        del self.isp_c  # geoopt's softplus-parametrised curvature: replaced by log_c below
        self.min_radius = float(min_radius)
        self._init_curvature(c, learnable=learnable, c_range=c_range)  # geoopt's k is then -c

    def from_space(self, x_space: torch.Tensor) -> torch.Tensor:
        """Identity: a point of the ball is its own space part."""
        return x_space

    def to_space(self, x: torch.Tensor) -> torch.Tensor:
        """Identity: a point of the ball is its own space part."""
        return x

    @full_precision
    def lift(self, v: torch.Tensor) -> torch.Tensor:
        """Feature ``(..., d)`` -> the point ``(..., d)`` at distance ``|v|`` from the origin."""
        return pm.expmap0(v, c=self.c)

    @full_precision
    def unlift(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`lift`: the log map at the origin ``(..., d) -> (..., d)``, with
        ``|unlift(x)| = dist0(x)`` (twice geoopt's ``logmap0``, whose metric at the origin is 4 times
        the Euclidean one)."""
        return pm.logmap0(x, c=self.c)

    def mean_features(self, features: torch.Tensor) -> torch.Tensor:
        """Class prototype feature ``(n, d) -> (d,)``: the mean in the tangent space at the origin,
        before lifting (as MERU)."""
        return features.mean(dim=0)

    @full_precision
    def dist0(self, x: torch.Tensor, *, keepdim: bool = False) -> torch.Tensor:
        """Geodesic distance to the origin, ``(..., d) -> (...)``."""
        return pm.dist0(x, c=self.c, keepdim=keepdim)

    @full_precision
    def cdist(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Pairwise geodesic distances, ``(n, d), (m, d) -> (n, m)``, one matrix product."""
        return pm.pairwise_dist(x, y, c=self.c)

    @full_precision
    def similarity(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Row-wise similarity used by contrastive losses: ``-dist(x, y)``."""
        return -pm.dist(x, y, c=self.c)

    def csimilarity(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Pairwise similarity (contrastive logits before scaling): ``-cdist(x, y)``."""
        return -self.cdist(x, y)

    @full_precision
    def half_aperture(self, x: torch.Tensor, min_radius: float | None = None) -> torch.Tensor:
        """Half-aperture of the entailment cone at each point, ``(..., d) -> (...)``."""
        return pm.half_aperture(x, c=self.c, min_radius=self.min_radius if min_radius is None else min_radius)

    @full_precision
    def oxy_angle(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Exterior angle at ``x`` of the triangle origin–x–y, row-wise and broadcasting."""
        return pm.oxy_angle(x, y, c=self.c)

    @full_precision
    def from_lorentz(self, x: torch.Tensor) -> torch.Tensor:
        """Points of the hyperboloid of the same curvature ``(..., d+1)`` -> ball ``(..., d)``."""
        return pm.from_lorentz(x, c=self.c)

    @full_precision
    def to_lorentz(self, x: torch.Tensor) -> torch.Tensor:
        """Ball ``(..., d)`` -> points of the hyperboloid of the same curvature ``(..., d+1)``."""
        return pm.to_lorentz(x, c=self.c)


register_geometry(
    "poincare", geometry_class=Poincare, family="poincare", display_name="Poincaré", default_method="hac",
    # MERU's recipe on the ball: the same entailment weight and curvature range.
    entailment_weight=0.2, learn_curvature=True,
    build=lambda *, curvature, learnable, min_radius: Poincare(
        c=curvature, learnable=learnable, c_range=(curvature / 10.0, curvature * 10.0), min_radius=min_radius),
)
