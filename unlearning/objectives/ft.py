"""FT: retain-only fine-tuning."""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import TrainerDefaults, register_objective
from .terms import Objective, sub_batch_info_nce


@register_objective("ft", trainer_defaults=TrainerDefaults(lr=1e-4))
@dataclass
class RetainFineTuning(Objective):
    """FT: fine-tune on the retain pairs only (the forget pairs of a batch are ignored); forgetting
    comes only from catastrophic interference. No options."""

    def loss(self, embeddings, geometry, batch) -> dict:
        retain = sub_batch_info_nce(embeddings, geometry, ~batch.forget)
        return {"loss": retain, "retain": retain}
