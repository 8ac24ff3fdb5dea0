"""Images in batches, from memory or streamed from disk by ``DataLoader`` worker processes.

Everything that feeds a model images — pretraining, unlearning, the audits — takes an *image
source*: either a tensor ``(n, 3, H, W)`` in ``[0, 1]`` (built-in data, small enough to hold), or a
map-style ``torch.utils.data.Dataset`` whose item ``i`` is image ``i`` as a uint8 ``(3, H, W)``
tensor (or float in ``[0, 1]``), decoded when asked for. Tensors are indexed directly; datasets are
read through a ``DataLoader`` whose workers decode and resize the next batches while the model
computes on this one, and whose uint8 batches travel to the device (pinned on CUDA) before they are
turned into floats there: a quarter of the bytes of float32.

The order of the rows never depends on the number of workers: batches come out exactly as asked.
"""

from __future__ import annotations

import os
from typing import Iterable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

#: Worker processes per data loader when not set: the CPUs this process may use, at most 8 (image
#: decoding rarely needs more to keep a GPU busy; more would compete with the main process).
MAX_DEFAULT_WORKERS = 8


def default_workers() -> int:
    """Data-loader worker processes by default: this process's CPUs, at most :data:`MAX_DEFAULT_WORKERS`,
    divided among the processes of a ``torchrun`` launch on this machine."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(MAX_DEFAULT_WORKERS, cpus // max(1, local_processes)))


def _as_float(batch: torch.Tensor, device) -> torch.Tensor:
    """A batch on ``device`` as float32 in ``[0, 1]`` (uint8 is converted after the transfer)."""
    batch = batch.to(device, non_blocking=True)
    return batch.float().div_(255.0) if batch.dtype == torch.uint8 else batch.float()


class _Rows:
    """A ``batch_sampler``: the given row batches, in order (lists, as ``DataLoader`` expects)."""

    def __init__(self, batches: Iterable[Sequence[int]]):
        self.batches = batches

    def __iter__(self):
        for rows in self.batches:
            yield [int(row) for row in rows]


def image_batches(images, batches: Iterable[Sequence[int]], *, device=None,
                  workers: int | None = None) -> Iterator[torch.Tensor]:
    """The images at each row batch of ``batches`` (row indices into ``images``), in order, as
    float32 ``(len(rows), 3, H, W)`` on ``device``. ``images`` is a tensor or a map-style dataset
    (see the module docstring); ``workers`` decode a dataset's images in parallel (default
    :func:`default_workers`; 0 decodes in this process)."""
    device = torch.device(device or "cpu")
    if isinstance(images, torch.Tensor):
        for rows in batches:
            yield images[torch.as_tensor(rows, dtype=torch.long)].to(device)
        return
    if not isinstance(images, Dataset):
        raise TypeError(f"images must be a tensor (n, 3, H, W) or a torch Dataset of images, got {type(images).__name__}")
    workers = default_workers() if workers is None else workers
    loader = DataLoader(images, batch_sampler=_Rows(batches), num_workers=workers,
                        pin_memory=device.type == "cuda", persistent_workers=False,
                        prefetch_factor=4 if workers else None)
    for batch in loader:
        yield _as_float(batch, device)


def chunks(count: int, size: int, start: int = 0) -> list:
    """``range(start, start + count)`` in consecutive chunks of at most ``size`` rows."""
    return [range(begin, min(begin + size, start + count)) for begin in range(start, start + count, size)]
