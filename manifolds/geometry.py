r"""The geometry contract and the registry of geometries.

Models, objectives and audits never ask *which* geometry they run on; they call the methods of
:class:`Geometry` on the model's geometry object, and read what differs between geometries at the
level of a whole experiment (default model family, default unlearning method, display name,
pretraining loss settings) from its :class:`GeometrySpec`, found by name with :func:`geometry_spec`.
Adding a geometry is one module in ``manifolds/`` that subclasses :class:`Geometry` (usually next to
a geoopt manifold) and calls :func:`register_geometry` once.

Shapes: ``D`` is the stored width of a point (``d + 1`` for the Lorentz model's full coordinates,
``d`` otherwise), ``d`` the width of a feature.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Callable

import torch

DEFAULT_MIN_RADIUS = 0.1  # entailment cones' minimum radius K (MERU's and HAC's value)


class Geometry(abc.ABC):
    """What the rest of the project may call on a geometry. Subclasses are geoopt manifolds (so
    their points can be ``ManifoldParameter``\\ s driven by Riemannian Adam) that also implement
    every abstract method below.

    Attributes:
        hyperbolic: whether distances grow exponentially with the radius (cones, norm
            regularisation and the other hyperbolic terms of HAC are meaningful).
        min_radius: the entailment cones' minimum radius ``K`` — the one value read by the model's
            entailment loss, the objectives' cone terms and the geometry audit.
    """

    hyperbolic: bool = False
    min_radius: float = DEFAULT_MIN_RADIUS

    @property
    @abc.abstractmethod
    def c(self) -> torch.Tensor:
        """Curvature magnitude (the curvature is ``-c``; 0 when flat), a 0-dim tensor."""

    @abc.abstractmethod
    def lift(self, v: torch.Tensor) -> torch.Tensor:
        """Feature ``(..., d)`` -> embedding ``(..., D)`` (exponential map at the origin, or
        normalisation)."""

    @abc.abstractmethod
    def unlift(self, x: torch.Tensor) -> torch.Tensor:
        """Embedding ``(..., D)`` -> the feature ``(..., d)`` that :meth:`lift` maps to it: the
        logarithmic map at the origin, with ``|unlift(x)| = dist0(x)`` (identity when flat). Its
        Euclidean distances are the tangent-space distances the hyperbolicity audit compares with
        :meth:`cdist`."""

    @abc.abstractmethod
    def mean_features(self, features: torch.Tensor) -> torch.Tensor:
        """Class prototype feature from several prompt features ``(n, d) -> (d,)``."""

    @abc.abstractmethod
    def from_space(self, x_space: torch.Tensor) -> torch.Tensor:
        """The stored form ``(..., D)`` of a point given by its space components ``(..., d)``."""

    @abc.abstractmethod
    def to_space(self, x: torch.Tensor) -> torch.Tensor:
        """Space components ``(..., d)`` of stored points ``(..., D)`` (MERU's form)."""

    @abc.abstractmethod
    def cdist(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Pairwise geodesic distances ``(n, D), (m, D) -> (n, m)``."""

    @abc.abstractmethod
    def similarity(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Row-wise similarity used as a contrastive logit ``(..., D), (..., D) -> (...)``."""

    @abc.abstractmethod
    def csimilarity(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Pairwise similarity ``(n, D), (m, D) -> (n, m)`` (larger = closer)."""

    @abc.abstractmethod
    def dist0(self, x: torch.Tensor, *, keepdim: bool = False) -> torch.Tensor:
        """Geodesic distance to the origin ``(..., D) -> (...)``."""

    @abc.abstractmethod
    def half_aperture(self, x: torch.Tensor, min_radius: float | None = None) -> torch.Tensor:
        """Half-aperture of the entailment cone at ``x`` ``(..., D) -> (...)``; ``min_radius``
        defaults to the geometry's own :attr:`min_radius`."""

    @abc.abstractmethod
    def oxy_angle(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Exterior angle at ``x`` between the ray from the origin and the geodesic to ``y``,
        row-wise ``(..., D), (..., D) -> (...)``; ``y`` is in ``x``'s cone when it is at most
        :meth:`half_aperture`."""

    def poincare_radius(self, x: torch.Tensor) -> torch.Tensor:
        r"""Radius on the unit Poincaré disk used by figures, :math:`\tanh(\sqrt{c}\,d(O, x)/2)`
        ``(..., D) -> (...)``; flat geometries override it."""
        return torch.tanh(0.5 * self.c.sqrt() * self.dist0(x))


@dataclasses.dataclass(frozen=True)
class GeometrySpec:
    """What a whole experiment needs to know about a geometry, registered once by its module.

    Attributes:
        name: the ``--geometry`` value (``"lorentz"``).
        build: ``build(curvature=, learnable=, min_radius=) -> Geometry`` — the model's geometry
            object from a model config's curvature settings (flat geometries ignore curvature).
        family: prefix of the named model configs (``"meru"`` gives ``meru-tiny``, ``meru-vit-b``).
        display_name: how reports and labels name the models (``"MERU"``).
        default_method: the unlearning objective run when ``--method`` is not given.
        hyperbolic: copied from the geometry class (objectives that need hyperbolic terms refuse
            the others).
        entailment_weight: weight of the entailment loss in pretraining (0: none).
        learn_curvature: whether pretraining learns the curvature.
    """

    name: str
    build: Callable[..., Geometry]
    family: str
    display_name: str
    default_method: str
    hyperbolic: bool
    entailment_weight: float = 0.0
    learn_curvature: bool = False

    @property
    def default_model(self) -> str:
        """The named config pretrained on the built-in data: ``<family>-tiny``."""
        return f"{self.family}-tiny"


_GEOMETRIES: dict = {}


def register_geometry(name: str, *, geometry_class: type, build: Callable[..., Geometry], family: str,
                      display_name: str, default_method: str, entailment_weight: float = 0.0,
                      learn_curvature: bool = False) -> GeometrySpec:
    """Register the geometry ``name``; ``geometry_class`` must implement the whole
    :class:`Geometry` contract (checked here, so a missing method fails at import, not mid-run)."""
    if not (isinstance(geometry_class, type) and issubclass(geometry_class, Geometry)):
        raise TypeError(f"geometry {name!r}: {geometry_class!r} is not a subclass of manifolds.Geometry")
    missing = sorted(getattr(geometry_class, "__abstractmethods__", ()))
    if missing:
        raise TypeError(f"geometry {name!r}: {geometry_class.__name__} does not implement {missing}")
    if name in _GEOMETRIES:
        raise ValueError(f"geometry {name!r} is already registered")
    if any(spec.family == family for spec in _GEOMETRIES.values()):
        raise ValueError(f"geometry {name!r}: model family {family!r} is already taken")
    spec = GeometrySpec(name=name, build=build, family=family, display_name=display_name,
                        default_method=default_method, hyperbolic=bool(geometry_class.hyperbolic),
                        entailment_weight=entailment_weight, learn_curvature=learn_curvature)
    _GEOMETRIES[name] = spec
    return spec


def geometry_spec(name: str) -> GeometrySpec:
    """The registered :class:`GeometrySpec` of ``name``; the error lists the registered names."""
    try:
        return _GEOMETRIES[name]
    except KeyError:
        raise ValueError(f"unknown geometry {name!r}; expected one of {geometry_names()}") from None


def geometry_names() -> list:
    """Registered geometry names, in registration order."""
    return list(_GEOMETRIES)


def geometry_specs() -> list:
    """Registered :class:`GeometrySpec`\\ s, in registration order."""
    return list(_GEOMETRIES.values())
