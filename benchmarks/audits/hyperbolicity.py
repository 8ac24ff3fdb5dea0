r"""Hyperbolicity audit (docs/SPEC.md section 5): how hyperbolic the learned embedding is, measured
the same way on every geometry through the model's geometry object.

- ``curvature``: ``c`` (the curvature is ``-c``; 0 when flat).
- Scaled radius ``√c·d₀(x)`` of the test images and captions, quantiles 5/25/50/75/95 %: radii in
  units of the curvature length ``1/√c``. Hyperbolic space is nearly flat within ``√c·d₀ ≲ 1`` and
  grows exponentially beyond, so these say which regime the embedding uses. For a flat geometry the
  curvature length is infinite and the scaled radius is 0 for every point: the analogue of "all
  points in the flat regime" (its plain radius is ``geometry`` audit's ``d₀``).
- Tangent-space agreement, on a fixed-seed sample of test images and captions (repeats once): the
  geodesic distances ``d(x, y)`` against the distances ``|log₀ x − log₀ y|`` after the log map at
  the origin (``geometry.unlift``), which would be the geometry if it were flat. Spearman's rank
  correlation of the two over all pairs, and the mean relative gap ``1 − |log₀ x − log₀ y| / d(x, y)``
  (in ``[0, 1)`` on a hyperbolic space, where the log map at a point never stretches distances).
  Flat geometries give 1 and 0 by construction (``unlift`` is the identity; for CLIP's unit
  embeddings ``cdist`` is the chordal distance of the ambient space).
- Gromov δ of the same sample (:func:`~benchmarks.audits.metrics.gromov_delta`, base point the first
  sampled point) and the scale-free ``2δ / diam`` (Khrulkov et al. 2020): 0 for a tree, small for
  tree-like data on a hyperbolic space, about 0.6 for the corners of a Euclidean square.
"""

from __future__ import annotations

import numpy as np
import torch

from .context import AuditContext, Embedded
from .metrics import NAN, gromov_delta, rank_correlation
from .registry import Column, register_audit

QUANTILES = (5, 25, 50, 75, 95)  # percent
SAMPLE_SIZE = 256  # points of the distance-based measures: 32,640 pairs, ~17 M triples for δ
SAMPLE_STREAM = 7  # the generator stream of the sample (context.subsample uses streams 0-3)
TEST_GROUPS = ("forget_test", "retain_test")
# Points closer than this fraction of the sample's diameter count as one point: repeats of one
# caption or image (embedded in different batches they differ in the last bits), whose distance is
# below what the pairwise geodesic distance resolves (its arccosh form is off by ~1e-6 to 1e-5 between
# nearby points within a few curvature lengths of the origin, in float64) and whose relative gap
# would be noise.
COINCIDENT = 1e-4


def scaled_radius(geometry, points: torch.Tensor) -> torch.Tensor:
    """``√c · dist0(x)`` ``(n, D) -> (n,)``: the distance to the origin in curvature lengths."""
    return geometry.c.sqrt() * geometry.dist0(points)


def quantiles(values: torch.Tensor, *, percents=QUANTILES) -> dict:
    """``{str(p): p-th percentile}`` of ``values`` (numpy's linear interpolation); ``nan`` when empty."""
    values = values.detach().double().cpu().numpy().reshape(-1)
    if values.size == 0:
        return {str(p): NAN for p in percents}
    return {str(p): float(q) for p, q in zip(percents, np.percentile(values, percents))}


def sample_rows(points: torch.Tensor, *, size: int, seed: int) -> torch.Tensor:
    """At most ``size`` rows of ``points`` ``(n, D)``, drawn without replacement by a generator
    seeded with ``seed``, in their original order: the draw depends on ``n`` only, so the same
    pairs are sampled before and after unlearning."""
    if len(points) <= size:
        return points
    rng = np.random.default_rng([seed, SAMPLE_STREAM])
    rows = np.sort(rng.choice(len(points), size=size, replace=False))
    return points[torch.from_numpy(rows).to(points.device)]


def separated(distances: torch.Tensor, *, resolution: float) -> torch.Tensor:
    """Which points to keep so that no two kept ones are within ``resolution`` of each other: each
    point in order, unless an earlier kept point is that close. ``(n, n) -> (n,)`` bool."""
    keep = torch.zeros(len(distances), dtype=torch.bool, device=distances.device)
    for row in range(len(distances)):
        keep[row] = not bool((distances[row, :row][keep[:row]] <= resolution).any())
    return keep


def on_manifold_float64(geometry, points: torch.Tensor) -> torch.Tensor:
    """``points`` in float64, rebuilt from their space components (the Lorentz time coordinate
    recomputed, so float32 rounding does not put them off the hyperboloid)."""
    return geometry.from_space(geometry.to_space(points.double()))


def geodesic_distances(geometry, points: torch.Tensor) -> torch.Tensor:
    """``geometry.cdist(points, points)`` ``(n, n)`` with an exact zero diagonal: the pairwise form's
    clamp off arccosh's end point puts about 1e-6 (float64) there, which would enter δ through the
    Gromov products ``(x|x)``."""
    distances = geometry.cdist(points, points)
    return distances.fill_diagonal_(0.0)


def upper_pairs(distances: torch.Tensor) -> torch.Tensor:
    """The entries ``i < j`` of a square matrix ``(n, n) -> (n(n-1)/2,)``, row by row."""
    rows, columns = torch.triu_indices(len(distances), len(distances), offset=1, device=distances.device)
    return distances[rows, columns]


def tangent_agreement(geometry, points: torch.Tensor) -> dict:
    """Geodesic vs tangent-space (log map at the origin) distances over all pairs of ``points``
    ``(n, D)`` (float64), coincident points (:data:`COINCIDENT`) counted once:

    - ``tangent_rank_agreement``: Spearman's correlation of the two over all pairs;
    - ``tangent_relative_gap``: the mean over pairs of ``1 − tangent/geodesic``;
    - ``gromov_delta``, ``gromov_delta_relative`` (``2δ/diam``) of the geodesic distances;
    - ``hyperbolicity_sample_size``: the points kept.

    ``nan`` where there is no pair (fewer than two distinct points)."""
    geodesic = geodesic_distances(geometry, points)
    if len(points):
        keep = separated(geodesic, resolution=COINCIDENT * float(geodesic.max()))
        points, geodesic = points[keep], geodesic[keep][:, keep]
    features = geometry.unlift(points)
    pair_geodesic = upper_pairs(geodesic)
    pair_tangent = upper_pairs(torch.cdist(features, features, compute_mode="donot_use_mm_for_euclid_dist"))
    if pair_geodesic.numel() == 0:
        return {"tangent_rank_agreement": NAN, "tangent_relative_gap": NAN, "gromov_delta": NAN,
                "gromov_delta_relative": NAN, "hyperbolicity_sample_size": len(points)}
    delta = gromov_delta(geodesic)
    return {"tangent_rank_agreement": rank_correlation(pair_geodesic, pair_tangent),
            "tangent_relative_gap": float((1.0 - pair_tangent / pair_geodesic).mean()),
            "gromov_delta": delta,
            "gromov_delta_relative": 2.0 * delta / float(pair_geodesic.max()),
            "hyperbolicity_sample_size": len(points)}


@register_audit("hyperbolicity", columns=(Column("c", "curvature"), Column("img √c·d₀ p50", "image_scaled_dist0_median"),
                                          Column("2δ/diam", "gromov_delta_relative")))
@torch.no_grad()
def audit_hyperbolicity(model, context: AuditContext, embedded: Embedded | None = None, *,
                        sample_size: int = SAMPLE_SIZE) -> dict:
    """- ``curvature``: ``c`` of the geometry (0 for Euclidean);
    - ``image_scaled_dist0`` / ``text_scaled_dist0``: ``{"5", "25", "50", "75", "95"}`` percentiles
      of ``√c·d₀`` of the test images / captions (forget-test and retain-test together), and
      ``image_scaled_dist0_median`` / ``text_scaled_dist0_median`` (the 50 % entries);
    - on at most ``sample_size`` test images and captions drawn with ``context.seed``:
      ``tangent_rank_agreement``, ``tangent_relative_gap``, ``gromov_delta``,
      ``gromov_delta_relative`` and ``hyperbolicity_sample_size`` (:func:`tangent_agreement`)."""
    if sample_size < 2:
        raise ValueError(f"sample_size must be at least 2 (pairs of points), got {sample_size}")
    embedded = embedded or context.embed(model)
    geometry = model.geometry
    results = {"curvature": float(geometry.c)}
    for modality, embeddings in (("image", embedded.images), ("text", embedded.texts)):
        points = torch.cat([embeddings[group] for group in TEST_GROUPS])
        spread = quantiles(scaled_radius(geometry, points))
        results[f"{modality}_scaled_dist0"] = spread
        results[f"{modality}_scaled_dist0_median"] = spread["50"]
    pooled = torch.cat([embeddings[group] for embeddings in (embedded.images, embedded.texts) for group in TEST_GROUPS])
    sample = on_manifold_float64(geometry, sample_rows(pooled, size=sample_size, seed=context.seed))
    results.update(tangent_agreement(geometry, sample))
    return results
