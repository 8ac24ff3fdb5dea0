"""Loss terms shared by the objectives (docs/SPEC.md section 4), each a function of embeddings, geometry and
a batch. Geometry differences live in the geometry object: ``csimilarity``/``similarity`` are the
cosine for CLIP and ``-distance`` for MERU, ``dist0`` and the cone functions likewise."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.losses import entailment_rows, info_nce_rows

from ..data import Batch, Embeddings
from ..mismatch import mismatched_targets


@dataclass
class Objective:
    """Base of all objectives: class-level requirements and the geometry check."""

    needs_original = False  # each pair's distances to the origin under the model before unlearning
    needs_parent_prompts = False  # embed each pair's parent-concept prompts
    requires_hyperbolic = False

    def validate(self, geometry, model_name: str = "model") -> None:
        if self.requires_hyperbolic and not geometry.hyperbolic:
            raise ValueError(
                f"objective {self.name!r} needs a hyperbolic model such as MERU, but "
                f"{model_name!r} is flat ({type(geometry).__name__}); use 'ac' for CLIP"
            )

    def loss(self, embeddings: Embeddings, geometry, batch: Batch) -> dict:
        raise NotImplementedError


def batch_logits(embeddings: Embeddings, geometry, rows=None) -> torch.Tensor:
    """``s · sim(u_i, v_j)`` over the batch (or the sub-batch ``rows``): ``(n, n)``."""
    images, texts = embeddings.images, embeddings.texts
    if rows is not None:
        images, texts = images[rows], texts[rows]
    return embeddings.scale * geometry.csimilarity(images, texts)


def sub_batch_info_nce(embeddings: Embeddings, geometry, rows: torch.Tensor) -> torch.Tensor:
    """Mean symmetric InfoNCE restricted to the pairs ``rows`` (their own captions as positives)."""
    if not rows.any():
        return embeddings.images.new_zeros(())
    return info_nce_rows(batch_logits(embeddings, geometry, rows)).mean()


def alignment_calibration(embeddings: Embeddings, geometry, batch: Batch, *, alpha: float,
                          mismatch: str) -> torch.Tensor:
    r"""Negative alignment calibration (AC's α term):
    :math:`(\sum_R \ell_i + \alpha \sum_U \ell_i^{mismatched}) / (|R| + \alpha |U|)`."""
    targets = mismatched_targets(batch.labels, batch.forget, batch.parents, strategy=mismatch)
    rows = info_nce_rows(batch_logits(embeddings, geometry), targets)
    weights = torch.where(batch.forget, torch.full_like(rows, alpha), torch.ones_like(rows))
    return (weights * rows).sum() / weights.sum()


def positive_calibration(embeddings: Embeddings, geometry, batch: Batch) -> torch.Tensor:
    r"""Positive alignment calibration (AC's β term): :math:`\operatorname{mean}_U sim(u_i, v_i)`."""
    forget = batch.forget
    if not forget.any():
        return embeddings.images.new_zeros(())
    return geometry.similarity(embeddings.images[forget], embeddings.texts[forget]).mean()


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return values[mask].mean() if mask.any() else values.new_zeros(())


def own_cone_exit(embeddings: Embeddings, geometry, batch: Batch, *, margin: float) -> torch.Tensor:
    r"""Forget images out of their caption's cone: :math:`\operatorname{mean}_U \max(0, aper(v_i) - ext(v_i, u_i) + m)`
    (the geometry's cones, with its own minimum radius, as everywhere)."""
    angle = geometry.oxy_angle(embeddings.texts, embeddings.images)
    aperture = geometry.half_aperture(embeddings.texts)
    return _masked_mean(torch.relu(aperture - angle + margin), batch.forget)


def parent_cone_entry(embeddings: Embeddings, geometry, batch: Batch) -> torch.Tensor:
    r"""Forget images into their parent concept's cone: :math:`\operatorname{mean}_U \max(0, ext(p_i, u_i) - aper(p_i))`."""
    rows = entailment_rows(geometry, embeddings.parent_prompts, embeddings.images)
    return _masked_mean(rows, batch.forget)


def retain_entailment(embeddings: Embeddings, geometry, batch: Batch) -> torch.Tensor:
    """MERU's entailment loss on the retain pairs (captions keep entailing their images)."""
    rows = entailment_rows(geometry, embeddings.texts, embeddings.images)
    return _masked_mean(rows, ~batch.forget)


def norm_regularisation(embeddings: Embeddings, geometry) -> torch.Tensor:
    r""":math:`\operatorname{mean}_i (d(O, u_i) - d(O, u_i^{orig}))^2` + the same for the texts; the
    original distances come with the embeddings (computed once per run by the trainer)."""
    image_term = (geometry.dist0(embeddings.images) - embeddings.original_image_distances).pow(2).mean()
    text_term = (geometry.dist0(embeddings.texts) - embeddings.original_text_distances).pow(2).mean()
    return image_term + text_term
