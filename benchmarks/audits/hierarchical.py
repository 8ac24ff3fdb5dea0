"""Hierarchical audit (docs/SPEC.md section 5): how far in the concept tree the zero-shot leaf
predictions land from the true leaf — the metrics HyCoCLIP reports for hierarchical classification
(Pal et al. 2025, "Compositional Entailment Learning for Hyperbolic Vision-Language Models",
``hycoclip/evaluation/hierarchical_metrics.py``; the set measures follow Kosmopoulos et al. 2015).

On the forget images they separate two ways of forgetting: a forgotten concept now predicted as a
near relative (small tree error, deep common ancestor, many sibling predictions: the concept was
*reorganised* into its neighbourhood) or as anything (tree error near the uniform-guess value:
*disconnected*).

For leaves ``p`` (predicted) and ``t`` (true) of the dataset's :class:`ConceptHierarchy`, with
``lca(p, t)`` their lowest common ancestor, ``depth`` counted in edges from the root (root 0) and
``A(v)`` the ancestor set of ``v`` — ``v`` itself and its ancestors, the root left out (every set
would share it):

- tree-induced error ``TIE = depth(p) + depth(t) - 2 depth(lca)``, the path length between them;
- LCA depth ``depth(lca(p, t))`` (the leaf's own depth when ``p = t``);
- hierarchical precision ``|A(p) ∩ A(t)| / |A(p)|``, recall ``|A(p) ∩ A(t)| / |A(t)|`` and
  Jaccard ``|A(p) ∩ A(t)| / |A(p) ∪ A(t)|``;
- sibling: ``p != t`` with the same parent.

Each is averaged over images, as HyCoCLIP does."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .context import AuditContext, Embedded
from .metrics import NAN
from .registry import Column, register_audit
from .zero_shot import leaf_predictions


@dataclass(frozen=True)
class TreeScores:
    """Every metric for every (predicted, true) pair of classes: ``(n_classes, n_classes)`` arrays
    indexed ``[predicted, true]`` (float64; ``sibling`` bool)."""

    tree_error: np.ndarray
    lca_depth: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    jaccard: np.ndarray
    sibling: np.ndarray

    @classmethod
    def build(cls, hierarchy, classes: Sequence[str]) -> "TreeScores":
        """Score every pair of ``classes`` (concepts of ``hierarchy`` below its root) at once.

        The common ancestors of two concepts are the path from their LCA up to the root, so with
        the root left out ``|A(p) ∩ A(t)| = depth(lca)`` and ``|A(v)| = depth(v)``: one product of
        the ``(n_classes, n_concepts)`` ancestor-set indicator matrix gives every LCA depth, and
        ``TIE = depth(p) + depth(t) − 2·depth(lca)``, precision ``depth(lca)/depth(p)``, recall
        ``depth(lca)/depth(t)``, Jaccard ``depth(lca)/(depth(p) + depth(t) − depth(lca))``."""
        members = ancestor_sets(hierarchy, classes)
        lca_depth = members @ members.T
        depth = np.diag(lca_depth).copy()
        predicted, true = depth[:, None], depth[None, :]
        parents = np.array([hierarchy.parent_of(name) for name in classes], dtype=object)
        return cls(tree_error=predicted + true - 2.0 * lca_depth, lca_depth=lca_depth,
                   precision=lca_depth / predicted, recall=lca_depth / true,
                   jaccard=lca_depth / (predicted + true - lca_depth),
                   sibling=(parents[:, None] == parents[None, :]) & ~np.eye(len(classes), dtype=bool))


def ancestor_sets(hierarchy, classes: Sequence[str]) -> np.ndarray:
    """Indicator ``(n_classes, n_concepts)`` float64 of ``A(v)``: ``v`` and its ancestors, the root
    left out. Refuses the root as a class (its set would be empty)."""
    column = {concept: k for k, concept in enumerate(hierarchy.concepts())}
    members = np.zeros((len(classes), len(column)))
    for row, name in enumerate(classes):
        if hierarchy.parent_of(name) is None:
            raise ValueError(f"class {name!r} is the root of the concept hierarchy; hierarchical metrics "
                             f"need classes below the root")
        members[row, [column[node] for node in (name, *hierarchy.ancestors(name)[:-1])]] = 1.0
    return members


def hierarchical_scores(scores: TreeScores, predictions: torch.Tensor, targets: torch.Tensor) -> dict:
    """Means over images of the :class:`TreeScores` of ``predictions[i]`` against ``targets[i]``
    (class indices ``(n,)``): ``tree_error``, ``lca_depth``, ``precision``, ``recall``,
    ``jaccard``, ``sibling_rate`` (the fraction of images predicted as a sibling), plus:

    - ``sibling_share``: among the wrongly predicted images, the fraction predicted as a sibling
      (``nan`` when none is wrong);
    - ``tree_error_uniform``: the tree error a uniformly random leaf guess would have on these
      images, ``mean_i mean_k TIE[k, t_i]`` (the "predicted as anything" reference).

    Every value is ``nan`` for no images."""
    predicted = np.asarray(predictions, dtype=np.int64).reshape(-1)
    true = np.asarray(targets, dtype=np.int64).reshape(-1)
    per_pair = {"tree_error": scores.tree_error, "lca_depth": scores.lca_depth, "precision": scores.precision,
                "recall": scores.recall, "jaccard": scores.jaccard, "sibling_rate": scores.sibling}
    if predicted.size == 0:
        return dict.fromkeys([*per_pair, "sibling_share", "tree_error_uniform"], NAN)
    results = {name: float(matrix[predicted, true].mean()) for name, matrix in per_pair.items()}
    wrong = predicted != true
    results["sibling_share"] = float(scores.sibling[predicted[wrong], true[wrong]].mean()) if wrong.any() else NAN
    results["tree_error_uniform"] = float(scores.tree_error[:, true].mean())
    return results


#: Result key of each :func:`hierarchical_scores` entry, after the group prefix.
KEYS = {"tree_error": "tree_error", "lca_depth": "lca_depth", "precision": "hierarchical_precision",
        "recall": "hierarchical_recall", "jaccard": "hierarchical_jaccard", "sibling_rate": "sibling_rate",
        "sibling_share": "sibling_share", "tree_error_uniform": "tree_error_uniform"}
#: Entries left out for the retain images: nearly all of them are right, so the share of their few
#: errors that are siblings is noise, and undefined (not measured) when none is wrong.
FORGET_ONLY = ("sibling_share",)


@register_audit("hierarchical", columns=(Column("forget TIE", "forget_tree_error"),
                                         Column("forget LCA depth", "forget_lca_depth")))
@torch.no_grad()
def audit_hierarchical(model, context: AuditContext, embedded: Embedded | None = None) -> dict:
    """For ``forget`` (forget-test images) and ``retain`` (retain-test images), with the zero-shot
    leaf predictions among ALL leaf classes (shared with the zero-shot audit):
    ``<group>_tree_error``, ``<group>_lca_depth``, ``<group>_hierarchical_precision``,
    ``<group>_hierarchical_recall``, ``<group>_hierarchical_jaccard``, ``<group>_sibling_rate``,
    ``<group>_tree_error_uniform`` and ``forget_sibling_share`` (see :func:`hierarchical_scores`)."""
    embedded = embedded or context.embed(model)
    scores = TreeScores.build(context.data.dataset.hierarchy, context.data.classes)
    results = {}
    for prefix, group in (("forget", "forget_test"), ("retain", "retain_test")):
        values = hierarchical_scores(scores, leaf_predictions(model, embedded, group), embedded.targets[group].cpu())
        results.update({f"{prefix}_{KEYS[name]}": value for name, value in values.items()
                        if prefix == "forget" or name not in FORGET_ONLY})
    return results
