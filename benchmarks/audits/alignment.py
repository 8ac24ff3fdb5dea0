"""Alignment audit (docs/SPEC.md section 5, after Alignment Calibration): the matrix of mean similarity
between the images and the captions of the four pair groups, and the matched-vs-mismatched gap."""

from __future__ import annotations

import numpy as np
import torch

from .context import GROUPS, AuditContext, Embedded, subsample
from .metrics import NAN, mean
from .registry import Column, register_audit


@torch.no_grad()
def mean_cross_similarity(model, images: torch.Tensor, texts: torch.Tensor, *, chunk: int = 1024) -> float:
    """Mean of ``geometry.csimilarity`` over every (image, caption) combination, in row chunks."""
    if len(images) == 0 or len(texts) == 0:
        return NAN
    total = 0.0
    for block in images.split(chunk):
        total += float(model.geometry.csimilarity(block, texts).double().sum())
    return total / (len(images) * len(texts))


@torch.no_grad()
def alignment_gap(model, images: torch.Tensor, texts: torch.Tensor, match_ids: torch.Tensor | None = None) -> dict:
    """Mean similarity of matched pairs (image ``i``, caption ``i``), of mismatched ones (image
    ``i``, caption ``j`` of another pair; interchangeable pairs, with equal ``match_ids``, are left
    out), and their difference ``gap`` (large: the pairs are still aligned)."""
    if len(images) == 0:
        return {"matched": NAN, "mismatched": NAN, "gap": NAN}
    matched = mean(model.geometry.similarity(images, texts))
    similarity = model.geometry.csimilarity(images, texts)
    if match_ids is None:
        match_ids = torch.arange(len(images), device=images.device)
    different = match_ids.view(-1, 1) != match_ids.view(1, -1)
    mismatched = mean(similarity[different])
    return {"matched": matched, "mismatched": mismatched, "gap": matched - mismatched}


@register_audit("alignment", columns=(Column("align gap", "alignment_gap"),))
@torch.no_grad()
def audit_alignment(model, context: AuditContext, embedded: Embedded | None = None, *,
                    max_pairs: int = 1000) -> dict:
    """- ``alignment_matrix``: ``{image group: {caption group: mean similarity}}`` over
      :data:`~benchmarks.audits.context.GROUPS` (diagonal blocks include the matched pairs);
    - ``alignment_groups``: the group names in matrix order;
    - ``alignment_gap`` (forget-train) and ``retain_alignment_gap`` (retain-train): matched minus
      mismatched mean similarity, and ``alignment_matched``/``alignment_mismatched`` per group.

    Both use at most ``max_pairs`` pairs of each group (a seeded subsample): a block costs
    ``max_pairs**2`` similarities."""
    embedded = embedded or context.embed(model)
    rows = {}
    for stream, group in enumerate(GROUPS):
        chosen = subsample(np.arange(len(embedded.images[group])), max_pairs, seed=context.seed, stream=200 + stream)
        rows[group] = torch.from_numpy(chosen).to(embedded.images[group].device)
    images = {group: embedded.images[group][rows[group]] for group in GROUPS}
    texts = {group: embedded.texts[group][rows[group]] for group in GROUPS}
    matrix = {g1: {g2: mean_cross_similarity(model, images[g1], texts[g2]) for g2 in GROUPS} for g1 in GROUPS}
    gaps = {group: alignment_gap(model, images[group], texts[group], embedded.match_ids[group][rows[group]])
            for group in GROUPS}
    return {
        "alignment_matrix": matrix,
        "alignment_groups": list(GROUPS),
        "alignment_gap": gaps["forget_train"]["gap"],
        "retain_alignment_gap": gaps["retain_train"]["gap"],
        "alignment_gaps": {group: gaps[group]["gap"] for group in GROUPS},
        "alignment_matched": {group: gaps[group]["matched"] for group in GROUPS},
        "alignment_mismatched": {group: gaps[group]["mismatched"] for group in GROUPS},
    }
