"""Audits of an (un)learned image–text model (docs/SPEC.md section 5), one module per family.

Every family is a function ``audit_<family>(model, context, embedded=None, **options) -> dict``
registered with ``@register_audit(name, columns=...)`` (:mod:`.registry`), returning
JSON-serialisable floats (nested dicts/lists where noted), and works on every geometry through the
model's geometry object only:

=============  ==========================================================================
family         keys
=============  ==========================================================================
zero_shot      forget_accuracy, retain_accuracy, parent_accuracy, retain_parent_accuracy
hierarchical   {forget|retain}_{tree_error, lca_depth, hierarchical_precision,
               hierarchical_recall, hierarchical_jaccard, sibling_rate, tree_error_uniform},
               forget_sibling_share
retrieval      recall {retain|forget: {image_to_text|text_to_image: {"1", "5", "10"}}}
alignment      alignment_matrix, alignment_groups, alignment_gap, retain_alignment_gap,
               alignment_gaps, alignment_matched, alignment_mismatched
membership     mia_auc, retain_mia_auc, mia_scores
probe          probe_forget_accuracy, probe_retain_accuracy, probe_train_accuracy
relearn        relearn_forget_accuracy, relearn_retain_accuracy, relearn_loss
geometry       forget_image_dist0, retain_image_dist0, forget_text_dist0, retain_text_dist0,
               forget_in_cone, retain_in_cone, forget_in_parent_cone, retain_in_parent_cone
hyperbolicity  curvature, image_scaled_dist0, text_scaled_dist0 (quantiles), their _median,
               tangent_rank_agreement, tangent_relative_gap, gromov_delta,
               gromov_delta_relative, hyperbolicity_sample_size
=============  ==========================================================================

>>> context = AuditContext.build(data, ["triangle"], seed=0, max_pairs_per_group=1000)
>>> results = run_audits(model, context)          # all families, one embedding pass
>>> results["forget_accuracy"], results["mia_auc"]
"""

from __future__ import annotations

import sys
import time
from typing import Iterable, Mapping, Optional

from .context import GROUPS, AuditContext, Embedded, embed_groups
from .metrics import auc, recall_at_k
from .registry import AUDIT_COLUMNS, AUDIT_FAMILIES, Column, headline_columns, register_audit

# Importing a family registers it; the order of these imports is the order run_audits runs them in
# and the order of the report's columns.
from .zero_shot import audit_zero_shot  # noqa: E402,I001
from .hierarchical import audit_hierarchical  # noqa: E402
from .retrieval import audit_retrieval  # noqa: E402
from .alignment import audit_alignment  # noqa: E402
from .membership import audit_membership  # noqa: E402
from .probe import audit_probe  # noqa: E402
from .relearn import audit_relearn  # noqa: E402
from .geometry import audit_geometry  # noqa: E402
from .hyperbolicity import audit_hyperbolicity  # noqa: E402


def run_audits(model, context: AuditContext, *, families: Optional[Iterable[str]] = None,
               options: Optional[Mapping[str, dict]] = None, progress: bool = False) -> dict:
    """Run the audit ``families`` (default: all of :data:`AUDIT_FAMILIES`) on ``model`` and merge
    their results into one dict. The four groups are embedded once (``context.embed``, cached);
    ``options`` maps a family name to keyword options of its function (e.g.
    ``{"relearn": {"steps": 50}}``). With ``progress``, one line per family goes to stderr."""
    if isinstance(families, str):
        families = [families]
    names = list(AUDIT_FAMILIES) if families is None else list(families)
    unknown = [name for name in names if name not in AUDIT_FAMILIES]
    if unknown:
        raise ValueError(f"unknown audit famil{'y' if len(unknown) == 1 else 'ies'} {', '.join(map(repr, unknown))}; "
                         f"expected some of {', '.join(AUDIT_FAMILIES)}")
    options = dict(options or {})
    stray = [name for name in options if name not in AUDIT_FAMILIES]
    if stray:
        raise ValueError(f"options given for unknown audit families {', '.join(map(repr, stray))}")
    began = time.perf_counter()
    embedded = context.embed(model)
    if progress:
        print(f"audit: embedded {sum(len(context.group(g)) for g in GROUPS)} pairs "
              f"in {time.perf_counter() - began:.1f} s", file=sys.stderr)
    results: dict = {}
    for name in names:
        started = time.perf_counter()
        part = AUDIT_FAMILIES[name](model, context, embedded, **options.get(name, {}))
        clash = sorted(set(part) & set(results))
        if clash:
            raise RuntimeError(f"audit family {name!r} repeats keys {clash}")
        results.update(part)
        if progress:
            print(f"audit: {name} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return results


__all__ = [
    "AUDIT_COLUMNS", "AUDIT_FAMILIES", "AuditContext", "Column", "Embedded", "GROUPS", "auc", "audit_alignment",
    "audit_geometry", "audit_hierarchical", "audit_hyperbolicity", "headline_columns", "register_audit",
    "audit_membership", "audit_probe", "audit_relearn", "audit_retrieval", "audit_zero_shot",
    "embed_groups", "recall_at_k", "run_audits",
]
