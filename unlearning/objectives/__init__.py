"""Objectives register themselves on import: one module per objective."""

from . import ac, ft, ga, hac, neggrad, relabel  # noqa: F401
