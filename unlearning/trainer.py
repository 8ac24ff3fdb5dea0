"""The unlearning trainer: any registered objective, driven by geoopt's Riemannian Adam."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Optional

import torch

from models.distributed import SINGLE, World, broadcast_object, check_divisible, gather_with_grad
from models.evaluation import embed_images, embed_texts
from models.streaming import image_batches
from models.training import TrainingLoop

from .data import Batch, Embeddings, UnlearningData
from .registry import create_objective


@dataclass
class UnlearningResult:
    """What happened during a run (the model itself is updated in place)."""

    steps: int
    seconds: float
    stopped_early: bool
    samples_per_second: float
    history: list = field(default_factory=list)  # per step: the objective's loss parts
    evaluations: list = field(default_factory=list)  # per evaluation: step + probe metrics


def unlearn(model, data: UnlearningData, objective, *, steps: Optional[int] = None,
            epochs: Optional[float] = None, lr: float = 1e-4, batch_size: int = 128,
            forget_fraction: float = 0.25, seed: int = 0, device=None, eval_every: Optional[int] = None,
            target_forget_accuracy: Optional[float] = None, target_retain_kept: Optional[float] = None,
            progress: bool = True,
            mixed_precision: Optional[bool] = None, world: Optional[World] = None,
            workers: Optional[int] = None) -> UnlearningResult:
    """Unlearn the pairs marked ``data.forget`` from ``model`` (in place).

    Parameters
    ----------
    objective:
        A registered objective instance, or its name (created with default options).
    steps, epochs:
        Length of the run: a number of optimiser steps, or of passes over the forget pairs
        (exactly one of the two).
    lr, batch_size:
        Riemannian Adam's step size (over *all* parameters: Euclidean weights on the Euclidean
        manifold, manifold-valued parameters on theirs) and the batch size.
    forget_fraction:
        Share of forget pairs in every batch (the rest are retain pairs).
    seed:
        Seeds batch sampling and mismatch choices: a CPU run is deterministic given the seed.
    eval_every, target_forget_accuracy, target_retain_kept:
        With ``data.probe``, measure zero-shot forget/retain accuracy every ``eval_every`` steps
        (and at step 0); stop at the first evaluation where the forget accuracy is at most
        ``target_forget_accuracy`` and — with ``target_retain_kept`` — the retain accuracy is at
        least that share of its value at step 0. The retain condition lets a run that forgets in its
        first steps, while the retain accuracy is still falling, go on until the retain accuracy has
        recovered (or the steps run out) instead of stopping at its worst moment.
    mixed_precision:
        bfloat16 autocast for the towers (the geometry stays in float32); default: on for CUDA.
    world, workers:
        The processes of a ``torchrun`` launch (:mod:`models.distributed`): ``batch_size`` is the
        global batch, each process embeds its slice, the objective sees the gathered batch, and the
        run is the single-process run whatever the number of processes. ``data.images`` may be a
        dataset of images read by ``workers`` data-loader processes (:mod:`models.streaming`).
    """
    if isinstance(objective, str):
        objective = create_objective(objective)
    objective.validate(model.geometry, model.config.name)
    if (steps is None) == (epochs is None):
        raise ValueError("unlearn() needs exactly one of steps= and epochs=")
    if not 0 < forget_fraction < 1:
        raise ValueError(f"forget_fraction must be in (0, 1), got {forget_fraction}")
    if target_retain_kept is not None and not 0 < target_retain_kept <= 1:
        raise ValueError(f"target_retain_kept must be in (0, 1], got {target_retain_kept}")
    forget_per_batch = max(1, round(batch_size * forget_fraction))
    retain_per_batch = max(1, batch_size - forget_per_batch)
    forget_pool, retain_pool = data.forget_indices, data.retain_indices
    if steps is None:
        steps = max(1, math.ceil(epochs * len(forget_pool) / forget_per_batch))

    world = world or SINGLE
    check_divisible(forget_per_batch + retain_per_batch, world.size)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device)

    torch.manual_seed(seed)
    schedule = batch_schedule(forget_pool, retain_pool, steps=steps, forget_per_batch=forget_per_batch,
                              retain_per_batch=retain_per_batch, seed=seed)
    original = None
    if objective.needs_original:  # before the first update: the model is still the original
        original = original_distances(model, data, torch.cat(schedule).unique(), world=world, workers=workers)
    loop = TrainingLoop(model.parameters(), lr=lr, device=device, mixed_precision=mixed_precision,
                        name=f"unlearning ({objective.name})", total_steps=steps, progress=progress,
                        description=f"unlearn {objective.name}", postfix=None, world=world)

    result = UnlearningResult(steps=0, seconds=0.0, stopped_early=False, samples_per_second=0.0)

    def evaluate(step) -> bool:
        metrics = {"step": step, **data.probe(model, world=world)}
        result.evaluations.append(metrics)
        loop.show(forget=f"{metrics['forget_accuracy']:.2f}", retain=f"{metrics['retain_accuracy']:.2f}")
        done = reached_targets(metrics, result.evaluations[0], target_forget_accuracy=target_forget_accuracy,
                               target_retain_kept=target_retain_kept)
        # Rank 0 decides for all: processes comparing their own floats with a threshold could
        # disagree, and one that stopped would leave the others waiting in their next all-reduce.
        return broadcast_object(done, world)

    def loss(batch: Batch) -> dict:
        embeddings = _embed(model, original, objective, batch, data, world)
        return objective.loss(embeddings, model.geometry, batch)

    evaluating = data.probe is not None and eval_every
    local_rows = [world.shard(rows) for rows in schedule]
    stream = image_batches(data.images, local_rows, device=device, workers=workers)
    began = time.perf_counter()  # wall clock: evaluations count too (samples_per_second)
    with loop, contextlib.closing(stream):  # closing the stream stops its data-loader workers
        if evaluating and evaluate(0):
            result.stopped_early = True
            steps = 0
        for step, rows, mine, images in zip(range(1, steps + 1), schedule, local_rows, stream):
            model.train_with_frozen_statistics()
            batch = Batch(images=images, tokens=data.tokens[mine].to(device), labels=data.labels[rows].to(device),
                          forget=data.forget[rows].to(device),
                          parents=data.class_parents[data.labels[rows]].to(device), rows=rows.to(device))
            result.history.append(loop.step(lambda: loss(batch)))
            result.steps = step
            if evaluating and step % eval_every == 0 and step < steps and evaluate(step):
                result.stopped_early = True
                break
    result.seconds = time.perf_counter() - began
    result.samples_per_second = result.steps * batch_size / max(result.seconds, 1e-9)
    model.eval()
    return result


def reached_targets(metrics: dict, start: dict, *, target_forget_accuracy: Optional[float],
                    target_retain_kept: Optional[float]) -> bool:
    """Whether an evaluation ``metrics`` ends the run: forget accuracy at most
    ``target_forget_accuracy`` and, with ``target_retain_kept``, retain accuracy at least
    ``target_retain_kept`` × the retain accuracy of the step-0 evaluation ``start``. No forget
    target: the run never ends early. A NaN accuracy (a probe with no image of the classes
    measured) meets no target, so such a run trains every step."""
    if target_forget_accuracy is None or not metrics["forget_accuracy"] <= target_forget_accuracy:
        return False
    return target_retain_kept is None or metrics["retain_accuracy"] >= target_retain_kept * start["retain_accuracy"]


def batch_schedule(forget_pool: torch.Tensor, retain_pool: torch.Tensor, *, steps: int, forget_per_batch: int,
                   retain_per_batch: int, seed: int) -> list:
    """The rows of every step's global batch, drawn before training: retain rows then forget rows,
    each pool cycled without replacement and reshuffled (seeded) when exhausted. Drawn up front,
    the batches depend on the seed alone — not on the number of processes, nor on when a data
    loader asks for them. ``-> [(retain_per_batch + forget_per_batch,) long tensor] * steps``"""
    generator = torch.Generator().manual_seed(seed)
    sample_forget = _Cycler(forget_pool, generator)
    sample_retain = _Cycler(retain_pool, generator)
    return [torch.cat([sample_retain(retain_per_batch), sample_forget(forget_per_batch)]) for _ in range(steps)]


@torch.no_grad()
def original_distances(model, data: UnlearningData, rows: torch.Tensor, *, world: World = SINGLE,
                       workers: Optional[int] = None) -> torch.Tensor:
    """Distances to the origin of the image and the caption of every pair in ``rows`` under
    ``model`` as it is now (eval mode), in one streaming pass shared by the processes of ``world``.
    ``-> (2, n_pairs)`` float32 on the model's device: row 0 images, row 1 captions; pairs not in
    ``rows`` (never drawn) are NaN.

    Why once: HAC's norm regularisation compares every embedding's distance to the origin with the
    original model's, and those numbers never change during a run. Embedding them up front, only
    for the pairs the run will draw, replaces a frozen copy of the model and its forward pass on
    every step (a third more compute per step) by one pass without gradient, and frees the copy's
    memory."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    table = torch.full((2, len(data.tokens)), float("nan"), device=device)
    images = embed_images(model, data.images, rows=rows, workers=workers, world=world)
    texts = embed_texts(model, data.tokens[rows], world=world)
    table[0, rows.to(device)] = model.geometry.dist0(images).float()
    table[1, rows.to(device)] = model.geometry.dist0(texts).float()
    model.train(was_training)
    return table


def _embed(model, original, objective, batch: Batch, data: UnlearningData, world: World) -> Embeddings:
    """The objective's view of the global batch: this process's slice embedded, every process's
    slices gathered (with gradients) in the order of the global batch; ``original`` is the table
    of :func:`original_distances` (or ``None``)."""
    embeddings = Embeddings(
        images=gather_with_grad(model.encode_image(batch.images), world),
        texts=gather_with_grad(model.encode_text(batch.tokens), world), scale=model.scale(),
    )
    if original is not None:
        embeddings.original_image_distances = original[0, batch.rows]
        embeddings.original_text_distances = original[1, batch.rows]
    if objective.needs_parent_prompts:
        if not data.parent_prompt_tokens:
            raise ValueError(f"objective {objective.name!r} needs parent prompts, but the data has none")
        # Anchors, not targets: the parent prompts are embedded by the current model without
        # gradient, so the term moves images into the parent's cone rather than the cone onto them.
        with torch.no_grad():
            parents = model.class_embeddings([t.to(batch.images.device) for t in data.parent_prompt_tokens])
        embeddings.parent_prompts = parents[batch.parents]
    return embeddings


class _Cycler:
    """Draw indices from a pool without replacement, reshuffling (seeded) once it is exhausted."""

    def __init__(self, pool: torch.Tensor, generator: torch.Generator):
        self.pool, self.generator = pool, generator
        self.queue = pool.new_empty(0)

    def __call__(self, count: int) -> torch.Tensor:
        while self.queue.numel() < count:
            order = torch.randperm(len(self.pool), generator=self.generator)
            self.queue = torch.cat([self.queue, self.pool[order]])
        taken, self.queue = self.queue[:count], self.queue[count:]
        return taken
