"""Zero-shot audit (docs/SPEC.md section 5): leaf-level accuracy on forget and retain test images, and
parent-level accuracy ("is a forgotten triangle still a polygon?")."""

from __future__ import annotations

import torch

from models.evaluation import macro_accuracy, zero_shot_predictions

from .context import AuditContext, Embedded
from .registry import Column, register_audit


@torch.no_grad()
def leaf_predictions(model, embedded: Embedded, group: str) -> torch.Tensor:
    """Zero-shot leaf class of every image of ``group`` among ALL leaf classes ``(n_group,)`` (CPU),
    computed once per embedding and kept in ``embedded.leaf_predictions``."""
    if group not in embedded.leaf_predictions:
        embedded.leaf_predictions[group] = zero_shot_predictions(model, embedded.images[group], embedded.classes)
    return embedded.leaf_predictions[group]


@torch.no_grad()
def leaf_accuracies(model, context: AuditContext, embedded: Embedded) -> dict:
    """``forget_accuracy`` (forget-test images, classified among ALL leaf classes, macro over the
    forgotten classes) and ``retain_accuracy`` (retain-test images, macro over retain classes)."""
    results = {}
    for key, group, classes in (("forget_accuracy", "forget_test", context.forget_classes),
                                ("retain_accuracy", "retain_test", context.retain_classes)):
        predictions = leaf_predictions(model, embedded, group)
        results[key] = macro_accuracy(predictions, embedded.targets[group].cpu(), classes)
    return results


@register_audit("zero_shot", columns=(Column("forget acc ↓", "forget_accuracy", "pct"), Column("retain acc ↑", "retain_accuracy", "pct"),
                                      Column("parent acc", "parent_accuracy", "pct")))
@torch.no_grad()
def audit_zero_shot(model, context: AuditContext, embedded: Embedded | None = None) -> dict:
    """Zero-shot accuracies (top-1, macro over classes; ``nan`` where a group has no image).

    - ``forget_accuracy``/``retain_accuracy``: see :func:`leaf_accuracies`;
    - ``parent_accuracy``: forget-test images classified among the parent-level concepts
      (``context.parent_concepts``: the parents of all leaf classes, a forgotten parent replaced by
      its own parent), scored against the reference parent of each image's leaf; macro over the
      forgotten leaf classes;
    - ``retain_parent_accuracy``: the same for retain-test images, macro over retain classes.
    """
    embedded = embedded or context.embed(model)
    results = leaf_accuracies(model, context, embedded)
    parent_of_class = torch.from_numpy(context.class_parent_index)
    for key, group, classes in (("parent_accuracy", "forget_test", context.forget_classes),
                                ("retain_parent_accuracy", "retain_test", context.retain_classes)):
        targets = embedded.targets[group].cpu()
        predicted_parent = zero_shot_predictions(model, embedded.images[group], embedded.parents)
        correct = predicted_parent == parent_of_class[targets]
        # Macro over leaf classes: a "prediction" equals the target exactly when the parent is right.
        results[key] = macro_accuracy(torch.where(correct, targets, -1), targets, classes)
    return results
