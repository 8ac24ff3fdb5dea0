"""A dataset's images as an image source for the models (:mod:`models.streaming`): read from
disk on demand by data-loader workers, never all at once.

:func:`image_source` gives the images of some pairs of a :class:`ConceptDataset`: for built-in
in-memory data the float tensor itself (small, and exactly what the models always saw), for
file-backed data a :class:`PairImages` view whose items are decoded by ``load_pixels`` when a
``DataLoader`` worker asks for them. Memory then stays bounded by the batches in flight, whatever
the size of the corpus.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from .base import ConceptDataset


class PairImages(Dataset):
    """Item ``k``: the uint8 image ``(3, s, s)`` of pair ``indices[k]`` of ``dataset``, decoded now.

    Picklable and free of open files, so that worker processes (forked or spawned) can read it."""

    def __init__(self, dataset: ConceptDataset, indices=None):
        self.dataset = dataset
        self.indices = np.arange(len(dataset)) if indices is None else np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> torch.Tensor:
        return self.dataset.load_pixels(int(self.indices[position]))

    def __repr__(self) -> str:
        return f"PairImages({self.dataset.name!r}, {len(self)} pairs)"


def image_source(dataset: ConceptDataset, indices):
    """The images of the pairs ``indices`` (in that order) as an image source: a float tensor
    ``(n, 3, s, s)`` for in-memory data, a :class:`PairImages` view for file-backed data."""
    if dataset.in_memory:
        return dataset.images(indices)
    return PairImages(dataset, indices)
