"""Membership-inference audit (docs/SPEC.md section 5): a threshold attack on pair alignment.

The attacker scores a pair by how well the model aligns its image with its caption,
``geometry.similarity(u_i, v_i)`` (minus the geodesic distance for MERU, the cosine for CLIP), and
calls high scores "members". The audit reports the attack's AUC over every threshold, training
pairs (members) against held-out test pairs of the same concepts (non-members): 0.5 means the
alignment no longer reveals which pairs were trained on; values far from 0.5 in *either* direction
leak membership (an unlearned model that pushes its forget pairs far apart gives AUC < 0.5)."""

from __future__ import annotations

import torch

from .context import AuditContext, Embedded
from .metrics import auc
from .registry import Column, register_audit


@torch.no_grad()
def pair_scores(model, images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
    """The attack's score of each pair: the row-wise similarity of image ``i`` and caption ``i``."""
    if len(images) == 0:
        return images.new_zeros(0)
    return model.geometry.similarity(images, texts)


@register_audit("membership", columns=(Column("MIA AUC", "mia_auc"),))
@torch.no_grad()
def audit_membership(model, context: AuditContext, embedded: Embedded | None = None) -> dict:
    """``mia_auc`` (forget-train vs forget-test pairs) and ``retain_mia_auc`` (retain-train vs
    retain-test), plus the mean scores of each group (``mia_scores``)."""
    embedded = embedded or context.embed(model)
    scores = {group: pair_scores(model, embedded.images[group], embedded.texts[group])
              for group in ("forget_train", "forget_test", "retain_train", "retain_test")}
    return {
        "mia_auc": auc(scores["forget_train"], scores["forget_test"]),
        "retain_mia_auc": auc(scores["retain_train"], scores["retain_test"]),
        "mia_scores": {group: float(s.mean()) if s.numel() else float("nan") for group, s in scores.items()},
    }
