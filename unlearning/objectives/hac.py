"""Hyperbolic Alignment Calibration (Pujol Vidal et al., 2025): AC adapted to MERU."""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import TrainerDefaults, register_objective
from .ac import AlignmentCalibration
from .terms import norm_regularisation, own_cone_exit, parent_cone_entry, retain_entailment


@register_objective("hac", trainer_defaults=TrainerDefaults(lr=1e-4))
@dataclass
class HyperbolicAlignmentCalibration(AlignmentCalibration):
    r"""HAC: :math:`L = L_{align} + \beta L_{pos} + \lambda_E L_{EC} + \lambda_N L_{NR}` (docs/SPEC.md section 4).

    Options (besides AC's ``alpha``, ``beta``, ``mismatch``):
        entailment_weight: :math:`\lambda_E`, weight of entailment calibration
            :math:`L_{EC}` = ``own_cone_weight`` · (forget images out of their caption's cone, margin
            ``cone_margin``) + ``parent_cone_weight`` · (forget images into their parent concept's
            prompt cone) + ``retain_entailment_weight`` · (MERU's entailment loss on retain pairs).
        norm_weight: :math:`\lambda_N`, weight of norm regularisation: squared change of every
            embedding's distance to the origin against the frozen original model.
    Each weight can be set to 0 for ablations; with ``entailment_weight = norm_weight = 0`` this is
    exactly ``ac`` (AC on MERU). The cones' minimum radius K is the model geometry's own
    (``ModelConfig.min_radius``), the one its pretraining and the geometry audit use. Refuses a
    flat geometry."""

    entailment_weight: float = 1.0
    norm_weight: float = 1.0
    own_cone_weight: float = 1.0
    parent_cone_weight: float = 0.0
    retain_entailment_weight: float = 1.0
    cone_margin: float = 0.0

    requires_hyperbolic = True

    @property
    def needs_original(self) -> bool:
        return self.norm_weight != 0

    @property
    def needs_parent_prompts(self) -> bool:
        return self.entailment_weight != 0 and self.parent_cone_weight != 0

    def loss(self, embeddings, geometry, batch) -> dict:
        parts = super().loss(embeddings, geometry, batch)
        loss = parts["loss"]
        if self.entailment_weight:
            entailment = self.own_cone_weight * own_cone_exit(
                embeddings, geometry, batch, margin=self.cone_margin
            ) + self.retain_entailment_weight * retain_entailment(embeddings, geometry, batch)
            if self.parent_cone_weight:
                entailment = entailment + self.parent_cone_weight * parent_cone_entry(embeddings, geometry, batch)
            parts["entailment"] = entailment
            loss = loss + self.entailment_weight * entailment
        if self.norm_weight:
            parts["norm"] = norm_regularisation(embeddings, geometry)
            loss = loss + self.norm_weight * parts["norm"]
        parts["loss"] = loss
        return parts


@register_objective("hac-parent", trainer_defaults=TrainerDefaults(lr=1e-4))
@dataclass
class ParentConeHAC(HyperbolicAlignmentCalibration):
    """HAC with the parent-cone term on: a forgotten "triangle" is pulled into the cone of the
    "polygon" prompt, so it should stop being a triangle but stay a polygon (mismatches are drawn
    from sibling concepts by default for the same reason)."""

    parent_cone_weight: float = 1.0
    mismatch: str = "sibling"
