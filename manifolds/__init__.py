"""Geometry for image–text embeddings: the Lorentz hyperboloid (MERU), Euclidean space (CLIP) and
the Poincaré ball.

The classes are geoopt manifolds (usable with ``geoopt.ManifoldParameter`` and
``geoopt.optim.RiemannianAdam``) implementing one contract, :class:`Geometry` — ``lift``, ``cdist``,
``csimilarity``, ``dist0``, ``half_aperture``, ``oxy_angle``, ``mean_features``, ... — so that model
and loss code works on any geometry without branching. Each registers itself with
:func:`register_geometry`; :func:`geometry_spec` gives what an experiment needs to know about one
(model family, display name, default method, pretraining loss settings). The formulas live in the
pure-function modules :mod:`manifolds.lorentz_math`, :mod:`manifolds.euclidean_math` and
:mod:`manifolds.poincare_math`.
"""

import warnings

with warnings.catch_warnings():
    # geoopt decorates some of its functions with torch.jit.script, deprecated since torch 2.9; the
    # notice concerns geoopt's code, not the user's, and would otherwise open every command's output.
    warnings.filterwarnings("ignore", message=r"`torch.jit.script` is deprecated", category=FutureWarning)
    import geoopt  # noqa: F401

from .geometry import (Geometry, GeometrySpec, geometry_names, geometry_spec, geometry_specs,  # noqa: E402
                       register_geometry)
from .interval import Interval  # noqa: E402
from .lorentz import Lorentz  # noqa: E402  (registration order: lorentz, euclidean, poincare)
from .euclidean import Euclidean  # noqa: E402
from .poincare import Poincare  # noqa: E402

__all__ = ["Lorentz", "Euclidean", "Poincare", "Interval", "Geometry", "GeometrySpec", "register_geometry", "geometry_spec",
           "geometry_names", "geometry_specs"]
