"""The concept tree every dataset is annotated with (``shape -> polygon -> triangle``).

A *concept* is a named node of the tree. Every image-caption pair of a dataset carries the set of
concepts it depicts: its leaf concept(s) and all of their ancestors, so that forgetting a parent
concept forgets all of its descendants.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .errors import DatasetError, short_list


def _check_names(parent: Mapping[str, str | None]) -> None:
    """Refuse anything but a non-empty mapping from concept names to parent names (or None)."""
    if not isinstance(parent, Mapping) or not parent:
        raise DatasetError(
            f"a concept hierarchy needs a non-empty mapping child -> parent, got {parent!r:.200}"
        )
    for child, par in parent.items():
        if not isinstance(child, str) or not child:
            raise DatasetError(f"concept names must be non-empty strings, got {child!r}")
        if par is not None and not isinstance(par, str):
            raise DatasetError(
                f"the parent of concept {child!r} must be a concept name or None, got {par!r}"
            )


def _single_root(parent: Mapping[str, str | None]) -> str:
    """The one concept whose parent is ``None``; none or several raise :class:`DatasetError`."""
    roots = sorted(c for c, p in parent.items() if p is None)
    if len(roots) != 1:
        raise DatasetError(
            f"a concept hierarchy needs exactly one root (a concept whose parent is null); "
            f"found {len(roots)}: {short_list(roots)}"
        )
    return roots[0]


def _check_parents_known(parent: Mapping[str, str | None]) -> None:
    """Refuse parents that are not themselves concepts (they would have no parent of their own)."""
    unknown = sorted({p for p in parent.values() if p is not None and p not in parent})
    if unknown:
        raise DatasetError(
            f"parent concept(s) {short_list(unknown)} are not concepts of the hierarchy; "
            f"every parent must also appear as a child (the root with parent null)"
        )


def _sorted_children(parent: Mapping[str, str | None]) -> dict[str, list[str]]:
    """``{concept: its children, sorted}`` for every concept (leaves map to ``[]``)."""
    children: dict[str, list[str]] = {c: [] for c in parent}
    for child, par in parent.items():
        if par is not None:
            children[par].append(child)
    for kids in children.values():
        kids.sort()
    return children


def _depths_from_root(root: str, children: Mapping[str, list[str]]) -> dict[str, int]:
    """Depth of every concept reachable from ``root``; a concept left out sits on a cycle."""
    depth = {root: 0}
    stack = [root]
    while stack:
        node = stack.pop()
        for kid in children[node]:
            depth[kid] = depth[node] + 1
            stack.append(kid)
    return depth


class ConceptHierarchy:
    """A tree of named concepts given as a ``child -> parent`` mapping with exactly one root.

    ``parent`` maps every concept name to the name of its parent, and the single root to ``None``.
    Every parent must itself be a key of the mapping. Cycles, several roots or no root raise
    :class:`DatasetError`.
    """

    def __init__(self, parent: Mapping[str, str | None]):
        _check_names(parent)
        self._parent: dict[str, str | None] = dict(parent)
        self.root: str = _single_root(self._parent)
        _check_parents_known(self._parent)
        self._children = _sorted_children(self._parent)
        self._depth = _depths_from_root(self.root, self._children)
        cyclic = sorted(set(self._parent) - set(self._depth))
        if cyclic:
            raise DatasetError(
                f"the concept hierarchy has a cycle: {short_list(cyclic)} never reach the root "
                f"{self.root!r}"
            )

    # -- queries -----------------------------------------------------------------------------------

    def _check(self, concept: str) -> None:
        """Raise :class:`DatasetError` naming the known concepts unless ``concept`` is one."""
        if concept not in self._parent:
            raise DatasetError(
                f"unknown concept {concept!r}; known concepts: {short_list(self.concepts())}"
            )

    def is_known(self, concept: str) -> bool:
        """Whether ``concept`` is a node of this hierarchy."""
        return isinstance(concept, str) and concept in self._parent

    def concepts(self) -> list[str]:
        """All concept names, sorted."""
        return sorted(self._parent)

    def parent_of(self, concept: str) -> str | None:
        """The parent of ``concept`` (``None`` for the root)."""
        self._check(concept)
        return self._parent[concept]

    def children(self, concept: str) -> list[str]:
        """The direct children of ``concept``, sorted."""
        self._check(concept)
        return list(self._children[concept])

    def ancestors(self, concept: str) -> list[str]:
        """The ancestors of ``concept``: its parent first, up to and including the root."""
        self._check(concept)
        chain = []
        node = self._parent[concept]
        while node is not None:
            chain.append(node)
            node = self._parent[node]
        return chain

    def descendants(self, concept: str) -> list[str]:
        """Every concept below ``concept`` (not including it), sorted."""
        self._check(concept)
        found, stack = [], list(self._children[concept])
        while stack:
            node = stack.pop()
            found.append(node)
            stack.extend(self._children[node])
        return sorted(found)

    def siblings(self, concept: str) -> list[str]:
        """Concepts with the same parent as ``concept``, excluding it (the root has none)."""
        self._check(concept)
        par = self._parent[concept]
        if par is None:
            return []
        return [c for c in self._children[par] if c != concept]

    def depth(self, concept: str) -> int:
        """Number of edges between ``concept`` and the root (the root has depth 0)."""
        self._check(concept)
        return self._depth[concept]

    def is_leaf(self, concept: str) -> bool:
        """Whether ``concept`` has no children."""
        self._check(concept)
        return not self._children[concept]

    def leaves(self) -> list[str]:
        """All concepts without children, sorted."""
        return sorted(c for c, kids in self._children.items() if not kids)

    def closure(self, concepts: Iterable[str]) -> frozenset[str]:
        """The given concepts together with all of their ancestors."""
        out: set[str] = set()
        for c in concepts:
            self._check(c)
            out.add(c)
            out.update(self.ancestors(c))
        return frozenset(out)

    def as_dict(self) -> dict[str, str | None]:
        """The ``child -> parent`` mapping (a copy)."""
        return dict(self._parent)

    def __len__(self) -> int:
        return len(self._parent)

    def __contains__(self, concept: object) -> bool:
        return isinstance(concept, str) and concept in self._parent

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ConceptHierarchy) and other._parent == self._parent

    def __repr__(self) -> str:
        return (
            f"ConceptHierarchy(root={self.root!r}, concepts={len(self)}, "
            f"leaves={len(self.leaves())})"
        )
