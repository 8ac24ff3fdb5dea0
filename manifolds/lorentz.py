"""The Lorentz model as a geoopt manifold, with MERU's conventions and a learnable curvature."""

from __future__ import annotations

from typing import Tuple

import geoopt
import torch

from . import lorentz_math as lm
from ._precision import full_precision
from .geometry import DEFAULT_MIN_RADIUS, Geometry, register_geometry
from .curvature import LearnableCurvature


class Lorentz(LearnableCurvature, geoopt.Manifold, Geometry):
    r"""Hyperboloid of curvature :math:`-c`, points in full coordinates ``(x_t, x_s)``, time first.

    A drop-in geoopt manifold: ``geoopt.ManifoldParameter(x, manifold=Lorentz())`` is optimised by
    ``geoopt.optim.RiemannianAdam``. geoopt's ``Lorentz(k)`` is the same space with ``k = 1/c``;
    every geoopt method keeps its meaning. Added for image–text models: :meth:`from_space` /
    :meth:`to_space` (MERU's space-component form), :meth:`cinner` / :meth:`cdist` (pairwise, one
    matrix product), :meth:`half_aperture` / :meth:`oxy_angle` (entailment cones), :meth:`lift`
    (tangent feature at the origin -> point) and :meth:`csimilarity` (``-cdist``).

    Parameters
    ----------
    c:
        Initial curvature magnitude (``c > 0``).
    learnable:
        Make ``c`` a parameter, stored as ``log c``.
    c_range:
        ``(low, high)``: the curvature is kept in this range (see :class:`manifolds.Interval`).
    min_radius:
        The entailment cones' minimum radius ``K`` (the default of :meth:`half_aperture`).

    All computations run in float32 or float64: half-precision inputs are upcast and autocast is
    disabled inside every method (see :mod:`manifolds._precision`).
    """

    name = "Lorentz"
    ndim = 1
    reversible = False
    hyperbolic = True

    def __init__(self, c: float = 1.0, learnable: bool = False, c_range: Tuple[float, float] = (0.1, 10.0),
                 min_radius: float = DEFAULT_MIN_RADIUS):
        super().__init__()
        self.min_radius = float(min_radius)
        self._init_curvature(c, learnable=learnable, c_range=c_range)

    @property
    def k(self) -> torch.Tensor:
        """geoopt's parameter: ``<x, x>_L = -k``, i.e. ``k = 1/c``."""
        return 1.0 / self.c

    # ----------------------------------------------------------------------------- conversions
    @full_precision
    def from_space(self, x_space: torch.Tensor) -> torch.Tensor:
        """MERU space components ``(..., d)`` -> full coordinates ``(..., d+1)``."""
        return lm.from_space(x_space, c=self.c)

    def to_space(self, x: torch.Tensor) -> torch.Tensor:
        """Full coordinates ``(..., d+1)`` -> MERU space components ``(..., d)``."""
        return lm.to_space(x)

    @full_precision
    def lorentz_to_poincare(self, x: torch.Tensor) -> torch.Tensor:
        """Isometry onto the Poincaré ball of curvature ``-c`` (radius ``1/sqrt(c)``, geoopt's
        ``PoincareBall(c)``): ``x_s / (1 + sqrt(c) x_t)``, ``(..., d+1) -> (..., d)``."""
        return lm.lorentz_to_poincare(x, c=self.c)

    @full_precision
    def poincare_to_lorentz(self, p: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`lorentz_to_poincare`, ``(..., d) -> (..., d+1)``."""
        return lm.poincare_to_lorentz(p, c=self.c)

    @full_precision
    def lift(self, v: torch.Tensor) -> torch.Tensor:
        """Map a feature ``v`` read as a tangent vector at the origin (space part, ``(..., d)``)
        onto the manifold: ``from_space(exp_map0(v))`` in MERU's terms. ``-> (..., d+1)``."""
        return lm.from_space(lm.expmap0_space(v, c=self.c), c=self.c)

    @full_precision
    def unlift(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`lift`: MERU's log map at the origin on the space components,
        ``(..., d+1) -> (..., d)``, with ``|unlift(x)| = dist0(x)``."""
        return lm.logmap0_space(lm.to_space(x), c=self.c)

    def mean_features(self, features: torch.Tensor) -> torch.Tensor:
        """Class prototype feature from several prompt features ``(n, d) -> (d,)``: MERU averages
        in the tangent space at the origin, before lifting."""
        return features.mean(dim=0)

    # ------------------------------------------------------------------------- metric quantities
    @full_precision
    def inner(self, x, u: torch.Tensor, v: torch.Tensor = None, *, keepdim: bool = False) -> torch.Tensor:
        r"""Lorentz inner product :math:`\langle u, v\rangle_L` (``v = u`` when omitted); ``x`` unused."""
        return lm.inner(u, u if v is None else v, keepdim=keepdim)

    @full_precision
    def inner0(self, v: torch.Tensor = None, *, keepdim: bool = False) -> torch.Tensor:
        r"""Lorentz inner product with the origin, :math:`\langle v, O\rangle_L = -v_t/\sqrt c` (geoopt's ``inner0``)."""
        return lm.inner0(v, c=self.c, keepdim=keepdim)

    @full_precision
    def component_inner(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor = None) -> torch.Tensor:
        """Riemannian Adam's second-moment statistic: ``<u, v>_L`` with ``keepdim``, clamped at 0.

        Tangent vectors are space-like, so ``<u, u>_L >= 0`` in exact arithmetic; rounding can make
        it negative, and Adam takes its square root (geoopt's own Lorentz turns NaN this way)."""
        return lm.inner(u, u if v is None else v, keepdim=True).clamp_min(0.0)

    @full_precision
    def norm(self, u: torch.Tensor, *, keepdim: bool = False) -> torch.Tensor:
        """Lorentz norm of a tangent vector."""
        return lm.lorentz_norm(u, keepdim=keepdim)

    @full_precision
    def dist(self, x: torch.Tensor, y: torch.Tensor, *, keepdim: bool = False) -> torch.Tensor:
        r"""Geodesic distance :math:`\operatorname{arccosh}(-c\langle x,y\rangle_L)/\sqrt c`, row-wise."""
        return lm.dist(x, y, c=self.c, keepdim=keepdim)

    @full_precision
    def dist0(self, x: torch.Tensor, *, keepdim: bool = False) -> torch.Tensor:
        """Geodesic distance to the origin."""
        return lm.dist0(x, c=self.c, keepdim=keepdim)

    @full_precision
    def cinner(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Pairwise Lorentz inner products, ``(n, D), (m, D) -> (n, m)``, one matrix product."""
        return lm.pairwise_inner(x, y)

    @full_precision
    def cdist(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Pairwise geodesic distances, ``(n, D), (m, D) -> (n, m)``, one matrix product."""
        return lm.pairwise_dist(x, y, c=self.c)

    def similarity(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Row-wise similarity used by contrastive losses: ``-dist(x, y)``."""
        return -self.dist(x, y)

    def csimilarity(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Pairwise similarity (contrastive logits before scaling): ``-cdist(x, y)``, ``(n, m)``."""
        return -self.cdist(x, y)

    @full_precision
    def half_aperture(self, x: torch.Tensor, min_radius: float | None = None) -> torch.Tensor:
        """Half-aperture of the entailment cone at each point, ``(..., D) -> (...)``; ``min_radius``
        defaults to :attr:`min_radius`."""
        return lm.half_aperture(x, c=self.c, min_radius=self.min_radius if min_radius is None else min_radius)

    @full_precision
    def oxy_angle(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Exterior angle at ``x`` of the triangle origin–x–y, row-wise and broadcasting."""
        return lm.oxy_angle(x, y, c=self.c)

    # -------------------------------------------------------------------- geoopt's manifold API
    @full_precision
    def projx(self, x: torch.Tensor) -> torch.Tensor:
        """Recompute the time coordinate from the space part."""
        return lm.project(x, c=self.c)

    @full_precision
    def proju(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        r"""Tangent projection :math:`u + c\langle x,u\rangle_L x`."""
        return lm.proju(x, u, c=self.c)

    @full_precision
    def egrad2rgrad(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Euclidean gradient -> Riemannian gradient (Minkowski metric inverse, then projection)."""
        return lm.egrad2rgrad(x, u, c=self.c)

    @full_precision
    def expmap(self, x: torch.Tensor, u: torch.Tensor, *, project: bool = True) -> torch.Tensor:
        """Exponential map at ``x`` (always lands on the manifold; ``project`` kept for geoopt)."""
        return lm.expmap(x, u, c=self.c)

    @full_precision
    def expmap0(self, u: torch.Tensor, *, project: bool = True) -> torch.Tensor:
        """Exponential map at the origin of ``u = (0, v)`` (the time component is ignored)."""
        return lm.expmap0(u, c=self.c)

    @full_precision
    def logmap(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Logarithmic map: the tangent vector at ``x`` pointing to ``y``."""
        return lm.logmap(x, y, c=self.c)

    @full_precision
    def logmap0(self, y: torch.Tensor) -> torch.Tensor:
        """Logarithmic map at the origin: ``(0, v)`` with ``|v| = dist0(y)``."""
        return lm.logmap0(y, c=self.c)

    @full_precision
    def logmap0back(self, x: torch.Tensor) -> torch.Tensor:
        """Logarithmic map of the origin at ``x``: the tangent vector at ``x`` pointing to the origin."""
        return lm.logmap0back(x, c=self.c)

    @full_precision
    def geodesic_unit(self, t, x: torch.Tensor, u: torch.Tensor, *, project: bool = True) -> torch.Tensor:
        """Point at time ``t`` on the unit-speed geodesic from ``x`` with direction ``u`` (normalised
        here; geoopt assumes ``|u| = 1``). Always on the manifold; ``project`` kept for geoopt."""
        return lm.geodesic_unit(t, x, u, c=self.c)

    def retr(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Retraction: the exponential map itself (it is cheap and stable here)."""
        return self.expmap(x, u)

    @full_precision
    def transp(self, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Parallel transport of ``v`` from ``x`` to ``y``."""
        return lm.transp(x, y, v, c=self.c)

    def transp0(self, y: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Parallel transport from the origin to ``y``."""
        return self.transp(self.origin(*y.shape, dtype=y.dtype, device=y.device), y, u)

    def transp0back(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Parallel transport from ``x`` to the origin."""
        return self.transp(x, self.origin(*x.shape, dtype=x.dtype, device=x.device), u)

    def origin(self, *size, dtype=None, device=None, seed=42) -> "geoopt.ManifoldTensor":
        """The origin ``(1/sqrt c, 0, ..., 0)`` of shape ``size``."""
        if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)):
            size = tuple(size[0])
        point = lm.origin(*size, c=float(self.c), dtype=dtype, device=device)
        return geoopt.ManifoldTensor(point, manifold=self)

    def random_normal(self, *size, mean=0.0, std=1.0, dtype=None, device=None) -> "geoopt.ManifoldTensor":
        r"""Random points of shape ``size`` (last entry ``D = d + 1``) from the *wrapped normal at the
        origin*: a tangent vector at the origin ``(0, v)`` with i.i.d. coordinates
        :math:`v_i \sim N(\text{mean}, \text{std}^2)`, ``i = 1..d``, mapped by :meth:`expmap0`
        (i.e. :meth:`lift`), so ``logmap0`` of the points is ``(0, v)`` and ``dist0 = |v|``.

        This is geoopt's documented meaning ("measure induced by the Normal distribution on the
        tangent space of zero"). geoopt's own code differs: it draws all ``D`` coordinates (time
        included), rescales the draw to unit Euclidean norm (so ``std`` has no effect and every point
        lies within distance 1 of the origin) and then applies ``expmap0``. ``random`` is an alias.
        ``dtype`` defaults to torch's default dtype."""
        if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)):
            size = tuple(size[0])
        self._assert_check_shape(size, "x")
        v = torch.randn(*size[:-1], size[-1] - 1, dtype=dtype, device=device) * std + mean
        with torch.no_grad():
            point = self.lift(v)
        return geoopt.ManifoldTensor(point, manifold=self)

    random = random_normal

    def _check_shape(self, shape, name):
        if len(shape) < 1 or shape[-1] < 2:
            return False, f"{name} needs a last dimension of at least 2 (time + space), got shape {tuple(shape)}"
        return True, None

    def _check_point_on_manifold(self, x: torch.Tensor, *, atol=1e-5, rtol=1e-5):
        constraint = lm.inner(x, x) + 1.0 / self.c
        scale = x[..., 0].pow(2).clamp_min(float(1.0 / self.c))
        ok = bool((constraint.abs() <= atol + rtol * scale).all())
        reason = None if ok else f"<x, x>_L + 1/c = {constraint.abs().max().item():.3g} is not 0"
        return ok, reason

    def _check_vector_on_tangent(self, x: torch.Tensor, u: torch.Tensor, *, atol=1e-5, rtol=1e-5):
        product = lm.inner(x, u)
        scale = (x.norm(dim=-1) * u.norm(dim=-1)).clamp_min(1.0)
        ok = bool((product.abs() <= atol + rtol * scale).all())
        reason = None if ok else f"<x, u>_L = {product.abs().max().item():.3g} is not 0"
        return ok, reason


register_geometry(
    "lorentz", geometry_class=Lorentz, family="meru", display_name="MERU", default_method="hac",
    # MERU's entailment weight; the curvature is learned within a decade either side of its start.
    entailment_weight=0.2, learn_curvature=True,
    build=lambda *, curvature, learnable, min_radius: Lorentz(
        c=curvature, learnable=learnable, c_range=(curvature / 10.0, curvature * 10.0), min_radius=min_radius),
)
