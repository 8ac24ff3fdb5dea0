"""The one exception every dataset reader raises, and the listing its messages use."""

from __future__ import annotations

from collections.abc import Iterable


class DatasetError(ValueError):
    """A dataset could not be built or queried; the message names the bad input and what was expected."""


def short_list(items: Iterable[str], limit: int = 40) -> str:
    """Comma-separated listing of ``items``, truncated after ``limit`` entries.

    Error messages name the known concepts or bad values; a hierarchy of thousands of concepts
    would otherwise bury the message.
    """
    items = list(items)
    shown = ", ".join(repr(x) for x in items[:limit])
    if len(items) > limit:
        shown += f", ... ({len(items) - limit} more)"
    return shown
