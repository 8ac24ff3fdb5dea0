"""Alignment Calibration (Wang et al., 2024) for image–text models."""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import TrainerDefaults, register_objective
from .terms import Objective, alignment_calibration, positive_calibration


@register_objective("ac", trainer_defaults=TrainerDefaults(lr=1e-4))
@dataclass
class AlignmentCalibration(Objective):
    r"""AC: :math:`L = L_{align} + \beta L_{pos}` (docs/SPEC.md section 4).

    Options:
        alpha: weight of the forget pairs' mismatched-caption InfoNCE terms in :math:`L_{align}`.
        beta: weight of positive calibration, the mean similarity of forget images with their own
            captions. Used as given (the AC code silently rescales it by :math:`|D_u|/|D|`; we do not).
        mismatch: where a forget image's mismatched caption comes from: ``other-concept`` (default),
            ``forget``, ``retain`` or ``sibling`` (see :func:`unlearning.mismatch.mismatched_targets`).

    Written against the geometry interface: on CLIP it is AC; on MERU it is the geometry-only
    ablation "AC on MERU" (equal to ``hac`` with ``entailment_weight = norm_weight = 0``)."""

    alpha: float = 1.0
    beta: float = 0.3
    mismatch: str = "other-concept"

    def loss(self, embeddings, geometry, batch) -> dict:
        align = alignment_calibration(embeddings, geometry, batch, alpha=self.alpha, mismatch=self.mismatch)
        positive = positive_calibration(embeddings, geometry, batch)
        return {"loss": align + self.beta * positive, "align": align, "positive": positive}
