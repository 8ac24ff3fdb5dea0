"""Euclidean geometry with the same added interface as :class:`manifolds.Lorentz`."""

from __future__ import annotations

import geoopt
import torch
import torch.nn.functional as F

from . import euclidean_math as em
from ._precision import full_precision
from .geometry import DEFAULT_MIN_RADIUS, Geometry, register_geometry


class Euclidean(geoopt.Euclidean, Geometry):
    r"""Flat space :math:`\mathbb{R}^d` (geoopt's ``Euclidean``, ``ndim=1``) with the methods model
    and loss code call on any geometry, so that it never branches on the geometry:

    - :meth:`lift` maps a feature to an embedding: the identity, or L2 normalisation when
      ``normalize=True`` — CLIP's cosine geometry (embeddings on the unit sphere, similarity = cosine);
    - :meth:`cinner` (dot products), :meth:`cdist` (Euclidean distances), :meth:`csimilarity`
      (dot product: the cosine for normalised embeddings), :meth:`dist0` (norm);
    - :meth:`half_aperture` / :meth:`oxy_angle`: Euclidean entailment cones (Ganea et al., 2018),
      :math:`\arcsin(K/|x|)` and the angle at ``x`` between ``x`` and ``y - x``.

    ``normalize`` changes only how features become embeddings; as a manifold for parameters this is
    always plain :math:`\mathbb{R}^d`.
    """

    hyperbolic = False

    def __init__(self, normalize: bool = False, min_radius: float = DEFAULT_MIN_RADIUS):
        super().__init__(ndim=1)
        self.normalize = normalize
        self.min_radius = float(min_radius)
        # Not saved with the weights: a constant that only follows the model's device.
        self.register_buffer("_zero", torch.zeros(()), persistent=False)

    @property
    def c(self) -> torch.Tensor:
        """Curvature magnitude: 0 (flat)."""
        return self._zero

    def extra_repr(self) -> str:
        return f"normalize={self.normalize}"

    @full_precision
    def lift(self, v: torch.Tensor) -> torch.Tensor:
        """Feature ``(..., d)`` -> embedding ``(..., d)``: identity, or unit-normalised."""
        return F.normalize(v, dim=-1) if self.normalize else v

    def unlift(self, x: torch.Tensor) -> torch.Tensor:
        """Identity: flat space is its own tangent space at the origin (with ``normalize``, the
        unit embedding ``x`` is a feature that :meth:`lift` maps to ``x``)."""
        return x

    def mean_features(self, features: torch.Tensor) -> torch.Tensor:
        """Class prototype feature from several prompt features ``(n, d) -> (d,)``: CLIP averages
        the *normalised* features (the lift normalises the mean again)."""
        return self.lift(features).mean(dim=0)

    def from_space(self, x: torch.Tensor) -> torch.Tensor:
        """Identity: Euclidean points have no extra coordinate."""
        return x

    def to_space(self, x: torch.Tensor) -> torch.Tensor:
        """Identity: Euclidean points have no extra coordinate."""
        return x

    @full_precision
    def cinner(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Pairwise dot products ``(n, d), (m, d) -> (n, m)``."""
        return x @ y.transpose(-1, -2)

    @full_precision
    def cdist(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Pairwise Euclidean distances ``(n, d), (m, d) -> (n, m)`` (one matrix product)."""
        return em.pairwise_dist(x, y)

    @full_precision
    def similarity(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Row-wise similarity used by contrastive losses: the dot product."""
        return (x * y).sum(dim=-1)

    def csimilarity(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Pairwise similarity (cosine for normalised embeddings): ``cinner``."""
        return self.cinner(x, y)

    @full_precision
    def dist0(self, x: torch.Tensor, *, keepdim: bool = False) -> torch.Tensor:
        """Distance to the origin: the Euclidean norm."""
        return x.norm(dim=-1, keepdim=keepdim)

    @full_precision
    def half_aperture(self, x: torch.Tensor, min_radius: float | None = None) -> torch.Tensor:
        """Half-aperture of the Euclidean entailment cone at ``x``: ``asin(min(1, K/|x|))``, with
        ``K`` defaulting to :attr:`min_radius`."""
        return em.half_aperture(x, min_radius=self.min_radius if min_radius is None else min_radius)

    @full_precision
    def oxy_angle(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Angle at ``x`` between the ray origin→x extended and ``y - x``, row-wise."""
        return em.oxy_angle(x, y)

    def poincare_radius(self, x: torch.Tensor) -> torch.Tensor:
        """Radius on the unit disk for figures: ``tanh(|x|/2)`` (the Lorentz formula with ``c = 1``)."""
        return torch.tanh(0.5 * self.dist0(x))


register_geometry(
    "euclidean", geometry_class=Euclidean, family="clip", display_name="CLIP", default_method="ac",
    # CLIP's cosine geometry: embeddings normalised, no entailment loss, no curvature.
    build=lambda *, curvature, learnable, min_radius: Euclidean(normalize=True, min_radius=min_radius),
)
