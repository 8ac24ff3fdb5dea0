"""Relabel: negative alignment calibration alone."""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import TrainerDefaults, register_objective
from .terms import Objective, alignment_calibration


@register_objective("relabel", trainer_defaults=TrainerDefaults(lr=1e-4))
@dataclass
class RandomRelabel(Objective):
    """Relabel: forget images get mismatched captions (negative calibration alone: AC with β = 0).

    Options:
        alpha: weight of the forget pairs' mismatched terms.
        mismatch: mismatch strategy (see :func:`unlearning.mismatch.mismatched_targets`)."""

    alpha: float = 1.0
    mismatch: str = "other-concept"

    def loss(self, embeddings, geometry, batch) -> dict:
        align = alignment_calibration(embeddings, geometry, batch, alpha=self.alpha, mismatch=self.mismatch)
        return {"loss": align, "align": align}
