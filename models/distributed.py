"""Data parallelism over ``torch.distributed`` processes, with results that do not depend on how
many there are (docs/SPEC.md section 6).

The global batch is the setting. Every process draws the same global batch (same seeded sampler),
embeds its own contiguous slice of it, and the embeddings are gathered *with gradients* into the
global batch in its original order, so every contrastive or calibration loss sees all the
negatives a single process would see and has the same value on every process. Back-propagating
that same loss on every process gives each process ``world_size`` times the gradient of its own
slice (the all-gather's backward sums the gradients of all processes); averaging the gradients
over processes (:func:`average_gradients`) then gives exactly the single-process gradient, up to
the order of float additions. Data parallelism is done this way — one gathered loss and one
averaged gradient per step — rather than by wrapping the model in ``DistributedDataParallel``,
because the loss needs parameters outside the towers' ``forward`` (temperature, curvature,
feature scales) and the embeddings of the whole batch.

Started by ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ...):
:func:`init_from_environment` joins the process group (``nccl`` on CUDA, ``gloo`` on CPU); without
``torchrun`` everything here is the identity and costs nothing. Every function takes the world
explicitly (``None`` is a single process): a collective that one process skips would hang the rest,
so where a call is collective must be visible at the call.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterable, Sequence

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place among the processes of a run: ``rank`` in ``range(size)``."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def local_batch(self, global_batch: int) -> int:
        """This process's share of a global batch of ``global_batch`` pairs."""
        check_divisible(global_batch, self.size)
        return global_batch // self.size

    def shard(self, rows: Sequence) -> Sequence:
        """This process's contiguous slice of the global batch ``rows`` (equal slices, rank order)."""
        size = self.local_batch(len(rows))
        return rows[self.rank * size:(self.rank + 1) * size]


SINGLE = World()


def current_world() -> World:
    """The :class:`World` of this process: rank and size of the default process group, or a single
    process when none is initialised."""
    if dist.is_available() and dist.is_initialized():
        return World(rank=dist.get_rank(), size=dist.get_world_size())
    return SINGLE


def launched_by_torchrun() -> bool:
    """Whether the environment describes more than one process (``torchrun`` sets ``WORLD_SIZE``)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_environment(device: torch.device, *, timeout_minutes: float = 60.0) -> World:
    """Join the process group ``torchrun`` describes (once; later calls return the same world).

    ``nccl`` when ``device`` is CUDA — each process then uses GPU ``LOCAL_RANK`` — and ``gloo`` on
    CPU. The timeout bounds how long a collective waits for a slow process (a rank pretraining while
    the others wait at a barrier), so it is generous."""
    if not launched_by_torchrun() or not dist.is_available():
        return current_world()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=timedelta(minutes=timeout_minutes))
    return current_world()


def process_device(device: torch.device) -> torch.device:
    """The device this process computes on: its own GPU (``LOCAL_RANK``) under torchrun on CUDA."""
    if device.type == "cuda" and launched_by_torchrun():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def check_divisible(global_batch: int, world_size: int) -> None:
    """Refuse a global batch that the processes cannot split evenly (each would see another number
    of pairs, and the gathered batch would not be the single-process batch)."""
    if global_batch % world_size:
        raise ValueError(f"the global batch size {global_batch} must be divisible by the number of processes "
                         f"({world_size}); choose a batch size that is a multiple of {world_size}")


def gather_with_grad(tensor: torch.Tensor, world: World | None = None) -> torch.Tensor:
    """The slices of all processes concatenated in rank order, gradients flowing back to each
    slice: ``(n, ...) -> (world_size * n, ...)``. Every process must pass a slice of the same shape.
    The identity for a single process."""
    world = world or SINGLE
    if not world.distributed:
        return tensor
    return _AllGather.apply(tensor, world)


class _AllGather(torch.autograd.Function):
    """All-gather whose backward hands each process the sum, over all processes, of the gradient
    that reached its slice (every process back-propagates its own copy of the same loss)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, world: World) -> torch.Tensor:
        ctx.world = world
        parts = [torch.empty_like(tensor) for _ in range(world.size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, gradient: torch.Tensor):
        world = ctx.world
        gradient = gradient.contiguous()
        if dist.get_backend() == "nccl":
            mine = torch.empty_like(gradient.chunk(world.size)[world.rank])
            dist.reduce_scatter_tensor(mine, gradient)
            return mine, None
        dist.all_reduce(gradient)  # gloo has no reduce-scatter: sum everything, keep our slice
        return gradient.chunk(world.size)[world.rank].clone(), None


@torch.no_grad()
def gather_rows(tensor: torch.Tensor, world: World | None = None) -> torch.Tensor:
    """Rows of every process concatenated in rank order, when processes hold *different* numbers of
    rows (the last shard of an evaluation set): padded to the longest, gathered, trimmed. No
    gradient. ``(n_rank, ...) -> (sum of n_rank, ...)``."""
    world = world or SINGLE
    if not world.distributed:
        return tensor
    counts = [torch.zeros((), dtype=torch.long, device=tensor.device) for _ in range(world.size)]
    dist.all_gather(counts, torch.tensor(len(tensor), device=tensor.device))
    longest = int(max(counts))
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[:len(tensor)] = tensor
    parts = [torch.empty_like(padded) for _ in range(world.size)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:int(count)] for part, count in zip(parts, counts)])


def shard_range(count: int, world: World | None = None) -> slice:
    """This process's contiguous part of ``range(count)`` for sharded evaluation: the first
    ``count % size`` processes take one item more."""
    world = world or SINGLE
    base, extra = divmod(count, world.size)
    start = world.rank * base + min(world.rank, extra)
    return slice(start, start + base + (world.rank < extra))


@torch.no_grad()
def average_gradients(parameters: Iterable[torch.nn.Parameter], world: World | None = None) -> None:
    """Average every gradient over the processes, in place: one all-reduce per dtype and device of
    the flattened gradients (a handful of collectives per step, not one per tensor)."""
    world = world or SINGLE
    if not world.distributed:
        return
    groups: dict = {}
    for parameter in parameters:
        if parameter.grad is not None:
            groups.setdefault((parameter.grad.dtype, parameter.grad.device), []).append(parameter.grad)
    for gradients in groups.values():
        flat = torch.cat([g.reshape(-1) for g in gradients])
        dist.all_reduce(flat)
        flat.div_(world.size)
        offset = 0
        for g in gradients:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()


@torch.no_grad()
def broadcast_module(module: torch.nn.Module, world: World | None = None) -> None:
    """Rank 0's parameters and buffers on every process (models built from one seed agree anyway;
    this makes it so whatever happened before)."""
    world = world or SINGLE
    if not world.distributed:
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=0)


def broadcast_object(value, world: World | None = None):
    """Rank 0's ``value`` (any picklable object) on every process."""
    world = world or SINGLE
    if not world.distributed:
        return value
    holder = [value if world.is_main else None]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def barrier(world: World | None = None) -> None:
    """Wait until every process gets here (a no-op for a single process)."""
    world = world or SINGLE
    if world.distributed:
        dist.barrier()
