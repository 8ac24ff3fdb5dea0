"""Retrieval audit (docs/SPEC.md section 5): recall@{1,5,10}, image->text and text->image, within the
retain and within the forget test pairs, ranked by the model's pairwise similarity
(``geometry.csimilarity``: minus the geodesic distance for MERU, the cosine for CLIP)."""

from __future__ import annotations

import numpy as np
import torch

from .context import AuditContext, Embedded, subsample
from .metrics import recall_at_k
from .registry import register_audit

DEFAULT_KS = (1, 5, 10)


@torch.no_grad()
def group_recall(model, images: torch.Tensor, texts: torch.Tensor, match_ids: torch.Tensor | None = None,
                 ks=DEFAULT_KS) -> dict:
    """Recall@k within one gallery of pairs (row ``i`` of ``images`` matches row ``i`` of
    ``texts``; pairs with the same ``match_ids`` match each other, see
    :func:`~benchmarks.audits.metrics.recall_at_k`)."""
    similarity = model.geometry.csimilarity(images, texts) if len(images) else images.new_zeros(0, 0)
    return {
        "image_to_text": recall_at_k(similarity, ks, match_ids, match_ids),
        "text_to_image": recall_at_k(similarity.t(), ks, match_ids, match_ids),
    }


@register_audit("retrieval")
@torch.no_grad()
def audit_retrieval(model, context: AuditContext, embedded: Embedded | None = None, *,
                    max_gallery: int = 1000, ks=DEFAULT_KS) -> dict:
    """``recall``: ``{"retain"|"forget": {"image_to_text"|"text_to_image": {"1": .., "5": .., "10": ..}}}``
    on the test pairs of each group. Each group is its own gallery, capped at ``max_gallery``
    pairs (a seeded subsample: recall falls with gallery size, so compare runs at equal caps).
    Pairs sharing a caption string or an image file are interchangeable matches."""
    embedded = embedded or context.embed(model)
    recall = {}
    for name, group in (("retain", "retain_test"), ("forget", "forget_test")):
        rows = torch.from_numpy(subsample(np.arange(len(embedded.images[group])), max_gallery,
                                          seed=context.seed, stream=101))
        rows = rows.to(embedded.images[group].device)
        recall[name] = group_recall(model, embedded.images[group][rows], embedded.texts[group][rows],
                                    embedded.match_ids[group][rows], ks)
    return {"recall": recall}
