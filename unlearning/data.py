"""What an unlearning run consumes: training pairs split into forget/retain, and a zero-shot probe.

Everything here is tensors or image sources (a tensor, or a ``torch.utils.data.Dataset`` of images
read by data-loader workers: :mod:`models.streaming`), so that ``unlearning`` does not depend on any
dataset code; the benchmark harness builds these from its concept-labelled datasets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import torch

from models.evaluation import class_embeddings, embed_images, macro_accuracy, zero_shot_predictions


@dataclass
class ZeroShotProbe:
    """Held-out images and the zero-shot classes, to measure forgetting during a run.

    ``targets`` index ``class_prompt_tokens``; ``forget_classes`` are the indices of the classes
    being forgotten (their macro accuracy is ``forget_accuracy``, the rest give ``retain_accuracy``)."""

    images: object  # image source: (n, 3, H, W) in [0, 1], or a dataset of n images
    targets: torch.Tensor  # (n,) long
    class_prompt_tokens: List[torch.Tensor]  # per class: (n_prompts, context)
    forget_classes: Sequence[int]

    @torch.no_grad()
    def __call__(self, model, *, world=None) -> dict:
        """Forget and retain accuracy of ``model`` on the probe images (embedded in parts by the
        processes of ``world`` when given: every process must call it then)."""
        was_training = model.training
        model.eval()
        prototypes = class_embeddings(model, self.class_prompt_tokens)
        predictions = zero_shot_predictions(model, embed_images(model, self.images, world=world), prototypes)
        model.train(was_training)
        forget = set(int(k) for k in self.forget_classes)
        retain = [k for k in range(len(self.class_prompt_tokens)) if k not in forget]
        return {
            "forget_accuracy": macro_accuracy(predictions, self.targets, sorted(forget)),
            "retain_accuracy": macro_accuracy(predictions, self.targets, retain),
        }


@dataclass
class UnlearningData:
    """Training pairs of one unlearning problem.

    ``labels`` are class indices (leaf concepts); ``forget`` marks the pairs to forget (any number of
    concepts at once); ``class_parents[k]`` is the index, in ``parent_prompt_tokens``, of the parent
    concept of class ``k`` (used by sibling mismatches and the parent-cone term)."""

    images: object  # image source: (n, 3, H, W) in [0, 1], or a dataset of n images
    tokens: torch.Tensor  # (n, context)
    labels: torch.Tensor  # (n,) long
    forget: torch.Tensor  # (n,) bool
    class_parents: torch.Tensor  # (n_classes,) long
    parent_prompt_tokens: List[torch.Tensor] = field(default_factory=list)
    probe: Optional[ZeroShotProbe] = None

    def __post_init__(self):
        n = len(self.images)
        for name in ("tokens", "labels", "forget"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"UnlearningData.{name} has {len(getattr(self, name))} rows, expected {n} (one per image)")
        self.forget = self.forget.bool()
        if not self.forget.any():
            raise ValueError("UnlearningData: no pair is marked to forget")
        if self.forget.all():
            raise ValueError("UnlearningData: every pair is marked to forget; nothing would be retained")

    @property
    def forget_indices(self) -> torch.Tensor:
        return self.forget.nonzero().squeeze(1)

    @property
    def retain_indices(self) -> torch.Tensor:
        return (~self.forget).nonzero().squeeze(1)


@dataclass
class Batch:
    """One training batch: retain and forget pairs mixed (``forget`` marks the latter).

    ``labels``, ``forget`` and ``parents`` describe the whole (global) batch, row for row with the
    embeddings the objective sees; ``images`` and ``tokens`` are the rows this process embeds — all
    of them in a single process, its slice in a distributed run (:mod:`models.distributed`)."""

    images: torch.Tensor
    tokens: torch.Tensor
    labels: torch.Tensor
    forget: torch.Tensor  # (n,) bool
    parents: torch.Tensor  # (n,) parent index of each pair's class
    rows: Optional[torch.Tensor] = None  # (n,) each pair's row in the UnlearningData

    def to(self, device) -> "Batch":
        moved = (t if t is None else t.to(device) for t in (self.images, self.tokens, self.labels, self.forget,
                                                            self.parents, self.rows))
        return Batch(*moved)


@dataclass
class Embeddings:
    """What objectives see: the batch embedded by the model being unlearned, the contrastive scale
    ``s`` and, when an objective asks for them (``needs_original``), each pair's distances to the
    origin under the original model, before unlearning — computed once per run, not per step."""

    images: torch.Tensor  # (n, D)
    texts: torch.Tensor  # (n, D)
    scale: torch.Tensor  # ()
    original_image_distances: Optional[torch.Tensor] = None  # (n,): d(O, u_i) before unlearning
    original_text_distances: Optional[torch.Tensor] = None  # (n,): d(O, v_i) before unlearning
    parent_prompts: Optional[torch.Tensor] = None  # (n, D): the parent concept's prompt embedding per pair
