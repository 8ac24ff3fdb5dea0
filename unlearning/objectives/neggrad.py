"""NegGrad+: descent on retain pairs, ascent on forget pairs."""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import TrainerDefaults, register_objective
from .terms import Objective, sub_batch_info_nce


@register_objective("neggrad+", trainer_defaults=TrainerDefaults(lr=5e-5))
@dataclass
class NegGradPlus(Objective):
    r"""NegGrad+: :math:`L_{retain} - \gamma L_{forget}`, each the InfoNCE of its own sub-batch.

    Options:
        gamma: weight of the ascent term."""

    gamma: float = 0.2

    def loss(self, embeddings, geometry, batch) -> dict:
        retain = sub_batch_info_nce(embeddings, geometry, ~batch.forget)
        forget = sub_batch_info_nce(embeddings, geometry, batch.forget)
        return {"loss": retain - self.gamma * forget, "retain": retain, "forget": forget}
