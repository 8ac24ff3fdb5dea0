"""Geometry audit (docs/SPEC.md section 5): distances to the origin and entailment-cone membership
(the curvature and how hyperbolic the embedding is: :mod:`.hyperbolicity`).

Everything goes through the model's geometry object, so the same code measures MERU (geodesic
distance, hyperbolic cones) and CLIP (Euclidean norms — 1 for its unit embeddings — and Euclidean
cones, Ganea et al. 2018, whose numbers are given for symmetry but carry little meaning there)."""

from __future__ import annotations

import torch

from .context import AuditContext, Embedded
from .metrics import NAN, mean
from .registry import Column, register_audit


@torch.no_grad()
def in_cone(geometry, apex: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Whether each ``points[i]`` lies in the entailment cone of ``apex[i]`` (rows broadcast):
    ``oxy_angle(apex, point) <= half_aperture(apex)``, with the geometry's own minimum radius (the
    one the model was trained and unlearned with). ``-> (n,)`` bool."""
    return geometry.oxy_angle(apex, points) <= geometry.half_aperture(apex)


def cone_fraction(geometry, apex: torch.Tensor, points: torch.Tensor) -> float:
    """Fraction of ``points`` inside the cone of their ``apex`` (``nan`` for no points)."""
    if len(points) == 0:
        return NAN
    return mean(in_cone(geometry, apex, points))


@register_audit("geometry", columns=(Column("forget img d₀", "forget_image_dist0"), Column("retain img d₀", "retain_image_dist0"),
                                     Column("forget in cone", "forget_in_cone", "pct")))
@torch.no_grad()
def audit_geometry(model, context: AuditContext, embedded: Embedded | None = None) -> dict:
    """- ``forget_image_dist0``, ``retain_image_dist0``, ``forget_text_dist0``,
      ``retain_text_dist0``: mean ``geometry.dist0`` of the test images / captions;
    - ``forget_in_cone`` / ``retain_in_cone``: fraction of test images inside their own caption's
      cone; ``forget_in_parent_cone`` / ``retain_in_parent_cone``: inside the cone of the zero-shot
      embedding of the reference parent concept of their leaf (``context.reference_parent``)."""
    embedded = embedded or context.embed(model)
    geometry = model.geometry
    parent_of_class = torch.from_numpy(context.class_parent_index).to(embedded.parents.device)
    results = {}
    for prefix, group in (("forget", "forget_test"), ("retain", "retain_test")):
        images, texts = embedded.images[group], embedded.texts[group]
        results[f"{prefix}_image_dist0"] = mean(geometry.dist0(images)) if len(images) else NAN
        results[f"{prefix}_text_dist0"] = mean(geometry.dist0(texts)) if len(texts) else NAN
        results[f"{prefix}_in_cone"] = cone_fraction(geometry, texts, images)
        parents = embedded.parents[parent_of_class[embedded.targets[group]]]
        results[f"{prefix}_in_parent_cone"] = cone_fraction(geometry, parents, images)
    return results
