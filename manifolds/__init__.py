"""Geometry for image–text embeddings: the Lorentz hyperboloid (MERU) and Euclidean space (CLIP).

Both classes are geoopt manifolds (usable with ``geoopt.ManifoldParameter`` and
``geoopt.optim.RiemannianAdam``) sharing one added interface — ``lift``, ``cinner``, ``cdist``,
``csimilarity``, ``dist0``, ``half_aperture``, ``oxy_angle``, ``mean_features`` — so that model and
loss code works on either geometry without branching. The formulas live in the pure-function modules
:mod:`manifolds.lorentz_math` and :mod:`manifolds.euclidean_math`.
"""

from .euclidean import Euclidean
from .lorentz import Lorentz

__all__ = ["Lorentz", "Euclidean"]
