"""Choice of mismatched captions for negative alignment calibration (docs/SPEC.md section 4)."""

from __future__ import annotations

import torch

STRATEGIES = ("other-concept", "forget", "retain", "sibling")


def mismatched_targets(labels: torch.Tensor, forget: torch.Tensor, parents: torch.Tensor, *,
                       strategy: str = "other-concept", generator: torch.Generator | None = None) -> torch.Tensor:
    """Caption column that each row treats as its positive: itself for retain rows, a mismatched
    caption from the batch for forget rows. ``(n,) -> (n,)``

    Strategies for forget row ``i``, drawn uniformly among the batch pairs that
    - ``other-concept``: depict a different concept (default);
    - ``forget``: are other forget pairs of a different concept (the AC code's choice);
    - ``retain``: are retain pairs of a different concept;
    - ``sibling``: depict a different concept with the same parent (keeps the parent meaning).
    A row with no candidate falls back to ``other-concept``, then to any other pair, then to itself."""
    if strategy not in STRATEGIES:
        raise ValueError(f"mismatch strategy must be one of {STRATEGIES}, got {strategy!r}")
    n = labels.shape[0]
    targets = torch.arange(n, device=labels.device)
    rows = forget.nonzero().squeeze(1)
    if rows.numel() == 0:
        return targets
    different = labels[rows, None] != labels[None, :]  # (|U|, n)
    allowed = {
        "other-concept": different,
        "forget": different & forget[None, :],
        "retain": different & ~forget[None, :],
        "sibling": different & (parents[rows, None] == parents[None, :]),
    }[strategy]
    not_self = torch.ones_like(different)
    not_self[torch.arange(rows.numel()), rows] = False
    keep_self = ~not_self
    for fallback in (different, not_self, keep_self):
        empty = ~allowed.any(dim=1)
        allowed = torch.where(empty[:, None], fallback, allowed)
    weights = allowed.float().cpu()
    choice = torch.multinomial(weights, 1, generator=generator).squeeze(1).to(labels.device)
    targets[rows] = choice
    return targets
