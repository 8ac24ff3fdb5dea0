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


def rank_correlation(a, b) -> float:
    """Spearman's rank correlation of two equally long samples: the Pearson correlation of their
    ranks (ties get their average rank). ``nan`` for fewer than two values or a constant sample."""
    a = np.asarray(_numpy(a), dtype=np.float64).reshape(-1)
    b = np.asarray(_numpy(b), dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"rank_correlation needs samples of one length, got {a.size} and {b.size}")
    rank_a, rank_b = rankdata(a) - (a.size + 1) / 2.0, rankdata(b) - (b.size + 1) / 2.0
    scale = math.sqrt(float(rank_a @ rank_a) * float(rank_b @ rank_b))
    return float(rank_a @ rank_b / scale) if scale > 0 else NAN


def gromov_delta(distances: torch.Tensor, *, base: int = 0, chunk: int = 32) -> float:
    r"""Gromov's δ of a finite metric space at the base point ``w = base`` (Gromov 1987; the
    estimate of Khrulkov et al. 2020, "Hyperbolic Image Embeddings"):

    .. math:: \delta_w = \max_{x,y,z} \min\big((x|y)_w, (y|z)_w\big) - (x|z)_w, \qquad
              (x|y)_w = \tfrac12\big(d(x,w) + d(y,w) - d(x,y)\big).

    ``distances``: ``(n, n)`` symmetric, zero diagonal. 0 for a tree metric (e.g. points on one
    geodesic); the δ of the whole space lies in ``[δ_w, 2δ_w]``. The max-min product is evaluated
    ``chunk`` rows of ``x`` at a time (``(chunk, n, n)`` memory). ``nan`` for no points."""
    n = distances.shape[0]
    if distances.shape != (n, n):
        raise ValueError(f"gromov_delta needs a square distance matrix, got shape {tuple(distances.shape)}")
    if n == 0:
        return NAN
    to_base = distances[base]
    products = 0.5 * (to_base.view(-1, 1) + to_base.view(1, -1) - distances)
    delta = 0.0
    for start in range(0, n, chunk):
        rows = products[start:start + chunk]
        max_min = torch.minimum(rows.unsqueeze(2), products.unsqueeze(0)).amax(dim=1)  # over y
        delta = max(delta, float((max_min - rows).max()))
    return delta


def _numpy(values):
    if isinstance(values, torch.Tensor):
        return values.detach().double().cpu().numpy()
    return values
