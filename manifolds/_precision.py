"""The geometry modules' import path of :mod:`manifolds.precision` (the public one)."""

from .precision import autocast_off, full_precision, upcast  # noqa: F401
