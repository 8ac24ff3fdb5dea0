"""Pretrain a MERU or CLIP model from scratch with Riemannian Adam.

    python -m benchmarks.pretrain --geometry lorentz --dataset shapes --out runs/pretrained/meru.pt

Checkpoints are written atomically every ``--checkpoint-every`` steps, every
``--checkpoint-minutes`` of training and at the end; rerunning the same command resumes an
interrupted run bit for bit (and returns at once for a finished one). MERU's entailment term is
warmed up from 0 over the first quarter of training (``entailment_weight_at``). On a GPU the towers
run in bfloat16 autocast; the geometry and the losses stay in float32. Errors a user can fix are
reported in one line with exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import sys
import time
from pathlib import Path
from typing import Iterator

import geoopt
import numpy as np
import torch

import models
from manifolds import geometry_names, geometry_spec, geometry_specs
from models.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from models.distributed import (SINGLE, World, barrier, broadcast_module, check_divisible, init_from_environment,
                                process_device)
from models.streaming import image_batches
from models.training import TrainingLoop

from .augmentation import Augmentation
from .common import EncodedDataset, on_main, resolve_device
from .datasets import DatasetError, list_datasets, load_dataset, validate_images
from .locks import LockBusy, hold_lock



def default_model(geometry: str) -> str:
    """The named config pretrained by default for ``geometry`` (``meru-tiny``, ``clip-tiny``, ...)."""
    return geometry_spec(geometry).default_model


#: The default recipe (chosen by measurement: README, "Measured defaults"). Training length is set
#: in passes over the train split, with a floor for small datasets, so that a small dataset is not
#: seen fifty times over (it would be memorised) and a large one is not cut short.
DEFAULT_RECIPE = {"epochs": 16, "min_steps": 200, "batch_size": 128, "lr": 1e-3, "warmup": 100,
                  "weight_decay": 0.1, "augmentation": Augmentation().as_dict()}


def default_settings(train_pairs: int, *, epochs: float | None = None) -> dict:
    """The default pretraining settings for a train split of ``train_pairs`` pairs: ``steps`` for
    ``epochs`` passes (default ``DEFAULT_RECIPE["epochs"]``) at the default batch size, at least
    ``min_steps``; step size, warm-up, weight decay and augmentation of :data:`DEFAULT_RECIPE`."""
    if train_pairs < 1:
        raise ValueError(f"pretraining needs at least one train pair, got {train_pairs}")
    recipe = dict(DEFAULT_RECIPE)
    epochs = recipe.pop("epochs") if epochs is None else epochs
    min_steps = recipe.pop("min_steps")
    if not epochs > 0:
        raise ValueError(f"pretraining epochs must be positive, got {epochs}")
    steps = max(min_steps, math.ceil(epochs * train_pairs / recipe["batch_size"]))
    return {"steps": steps, **recipe}


def default_entailment_warmup(steps: int) -> int:
    """The entailment warm-up of a ``steps``-long schedule: its first quarter."""
    return steps // 4


def entailment_weight_at(step: int, *, full: float, warmup: int) -> float:
    """The entailment term's weight at ``step``: 0 at the start, rising linearly to ``full`` at
    ``warmup`` (no warm-up when ``warmup`` is 0).

    Why: on random initial embeddings MERU's entailment loss is large (about 2.5 rad: captions sit
    at random angles to their images) and its cheapest descent is to pull every caption inside the
    cones' minimum radius, where the cone is widest. Measured on ``shapes``: with the full weight
    from step 0 the captions' mean distance to the origin fell from 0.98 to 0.20 in 25 steps, the
    text tower's outputs collapsed before the contrastive term had built any structure, and whether
    a run escaped (zero-shot 97%) or not (9%, chance 8%) was decided by the CPU's rounding. Warmed
    up, the contrastive term shapes the embedding first and every seed learns (``tests``)."""
    if warmup <= 0:
        return full
    return full * min(1.0, step / warmup)


def learning_rate(step: int, *, base: float, warmup: int, total: int) -> float:
    """Linear warm-up, then cosine decay to 5% of ``base``."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def load_optimizer_state(optimizer: geoopt.optim.RiemannianAdam, state: dict) -> None:
    """``optimizer.load_state_dict(state)``, keeping each parameter's step count a Python int.

    ``torch.optim.Adam.__setstate__`` (which geoopt's RiemannianAdam inherits) turns the counts into
    float32 tensors; geoopt then computes ``1 - beta ** step`` in float32 instead of float64 and a
    resumed run drifts from an uninterrupted one by rounding errors."""
    optimizer.load_state_dict(state)
    for parameter_state in optimizer.state.values():
        if torch.is_tensor(parameter_state.get("step")):
            parameter_state["step"] = int(parameter_state["step"].item())


def _check_resumable(path, payload: dict, model, settings: dict) -> None:
    """Refuse to resume (or to reuse as finished) a checkpoint of another model or schedule."""
    stored = payload["config"]
    if stored != model.config.to_dict():
        raise CheckpointError(f"checkpoint {path}: holds pretraining of {stored.get('name')!r}, not of "
                              f"{model.config.name!r} with this config; delete it or choose another --out")
    stored = payload.get("train_state", {}).get("settings")
    if stored is not None and stored != settings:
        changed = ", ".join(f"{k} {stored.get(k)} -> {v}" for k, v in settings.items() if stored.get(k) != v)
        raise CheckpointError(f"checkpoint {path}: was trained with other settings ({changed}); delete it or "
                              "choose another --out")


def check_schedule(*, steps: int, batch_size: int, lr: float, warmup: int, entailment_warmup: int) -> None:
    """Refuse a schedule that cannot train, naming the setting (a ``ValueError``)."""
    for name, value, low in (("steps", steps, 1), ("batch size", batch_size, 1), ("warmup", warmup, 0),
                             ("entailment warm-up", entailment_warmup, 0)):
        if value < low:
            raise ValueError(f"pretraining {name} must be at least {low}, got {value}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"pretraining learning rate must be a positive number, got {lr}")


def check_splits(data: EncodedDataset) -> tuple:
    """The train and test rows of ``data``; a :class:`DatasetError` when either split is empty
    (pretraining learns from train pairs and reports zero-shot accuracy on test pairs)."""
    dataset = data.dataset
    rows = {split: dataset.indices(split) for split in ("train", "test")}
    for split, indices in rows.items():
        if len(indices) == 0:
            raise DatasetError(f"dataset {dataset.name!r} has no {split} pairs; pretraining needs both "
                               "splits (give some pairs \"split\": \"train\" and some \"split\": \"test\")")
    return rows["train"], rows["test"]


def batch_stream(count: int, batch_size: int, *, seed: int, start_step: int = 0) -> Iterator[torch.Tensor]:
    """Global batches of positions in ``range(count)``, from batch ``start_step`` on, forever.

    The batches are consecutive chunks of one stream of permutations (one per epoch) drawn from a
    generator seeded with ``seed``; a batch may straddle two epochs. The stream depends on nothing
    else — not on the number of processes or data-loader workers — and a resumed run recomputes
    where it was from ``start_step`` alone."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.empty(0, dtype=torch.long)
    step = 0
    while True:
        while order.numel() < batch_size:
            order = torch.cat([order, torch.randperm(count, generator=generator)])
        batch, order = order[:batch_size], order[batch_size:]
        if step >= start_step:
            yield batch
        step += 1


class _Timed:
    """An iterator that adds up the time spent waiting for its items (data loading, here)."""

    def __init__(self, iterator):
        self.iterator, self.seconds = iterator, 0.0

    def __iter__(self):
        return self

    def __next__(self):
        began = time.perf_counter()
        item = next(self.iterator)
        self.seconds += time.perf_counter() - began
        return item


def pretrain(model, data: EncodedDataset, *, steps: int, batch_size: int, lr: float, warmup: int = 100,
             entailment_warmup: int | None = None, weight_decay: float = 0.0, augmentation: dict | None = None,
             seed: int = 0, device=None,
             checkpoint: str | Path | None = None, checkpoint_every: int = 200,
             checkpoint_seconds: float = 600.0, metadata: dict | None = None, progress: bool = True,
             world: World | None = None, workers: int | None = None,
             train_rows: np.ndarray | None = None) -> dict:
    """Train ``model`` on the train split of ``data`` with the model's pretraining loss.

    ``entailment_warmup`` (default: a quarter of ``steps``) is how many steps MERU's entailment
    weight takes to rise from 0 to its config value (:func:`entailment_weight_at`). ``weight_decay``
    is AdamW's decoupled decay of the towers' matrices (:class:`models.training.TrainingLoop`);
    ``augmentation`` the options of an :class:`~benchmarks.augmentation.Augmentation` applied to
    every training batch (``None``: none). Returns a summary
    dict (steps, seconds, final loss, zero-shot accuracy on the test split, data-loading wait). With
    ``checkpoint`` set, training state is saved there atomically every ``checkpoint_every`` steps, at
    least every ``checkpoint_seconds`` of training, and at the end; a rerun resumes from it bit for bit.

    ``batch_size`` is the global batch. With ``world`` (a ``torchrun`` launch), every process takes
    its slice of each global batch and the loss is computed on the gathered batch, so the run is
    the single-process run whatever the number of processes (:mod:`models.distributed`); only rank 0
    writes the checkpoint. File-backed images are decoded by ``workers`` data-loader processes.

    ``train_rows`` (default: the whole train split) restricts training to those pairs of the train
    split: the retrain oracle learns from the retain pairs only."""
    world = world or SINGLE
    if entailment_warmup is None:
        entailment_warmup = default_entailment_warmup(steps)
    check_schedule(steps=steps, batch_size=batch_size, lr=lr, warmup=warmup, entailment_warmup=entailment_warmup)
    check_divisible(batch_size, world.size)
    train, test = check_splits(data)
    if train_rows is not None:  # a non-empty part of the train split: an empty one would never yield a batch
        if len(train_rows) == 0 or not np.isin(train_rows, train).all():
            raise ValueError(f"train_rows must be a non-empty subset of the train split of {data.dataset.name!r}, "
                             f"got {len(train_rows)} row(s)")
        train = np.asarray(train_rows)
    device = torch.device(device or "cpu")
    model.to(device)
    torch.manual_seed(seed)
    start, elapsed, history, optimizer_state = 0, 0.0, [], None
    if model.config.text.compact_vocabulary:  # a fresh model learns the words of this dataset
        try:
            model.build_vocabulary(torch.cat([data.tokens, *data.prompt_tokens]))
        except ValueError as error:
            raise DatasetError(f"dataset {data.dataset.name!r}: {error}") from None

    augment = Augmentation(**augmentation) if augmentation is not None else None
    settings = {"steps": steps, "batch_size": batch_size, "lr": lr, "warmup": warmup,
                "entailment_warmup": entailment_warmup, "seed": seed}
    if weight_decay or augment is not None:  # the settings of older checkpoints, which had neither
        settings.update(weight_decay=weight_decay, augmentation=augment and augment.as_dict())
    if checkpoint is not None and Path(checkpoint).exists():
        payload = read_checkpoint(checkpoint)
        state = payload.get("train_state", {})
        _check_resumable(checkpoint, payload, model, settings)
        model.load_state_dict(payload["state_dict"])
        if state.get("finished"):
            return payload["metadata"]["pretraining"]
        optimizer_state = state["optimizer"]
        start, elapsed, history = state["step"], state["seconds"], state["history"]
    broadcast_module(model, world)

    images, tokens = data.image_source(train), data.tokens[train]
    local_rows, loader_rows = itertools.tee(
        world.shard(batch) for batch in batch_stream(len(train), batch_size, seed=seed, start_step=start))
    stream = image_batches(images, loader_rows, device=device, workers=workers)
    batches = _Timed(zip(local_rows, stream))

    loop = TrainingLoop(model.parameters(), lr=lr, device=device, name="pretraining",
                        schedule=lambda step: learning_rate(step, base=lr, warmup=warmup, total=steps),
                        total_steps=steps, start_step=start, seconds=elapsed, progress=progress,
                        description=f"pretrain {model.config.name}", world=world, weight_decay=weight_decay)
    if optimizer_state is not None:
        load_optimizer_state(loop.optimizer, optimizer_state)

    def save(finished, summary=None):
        if checkpoint is None or not world.is_main:
            return
        meta = dict(metadata or {})
        if summary is not None:
            meta["pretraining"] = summary
        save_checkpoint(
            checkpoint, model, meta,
            train_state={"step": loop.steps, "finished": finished, "seconds": loop.seconds, "history": history,
                         "settings": settings, "optimizer": loop.optimizer.state_dict()},
        )

    model.train()
    saved_at = loop.seconds
    with loop, contextlib.closing(stream):  # closing the stream stops its data-loader workers
        while loop.steps < steps:
            rows, batch_images = next(batches)
            if augment is not None:
                batch_images = augment.apply(batch_images, world.shard(augment.draw(batch_size, seed=seed,
                                                                                    step=loop.steps)))
            weight = entailment_weight_at(loop.steps, full=model.config.entailment_weight, warmup=entailment_warmup)
            values = loop.step(lambda: model.pretraining_loss(batch_images, tokens[rows].to(device),
                                                              entailment_weight=weight, world=world))
            history.append(values["loss"])
            if loop.steps < steps and (loop.steps % checkpoint_every == 0
                                       or loop.seconds - saved_at >= checkpoint_seconds):
                save(finished=False)
                saved_at = loop.seconds

    model.eval()
    summary = {
        "steps": steps,
        "epochs": round(steps * batch_size / len(train), 2),
        "seconds": round(loop.seconds, 1),
        "initial_loss": float(np.mean(history[:10])) if history else float("nan"),
        "final_loss": float(np.mean(history[-20:])) if history else float("nan"),
        **pretraining_quality(model, data, train, test, world=world),
        "curvature": model.geometry.c.item(),
        "world_size": world.size,
        "data_wait_seconds_per_step": round(batches.seconds / max(1, steps - start), 4),
    }
    save(finished=True, summary=summary)
    return summary


QUALITY_SAMPLE = 2000  # train pairs embedded for the probe and the membership attack


@torch.no_grad()
def pretraining_quality(model, data: EncodedDataset, train: np.ndarray, test: np.ndarray, *,
                        world: World | None = None) -> dict:
    """How good and how general a pretrained model is, from one embedding pass over the test pairs
    and a fixed sample of at most :data:`QUALITY_SAMPLE` train pairs:

    ``zero_shot_accuracy``
        macro zero-shot leaf accuracy on the test images;
    ``linear_probe_accuracy``
        a prototype probe (:func:`benchmarks.audits.probe.train_probe`) fitted to the sampled train
        image embeddings, on the test images: what the image side alone knows;
    ``zero_shot_to_probe``
        their ratio: how much of it the text side reaches (1 = all);
    ``membership_auc``
        the audit's threshold attack on pair alignment, train pairs against test pairs
        (:mod:`benchmarks.audits.membership`): 0.5 = the model does not tell them apart, near 1 = it
        memorised its training pairs."""
    from models.evaluation import class_embeddings, embed_images, embed_texts, macro_accuracy, zero_shot_predictions

    from .audits.membership import pair_scores
    from .audits.metrics import auc
    from .audits.probe import train_probe

    sample = np.sort(np.random.default_rng(0).permutation(train)[:QUALITY_SAMPLE])
    embedded = {name: (embed_images(model, data.image_source(rows), world=world),
                       embed_texts(model, data.tokens[rows], world=world), torch.from_numpy(data.targets[rows]))
                for name, rows in (("train", sample), ("test", test))}
    (train_images, train_texts, train_targets), (test_images, test_texts, test_targets) = embedded.values()
    zero_shot = macro_accuracy(zero_shot_predictions(model, test_images, class_embeddings(model, data.prompt_tokens)),
                               test_targets)
    with torch.enable_grad():
        probe = train_probe(model.geometry, train_images, train_targets.to(train_images.device), len(data.classes))
    probe_accuracy = macro_accuracy(probe(test_images.float()).argmax(dim=1).cpu(), test_targets)
    return {
        "zero_shot_accuracy": zero_shot,
        "linear_probe_accuracy": probe_accuracy,
        "zero_shot_to_probe": zero_shot / probe_accuracy if probe_accuracy > 0 else float("nan"),
        "membership_auc": auc(pair_scores(model, train_images, train_texts).cpu(),
                              pair_scores(model, test_images, test_texts).cpu()),
    }


def describe_summary(what: str, summary: dict) -> str:
    """One line about a pretraining ``summary`` (older summaries lack the probe and the attack)."""
    line = f"{what}: zero-shot leaf accuracy {summary['zero_shot_accuracy']:.1%}"
    if "linear_probe_accuracy" in summary:
        line += (f" (linear probe {summary['linear_probe_accuracy']:.1%}, ratio {summary['zero_shot_to_probe']:.2f};"
                 f" membership AUC {summary['membership_auc']:.3f})")
    epochs = f", {summary['epochs']:g} epochs" if "epochs" in summary else ""
    return (line + f" after {summary['steps']} steps{epochs} ({summary['seconds']:.0f} s of training, "
            f"{summary.get('world_size', 1)} process(es))")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pretrain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--geometry", choices=geometry_names(), default="lorentz",
                        help=", ".join(f"{spec.name} = {spec.display_name}" for spec in geometry_specs())
                        + " (default: %(default)s)")
    parser.add_argument("--model", default=None, help="model config name (default: "
                        + " / ".join(spec.default_model for spec in geometry_specs()) + ")")
    parser.add_argument("--dataset", default="shapes", help="a built-in dataset (" + ", ".join(list_datasets()) + ") or a dataset folder")
    parser.add_argument("--out", default=None, help="checkpoint file (default: runs/pretrained/<model>-<dataset>-seed<seed>.pt)")
    parser.add_argument("--epochs", type=float, default=None,
                        help=f"passes over the train split (default: {DEFAULT_RECIPE['epochs']}, and at least "
                        f"{DEFAULT_RECIPE['min_steps']} steps)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (overrides --epochs)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help=f"pairs per step (default: {DEFAULT_RECIPE['batch_size']})")
    parser.add_argument("--lr", type=float, default=None,
                        help=f"peak learning rate (default: {DEFAULT_RECIPE['lr']})")
    parser.add_argument("--weight-decay", type=float, default=None,
                        help=f"decoupled weight decay of the towers' matrices (default: {DEFAULT_RECIPE['weight_decay']})")
    parser.add_argument("--no-augment", action="store_true",
                        help="train on the images as they are (default: random resized crops, brightness and contrast)")
    parser.add_argument("--entailment-warmup", type=int, default=None,
                        help="steps over which MERU's entailment weight rises from 0 (default: a quarter of --steps)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-every", type=int, default=200, metavar="N",
                        help="also checkpoint every N steps (default: %(default)s)")
    parser.add_argument("--checkpoint-minutes", type=float, default=10.0, metavar="M",
                        help="also checkpoint after every M minutes of training (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="data-loader processes decoding image files (default: the CPUs, at most 8)")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def checkpoint_metadata(data: EncodedDataset, seed: int) -> dict:
    """What a checkpoint records about its data: enough to refuse a mismatched dataset later."""
    dataset = data.dataset
    return {"dataset": dataset.name, "seed": seed, "hierarchy": dataset.hierarchy.as_dict(),
            "classes": list(data.classes)}


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return _main(args)
    except (ValueError, DatasetError, CheckpointError, LockBusy, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130


def _main(args) -> int:
    if args.checkpoint_every < 1:
        raise ValueError(f"--checkpoint-every must be at least 1, got {args.checkpoint_every}")
    if not args.checkpoint_minutes > 0:
        raise ValueError(f"--checkpoint-minutes must be positive, got {args.checkpoint_minutes}")
    if args.workers is not None and args.workers < 0:
        raise ValueError(f"--workers must be 0 or more, got {args.workers}")
    world = init_from_environment(resolve_device(args.device))
    device = process_device(resolve_device(args.device))
    model_name = args.model or default_model(args.geometry)
    config = models.model_config(model_name)  # a ValueError listing the known names
    if config.geometry != args.geometry:
        raise ValueError(f"--model {model_name} is {config.geometry}, but --geometry is {args.geometry}")
    dataset = load_dataset(args.dataset, seed=args.seed, image_size=config.vision.image_size)
    if args.epochs is not None and not args.epochs > 0:
        raise ValueError(f"--epochs must be positive, got {args.epochs}")
    settings = default_settings(len(dataset.indices("train")) or 1, epochs=args.epochs)
    for key in ("steps", "batch_size", "lr", "weight_decay", "entailment_warmup"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    if args.no_augment:
        settings["augmentation"] = None
    settings.setdefault("entailment_warmup", default_entailment_warmup(settings["steps"]))
    check_schedule(**{k: settings[k] for k in ("steps", "batch_size", "lr", "warmup", "entailment_warmup")})
    check_divisible(settings["batch_size"], world.size)
    out = Path(args.out or f"runs/pretrained/{model_name}-{dataset.name}-seed{args.seed}.pt")
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give the checkpoint's file name")
    data = EncodedDataset.build(dataset, config.text.context_length)
    check_splits(data)
    # A bad file stops us now, not hours in (checked once, by rank 0, for every process).
    on_main(world, lambda: validate_images(dataset, progress=not args.no_progress))
    torch.manual_seed(args.seed)  # before building: reproducible initial weights
    model = models.create_model(config)
    lock = hold_lock(out.with_name(out.name + ".lock"), f"checkpoint {out}", notify=_say) if world.is_main \
        else contextlib.nullcontext()  # rank 0 writes the checkpoint and holds its lock for all
    with lock:
        barrier(world)  # nobody reads the checkpoint before rank 0 holds the lock
        summary = pretrain(model, data, seed=args.seed, device=device, checkpoint=out,
                           checkpoint_every=args.checkpoint_every, checkpoint_seconds=60.0 * args.checkpoint_minutes,
                           metadata=checkpoint_metadata(data, args.seed), progress=not args.no_progress,
                           world=world, workers=args.workers, **settings)
        barrier(world)  # rank 0 has written the final checkpoint
    if world.is_main:
        print(describe_summary(f"{model_name} on {dataset.name}", summary) + f"; checkpoint {out}")
    return 0


def _say(message: str) -> None:
    print(message, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
