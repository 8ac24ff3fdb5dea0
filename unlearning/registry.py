"""The registry of unlearning objectives: ``@register_objective(name)`` and ``create_objective``."""

from __future__ import annotations

import dataclasses
from typing import Dict, Type

_OBJECTIVES: Dict[str, Type] = {}


def register_objective(name: str):
    """Class decorator: register an objective under ``name``.

    An objective is a dataclass whose fields are its options (each with a documented default) and
    whose ``loss(embeddings, geometry, batch)`` returns a dict with the scalar ``loss`` to minimise
    and its named parts. Class attributes: ``needs_original`` (embed the batch with the frozen
    original model too), ``needs_parent_prompts`` and ``requires_hyperbolic``."""

    def decorator(cls):
        if name in _OBJECTIVES:
            raise ValueError(f"objective {name!r} is already registered")
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"objective {name!r} must be a dataclass of its options")
        cls.name = name
        _OBJECTIVES[name] = cls
        return cls

    return decorator


def list_objectives() -> list:
    """Names of all registered objectives."""
    return sorted(_OBJECTIVES)


def objective_options(name: str) -> dict:
    """The options of objective ``name`` and their defaults."""
    cls = _lookup(name)
    return {f.name: f.default for f in dataclasses.fields(cls)}


def create_objective(name: str, **options):
    """Instantiate objective ``name`` with ``options`` (unknown names/options give a clear error)."""
    cls = _lookup(name)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"objective {name!r} has no option(s) {unknown}; its options are {sorted(known)}")
    return cls(**options)


def _lookup(name: str):
    if name not in _OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; registered objectives: {', '.join(list_objectives())}")
    return _OBJECTIVES[name]
