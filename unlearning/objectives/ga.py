"""GA: gradient ascent on the forget pairs."""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import TrainerDefaults, register_objective
from .terms import Objective, sub_batch_info_nce


@register_objective("ga", trainer_defaults=TrainerDefaults(lr=1e-5))
@dataclass
class GradientAscent(Objective):
    """GA: maximise the contrastive loss of the forget pairs (minimise its negative). Unbounded: it
    damages the whole model unless stopped early. No options."""

    def loss(self, embeddings, geometry, batch) -> dict:
        forget = sub_batch_info_nce(embeddings, geometry, batch.forget)
        return {"loss": -forget, "forget": forget}
