"""Loss pieces shared by pretraining and unlearning, written against the geometry interface."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce_rows(logits: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    r"""Per-row symmetric InfoNCE :math:`\ell_i`.

    ``logits`` is ``(n, n)`` with images as rows and captions as columns; ``targets[i]`` is the
    caption column that is image ``i``'s positive (default: ``i``). Row ``i`` of the result is
    ``(CE(logits[i], targets[i]) + CE(logits.T[targets[i]], i)) / 2``: the image-to-text term of
    image ``i`` and the text-to-image term of its positive caption. ``-> (n,)``"""
    n = logits.shape[0]
    rows = torch.arange(n, device=logits.device)
    targets = rows if targets is None else targets
    image_to_text = F.cross_entropy(logits, targets, reduction="none")
    text_to_image = F.cross_entropy(logits.t()[targets], rows, reduction="none")
    return 0.5 * (image_to_text + text_to_image)


def entailment_rows(geometry, general: torch.Tensor, specific: torch.Tensor, *, margin: float = 0.0) -> torch.Tensor:
    r"""Per-row cone violation :math:`\max(0, \operatorname{ext}(g, s) - \operatorname{aper}(g) + m)`:
    how far ``specific`` lies outside the entailment cone of ``general`` (the cones of ``geometry``,
    with its own minimum radius). ``(n, D), (n, D) -> (n,)``"""
    angle = geometry.oxy_angle(general, specific)
    aperture = geometry.half_aperture(general)
    return F.relu(angle - aperture + margin)
