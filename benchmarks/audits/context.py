"""What every audit shares: the forget/retain split of one problem and the embeddings of a model.

An :class:`AuditContext` fixes the four pair groups of an unlearning problem — forget-train,
forget-test, retain-train, retain-test (docs/SPEC.md section 3) — optionally subsampled to bound the cost.
:meth:`AuditContext.embed` embeds those groups with a model once (batched, no gradient, eval mode)
and caches the result as an :class:`Embedded`, so that several audit families share one pass over
the images. The cache is keyed on the model object *and* on the in-place version counters of its
parameters and buffers: a model unlearned in place (or given new weights with ``load_state_dict``)
is embedded again, never served stale embeddings.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
import torch

from benchmarks.common import EncodedDataset
from models.distributed import SINGLE, World
from models.evaluation import class_embeddings, embed_images, embed_texts

#: The four pair groups, in the order used by the alignment matrix.
GROUPS = ("forget_train", "forget_test", "retain_train", "retain_test")


@dataclass
class Embedded:
    """One model's embeddings of the audit groups (all on the model's device, float32).

    ``images[g]``/``texts[g]``: ``(n_g, D)`` image and caption embeddings of group ``g`` (row ``i``
    is pair ``context.<g>[i]``); ``targets[g]``: leaf class of each pair; ``match_ids[g]``: pairs
    that share a caption string or an image file (COCO's five captions per image) share an id, and
    count as interchangeable matches in retrieval and alignment; ``classes``: zero-shot
    embeddings of the leaf classes ``(n_classes, D)``; ``parents``: zero-shot embeddings of
    ``context.parent_concepts`` ``(n_parents, D)``; ``leaf_predictions[g]``: the zero-shot leaf class
    of each image of group ``g`` ``(n_g,)`` on the CPU, filled on first use by
    :func:`benchmarks.audits.zero_shot.leaf_predictions` (the families that read them share one
    classification)."""

    images: Dict[str, torch.Tensor]
    texts: Dict[str, torch.Tensor]
    targets: Dict[str, torch.Tensor]
    match_ids: Dict[str, torch.Tensor]
    classes: torch.Tensor
    parents: torch.Tensor
    leaf_predictions: Dict[str, torch.Tensor] = field(default_factory=dict, repr=False)


@dataclass
class AuditContext:
    """The data side of an audit: the dataset, what is forgotten, and the four pair groups.

    ``forget_concepts`` are the concepts as given (leaves or inner concepts); ``forget_classes``
    the indices into ``data.classes`` of the leaf classes they cover (a leaf is forgotten when it
    or one of its ancestors is a forget concept). The pair-index arrays come from
    ``dataset.split_forget_retain`` on the train and the test split."""

    data: EncodedDataset
    forget_concepts: List[str]
    forget_classes: List[int]
    forget_train: np.ndarray
    retain_train: np.ndarray
    forget_test: np.ndarray
    retain_test: np.ndarray
    seed: int = 0
    world: World = SINGLE  # processes that share the embedding work (every one must call embed then)
    _cache: list = field(default_factory=list, repr=False, compare=False)

    # ------------------------------------------------------------------------------ building
    @classmethod
    def build(cls, data: EncodedDataset, forget_concepts: Sequence[str], seed: int = 0,
              max_pairs_per_group: Optional[int] = None, world: World = SINGLE) -> "AuditContext":
        """Split ``data`` for ``forget_concepts`` (one name or several).

        ``max_pairs_per_group`` keeps at most that many pairs of each group, chosen at random with
        a generator seeded by ``seed`` (and the group), in ascending index order: the same
        arguments always give the same groups."""
        if isinstance(forget_concepts, str):
            forget_concepts = [forget_concepts]
        forget_concepts = list(forget_concepts)
        dataset = data.dataset
        forget_train, retain_train = dataset.split_forget_retain(forget_concepts, "train")
        forget_test, retain_test = dataset.split_forget_retain(forget_concepts, "test")
        hierarchy = dataset.hierarchy
        wanted = set(forget_concepts)
        forget_classes = [k for k, leaf in enumerate(data.classes)
                          if not wanted.isdisjoint(hierarchy.closure([leaf]))]
        groups = {"forget_train": forget_train, "forget_test": forget_test,
                  "retain_train": retain_train, "retain_test": retain_test}
        if max_pairs_per_group is not None:
            if max_pairs_per_group < 1:
                raise ValueError(f"max_pairs_per_group must be a positive integer, got {max_pairs_per_group}")
            groups = {name: subsample(indices, max_pairs_per_group, seed=seed, stream=k)
                      for k, (name, indices) in enumerate(groups.items())}
        return cls(data=data, forget_concepts=forget_concepts, forget_classes=forget_classes,
                   seed=seed, world=world, **groups)

    # ----------------------------------------------------------------------------- concepts
    @property
    def retain_classes(self) -> List[int]:
        forget = set(self.forget_classes)
        return [k for k in range(len(self.data.classes)) if k not in forget]

    def group(self, name: str) -> np.ndarray:
        """Pair indices of group ``name`` (one of :data:`GROUPS`)."""
        if name not in GROUPS:
            raise KeyError(f"unknown audit group {name!r}; expected one of {', '.join(GROUPS)}")
        return getattr(self, name)

    def is_forgotten(self, concept: str) -> bool:
        """Whether ``concept`` is a forget concept or lies below one."""
        closure = self.data.dataset.hierarchy.closure([concept])
        return not closure.isdisjoint(self.forget_concepts)

    def reference_parent(self, leaf: str) -> str:
        """The parent-level concept a forgotten image should still belong to: the leaf's parent,
        or — when that parent is itself forgotten (an inner forget concept) — the nearest ancestor
        outside the forgotten subtree ("a forgotten triangle is still a polygon"; "a forgotten
        polygon is still a shape"). A parentless leaf is its own reference."""
        hierarchy = self.data.dataset.hierarchy
        node = hierarchy.parent_of(leaf)
        while node is not None and self.is_forgotten(node):
            node = hierarchy.parent_of(node)
        return leaf if node is None else node

    @property
    def parent_concepts(self) -> List[str]:
        """The parent-level classes: the reference parents of all leaf classes, sorted."""
        return sorted({self.reference_parent(leaf) for leaf in self.data.classes})

    @property
    def class_parent_index(self) -> np.ndarray:
        """For each leaf class, the position of its reference parent in :attr:`parent_concepts`."""
        position = {p: k for k, p in enumerate(self.parent_concepts)}
        return np.array([position[self.reference_parent(leaf)] for leaf in self.data.classes], dtype=np.int64)

    # ----------------------------------------------------------------------------- embedding
    def embed(self, model, *, cache: bool = True) -> Embedded:
        """Embeddings of the four groups and the zero-shot classes under ``model`` (cached)."""
        key = _weights_version(model)
        for ref, version, embedded in self._cache:
            if ref() is model and version == key:
                return embedded
        embedded = embed_groups(model, self)
        if cache:
            self._cache[:] = [(weakref.ref(model), key, embedded)]
        return embedded


def subsample(indices: np.ndarray, limit: int, *, seed: int = 0, stream: int = 0) -> np.ndarray:
    """At most ``limit`` of ``indices``, drawn without replacement from a seeded generator, sorted."""
    indices = np.asarray(indices)
    if len(indices) <= limit:
        return indices
    rng = np.random.default_rng([seed, stream])
    return np.sort(rng.choice(indices, size=limit, replace=False))


def _weights_version(model) -> tuple:
    """Changes whenever a parameter or buffer of ``model`` is modified in place (optimiser steps,
    ``load_state_dict``) or replaced."""
    tensors = list(model.parameters()) + list(model.buffers())
    return tuple((id(t), t._version) for t in tensors)


@torch.no_grad()
def embed_groups(model, context: AuditContext, groups: Sequence[str] = GROUPS, *, texts: bool = True) -> Embedded:
    """Embed ``groups`` of ``context`` with ``model`` in eval mode (restored afterwards)."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        data = context.data
        images, text_embeddings, targets, match_ids = {}, {}, {}, {}
        for name in groups:
            indices = context.group(name)
            # Streamed in batches (a group of a large corpus at 224 px would not fit in memory as one
            # tensor) and, in a distributed run, split between the processes.
            images[name] = embed_images(model, data.image_source(indices), world=context.world)
            if texts:
                text_embeddings[name] = embed_texts(model, data.tokens[torch.from_numpy(indices)], world=context.world)
            targets[name] = torch.from_numpy(data.targets[indices]).to(device)
            match_ids[name] = torch.from_numpy(_match_ids(data.dataset, indices)).to(device)
        parent_tokens = [data.concept_prompt_tokens(p) for p in context.parent_concepts]
        return Embedded(
            images=images, texts=text_embeddings, targets=targets, match_ids=match_ids,
            classes=class_embeddings(model, data.prompt_tokens),
            parents=class_embeddings(model, parent_tokens),
        )
    finally:
        model.train(was_training)


def _match_ids(dataset, indices: np.ndarray) -> np.ndarray:
    """One id per group of interchangeable pairs among ``indices``: the connected components of
    "same caption string or same image file" (in-memory images are each their own)."""
    n = len(indices)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    captions = np.asarray([dataset.captions[i] for i in indices], dtype=str)
    files = np.asarray([dataset.image_path(i) or f"#{i}" for i in indices], dtype=str)
    _, caption_node = np.unique(captions, return_inverse=True)
    _, file_node = np.unique(files, return_inverse=True)
    # A graph of pairs, captions and files; each pair links to its caption and to its file.
    pairs = np.arange(n)
    rows = np.concatenate([pairs, pairs])
    columns = np.concatenate([n + caption_node, n + caption_node.max() + 1 + file_node])
    size = n + caption_node.max() + 1 + file_node.max() + 1
    graph = coo_matrix((np.ones(2 * n), (rows, columns)), shape=(size, size))
    _, component = connected_components(graph, directed=False)
    return np.unique(component[:n], return_inverse=True)[1].astype(np.int64)
