"""The one optimisation step of every trainer: pretraining, unlearning, the relearning attack and
the linear probe all run :class:`TrainingLoop.step` inside their own loops.

The step owns what the four loops share (Riemannian Adam, the per-step learning rate, mixed
precision, backward and update, an optional gradient clip, the non-finite guard, timing and the
progress bar); each caller keeps its specifics around it (batches, checkpoints and resuming,
early stopping). Same seeds give the same losses bit for bit on CPU: the step draws no random
numbers and does exactly what the loops did before they shared it, in the same order.

>>> loop = TrainingLoop(model.parameters(), lr=1e-3, device=device, total_steps=100)
>>> with loop:
...     for _ in range(100):
...         values = loop.step(lambda: model.pretraining_loss(images, tokens))
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Callable, Iterable, Optional

import geoopt
import torch
from tqdm.auto import tqdm

from .distributed import SINGLE, World, average_gradients


def autocast(device, *, enabled: Optional[bool] = None):
    """The mixed-precision context of a training step on ``device``: bfloat16 autocast (the towers
    run in bfloat16, the geometry upcasts itself to float32, see :mod:`manifolds.precision`) when
    ``enabled``, else nothing. ``enabled`` defaults to on for CUDA and off for CPU, where bfloat16
    is slow and would make CPU runs differ from the float32 reference."""
    device = torch.device(device)
    if enabled is None:
        enabled = device.type == "cuda"
    if enabled:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def loss_postfix(values: dict) -> dict:
    """The progress bar's default postfix: the step's loss to three decimals."""
    return {"loss": f"{values['loss']:.3f}"}


def decays(parameter: torch.nn.Parameter) -> bool:
    """Whether weight decay applies to ``parameter``: a matrix or kernel (two or more dimensions)
    on a flat manifold. Shrinking a point of the hyperboloid towards zero would leave the manifold."""
    manifold = getattr(parameter, "manifold", None)
    return parameter.ndim >= 2 and (manifold is None or isinstance(manifold, geoopt.Euclidean))


class TrainingLoop:
    """Riemannian Adam steps over ``parameters`` (Euclidean weights on the Euclidean manifold,
    ``ManifoldParameter``s on theirs), one :meth:`step` per call.

    Options (all keyword-only):

    ``lr``, ``schedule``
        The step size; ``schedule(step)`` (``step`` = steps taken so far, 0 for the first) overrides
        it before every step (pretraining's warm-up and cosine decay).
    ``device``, ``mixed_precision``
        Where the loss is computed; bfloat16 autocast around it, by default on CUDA only
        (:func:`autocast`).
    ``weight_decay``
        Decoupled weight decay (AdamW's): before each update every matrix and kernel (a parameter
        of two or more dimensions on a flat manifold) shrinks by ``lr · weight_decay`` of itself;
        gains, biases, scalars (temperature, curvature, scales) and points of curved manifolds are
        left alone. 0 (the default) changes nothing.
    ``max_grad_norm``
        Clip the gradients' total norm to this before each update; ``None`` (the default, and what
        every trainer uses) leaves them alone.
    ``check_finite``, ``name``
        Raise :class:`FloatingPointError` naming ``name`` and the step when the loss is NaN or
        infinite (a diverged run must not be saved or reported as a result).
    ``total_steps``, ``start_step``, ``seconds``
        The run's length (for the progress bar), and the steps and training seconds already done
        when resuming.
    ``progress``, ``description``, ``postfix``
        A tqdm bar labelled ``description``, updated every step with ``postfix(values)`` (``None``:
        no per-step postfix; :meth:`show` sets one). Only rank 0 of a distributed run shows it.
    ``world``
        The processes of a data-parallel run (:mod:`models.distributed`): each step's gradients are
        averaged over them before the update. The loss must be the same on every process (computed
        from gathered embeddings); then the update is the single-process update.

    Use it as a context manager (or call :meth:`close`) so that the bar is closed on errors too.
    """

    def __init__(self, parameters: Iterable[torch.nn.Parameter], *, lr: float, device=None,
                 schedule: Optional[Callable[[int], float]] = None, mixed_precision: Optional[bool] = None,
                 weight_decay: float = 0.0, max_grad_norm: Optional[float] = None, check_finite: bool = True, name: str = "training",
                 total_steps: Optional[int] = None, start_step: int = 0, seconds: float = 0.0,
                 progress: bool = True, description: str = "",
                 postfix: Optional[Callable[[dict], dict]] = loss_postfix, world: Optional[World] = None):
        parameters = list(parameters)
        self.optimizer = geoopt.optim.RiemannianAdam(parameters, lr=lr)
        if not (weight_decay >= 0 and math.isfinite(weight_decay)):
            raise ValueError(f"weight decay must be a finite number >= 0, got {weight_decay}")
        self.weight_decay = weight_decay
        self.decayed = [p for p in parameters if weight_decay and decays(p)]
        self.world = world or SINGLE
        self.device = torch.device("cpu" if device is None else device)
        self.schedule, self.mixed_precision, self.max_grad_norm = schedule, mixed_precision, max_grad_norm
        self.check_finite, self.name, self.postfix = check_finite, name, postfix
        self.steps, self.seconds = start_step, seconds
        self.bar = tqdm(total=total_steps, initial=start_step, desc=description,
                        disable=not (progress and self.world.is_main), dynamic_ncols=True)

    def step(self, compute_loss: Callable[[], dict]) -> dict:
        """One update: set the learning rate, compute ``compute_loss()`` (a dict of scalar tensors)
        under mixed precision, back-propagate its ``"loss"``, (clip,) update. Returns every loss
        part as a Python float. Raises :class:`FloatingPointError` when the loss is not finite (after the update, as the
        loops always did: the run stops there and nothing of it is kept)."""
        began = time.perf_counter()
        if self.schedule is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = self.schedule(self.steps)
        with autocast(self.device, enabled=self.mixed_precision):
            parts = compute_loss()
        self.optimizer.zero_grad(set_to_none=True)
        parts["loss"].backward()
        average_gradients(self._parameters(), self.world)
        if self.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self._parameters(), self.max_grad_norm)
        if self.decayed:
            shrink = 1.0 - self.optimizer.param_groups[0]["lr"] * self.weight_decay
            with torch.no_grad():
                for parameter in self.decayed:
                    parameter.mul_(shrink)
        self.optimizer.step()
        self.steps += 1
        values = {name: float(value.detach()) for name, value in parts.items()}
        self.seconds += time.perf_counter() - began
        if self.check_finite and not math.isfinite(values["loss"]):
            raise FloatingPointError(f"{self.name} loss became {values['loss']} at step {self.steps}")
        self.bar.update(1)
        if self.postfix is not None:
            self.bar.set_postfix(self.postfix(values))
        return values

    def show(self, **fields) -> None:
        """Show ``fields`` (already formatted) after the progress bar, e.g. evaluation metrics."""
        self.bar.set_postfix(fields)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> "TrainingLoop":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _parameters(self) -> list:
        return [p for group in self.optimizer.param_groups for p in group["params"]]
