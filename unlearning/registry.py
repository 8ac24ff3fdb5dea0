"""The registry of unlearning objectives: ``@register_objective(name, trainer_defaults=...)`` and
``create_objective``."""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Type

_OBJECTIVES: Dict[str, Type] = {}


@dataclasses.dataclass(frozen=True)
class TrainerDefaults:
    """An objective's tuned trainer settings: step size, step budget, batch size, and the share of
    each batch given to *each* forgotten concept (removing k concepts at once gives each one as
    many pairs per step as removing it alone would; the harness caps the total)."""

    lr: float
    steps: int = 150
    batch_size: int = 128
    forget_fraction: float = 0.125

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def register_objective(name: str, *, trainer_defaults: Optional[TrainerDefaults] = None):
    """Class decorator: register an objective under ``name``.

    An objective is a dataclass whose fields are its options (each with a documented default) and
    whose ``loss(embeddings, geometry, batch)`` returns a dict with the scalar ``loss`` to minimise
    and its named parts. Class attributes: ``needs_original`` (embed the batch with the frozen
    original model too), ``needs_parent_prompts`` and ``requires_hyperbolic``. ``trainer_defaults``
    are the settings the harness runs it with (an objective without them must be given settings
    explicitly)."""

    def decorator(cls):
        if name in _OBJECTIVES:
            raise ValueError(f"objective {name!r} is already registered")
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"objective {name!r} must be a dataclass of its options")
        cls.name = name
        cls.trainer_defaults = trainer_defaults
        _OBJECTIVES[name] = cls
        return cls

    return decorator


def trainer_defaults(name: str) -> TrainerDefaults:
    """The tuned trainer settings objective ``name`` was registered with; an error when it has none
    (no other objective's settings are borrowed)."""
    defaults = _lookup(name).trainer_defaults
    if defaults is None:
        raise ValueError(f"objective {name!r} was registered without trainer_defaults; register it with "
                         f"register_objective({name!r}, trainer_defaults=TrainerDefaults(lr=...)) or pass "
                         f"the trainer settings explicitly")
    return defaults


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
