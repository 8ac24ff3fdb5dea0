"""The registry of audit families: ``@register_audit(name, columns=...)``.

An audit family is a function ``audit_<family>(model, context, embedded=None, **options) -> dict``.
Registering it adds it to :data:`AUDIT_FAMILIES` (the families :func:`~benchmarks.audits.run_audits`
runs, in registration order) and declares the headline-table columns its results fill in
``report.md``, so adding an audit touches its own module only (plus its import in ``__init__``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Tuple

FORMATS = ("pct", "num")  # percentages of a fraction, plain numbers (3 decimals)


@dataclass(frozen=True)
class Column:
    """A headline column of ``report.md``: its ``title``, the result ``key`` it shows and how
    (``pct`` or ``num``)."""

    title: str
    key: str
    format: str = "num"

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"column {self.title!r}: format must be one of {FORMATS}, got {self.format!r}")


#: Registered audit families in run order: name -> function (tests may patch entries).
AUDIT_FAMILIES: Dict[str, Callable[..., dict]] = {}
#: Headline columns declared by each family: name -> columns.
AUDIT_COLUMNS: Dict[str, Tuple[Column, ...]] = {}


def register_audit(name: str, *, columns: Tuple[Column, ...] = ()):
    """Function decorator: register the audit family ``name`` and its headline ``columns``."""

    def decorator(function):
        if name in AUDIT_FAMILIES:
            raise ValueError(f"audit family {name!r} is already registered")
        taken = {column.key for columns_of in AUDIT_COLUMNS.values() for column in columns_of}
        repeated = sorted(taken & {column.key for column in columns})
        if repeated:
            raise ValueError(f"audit family {name!r}: columns {repeated} are already shown by another family")
        AUDIT_FAMILIES[name] = function
        AUDIT_COLUMNS[name] = tuple(columns)
        return function

    return decorator


def headline_columns() -> list:
    """Every registered family's columns, in family order: the headline tables of ``report.md``."""
    return [column for name in AUDIT_FAMILIES for column in AUDIT_COLUMNS.get(name, ())]
