"""Small, geometry-free metric functions used by the audit families (numpy/scipy/torch only)."""

from __future__ import annotations

import math
from typing import Iterable, Optional

import numpy as np
import torch
from scipy.stats import rankdata

NAN = float("nan")


def as_float(value) -> float:
    """A plain Python float (``nan`` for an empty mean)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().float().cpu()
        return float(value) if value.numel() else NAN
    return float(value)


def mean(values: torch.Tensor) -> float:
    """Mean of a tensor as a float; ``nan`` when empty."""
    return as_float(values.float().mean()) if values.numel() else NAN


def auc(positive_scores, negative_scores) -> float:
    """Area under the ROC curve of the score as a detector of the positives: the Mann–Whitney
    probability that a random positive scores higher than a random negative, ties counting 1/2.

    1.0: every positive above every negative; 0.0: the reverse; 0.5: no separation. ``nan`` when
    either side is empty or a score is not finite."""
    pos = np.asarray(_numpy(positive_scores), dtype=np.float64).reshape(-1)
    neg = np.asarray(_numpy(negative_scores), dtype=np.float64).reshape(-1)
    if pos.size == 0 or neg.size == 0 or not (np.isfinite(pos).all() and np.isfinite(neg).all()):
        return NAN
    ranks = rankdata(np.concatenate([pos, neg]), method="average")
    u_statistic = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u_statistic / (pos.size * neg.size))


def recall_at_k(similarity: torch.Tensor, ks: Iterable[int] = (1, 5, 10),
                query_ids: Optional[torch.Tensor] = None, gallery_ids: Optional[torch.Tensor] = None) -> dict:
    """Recall@k of a retrieval whose query ``i`` should find gallery item ``i``.

    ``similarity`` is ``(n_queries, n_gallery)``, higher = more similar. With ``query_ids`` and
    ``gallery_ids`` every gallery item carrying the query's id is a correct answer (e.g. pairs
    with identical captions, whose caption embeddings are identical too); the diagonal always is.
    The rank of a query is the number of *wrong* items at least as similar as its best correct item
    (ties count against the query, so a collapsed embedding scores 0, not 1); it is a hit at ``k``
    when the rank is below ``k``. Returns ``{str(k): recall}``; ``nan`` for no queries."""
    n_queries, n_gallery = similarity.shape
    if n_queries > n_gallery:
        raise ValueError(f"recall_at_k: {n_queries} queries but only {n_gallery} gallery items")
    ks = [int(k) for k in ks]
    if n_queries == 0:
        return {str(k): NAN for k in ks}
    similarity = similarity.float()
    correct = torch.zeros_like(similarity, dtype=torch.bool)
    rows = torch.arange(n_queries, device=similarity.device)
    correct[rows, rows] = True
    if query_ids is not None and gallery_ids is not None:
        correct |= query_ids.view(-1, 1).to(similarity.device) == gallery_ids.view(1, -1).to(similarity.device)
    best_correct = similarity.masked_fill(~correct, -math.inf).max(dim=1, keepdim=True).values
    rank = ((similarity >= best_correct) & ~correct).sum(dim=1)
    rank = torch.where(torch.isfinite(best_correct.squeeze(1)), rank, n_gallery)  # NaN: a miss
    return {str(k): float((rank < k).float().mean()) for k in ks}


def _numpy(values):
    if isinstance(values, torch.Tensor):
        return values.detach().double().cpu().numpy()
    return values
