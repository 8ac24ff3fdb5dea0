"""Pretrain a MERU or CLIP model from scratch with Riemannian Adam.

    python -m benchmarks.pretrain --geometry lorentz --dataset shapes --out runs/pretrained/meru.pt

Checkpoints are written atomically every ``--checkpoint-every`` steps and at the end; rerunning the
same command resumes an interrupted run (and returns at once for a finished one). On a GPU the
towers run in bfloat16 autocast; the geometry and the losses stay in float32.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import geoopt
import numpy as np
import torch
from tqdm.auto import tqdm

import models
from models.checkpoint import CheckpointError, read_checkpoint, save_checkpoint

from .common import EncodedDataset, autocast, resolve_device, zero_shot_accuracy
from .datasets import DatasetError, load_dataset

DEFAULT_MODELS = {"lorentz": "meru-tiny", "euclidean": "clip-tiny"}


def default_settings(dataset_name: str) -> dict:
    """Training length and step size of the defaults (measured: see the README)."""
    return {"steps": 1600, "batch_size": 128, "lr": 2e-3, "warmup": 100}


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


def pretrain(model, data: EncodedDataset, *, steps: int, batch_size: int, lr: float, warmup: int = 100,
             seed: int = 0, device=None, checkpoint: str | Path | None = None, checkpoint_every: int = 200,
             metadata: dict | None = None, progress: bool = True) -> dict:
    """Train ``model`` on the train split of ``data`` with the model's pretraining loss.

    Returns a summary dict (steps, seconds, final loss, zero-shot accuracy on the test split). With
    ``checkpoint`` set, training state is saved there atomically and a rerun resumes from it."""
    device = torch.device(device or "cpu")
    model.to(device)
    optimizer = geoopt.optim.RiemannianAdam(model.parameters(), lr=lr)
    train = data.dataset.indices("train")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    start, elapsed, history = 0, 0.0, []
    order = torch.empty(0, dtype=torch.long)  # the rest of the current epoch's permutation
    if model.config.text.compact_vocabulary:  # a fresh model learns the words of this dataset
        model.build_vocabulary(torch.cat([data.tokens, *data.prompt_tokens]))

    settings = {"steps": steps, "batch_size": batch_size, "lr": lr, "warmup": warmup, "seed": seed}
    if checkpoint is not None and Path(checkpoint).exists():
        payload = read_checkpoint(checkpoint)
        state = payload.get("train_state", {})
        _check_resumable(checkpoint, payload, model, settings)
        model.load_state_dict(payload["state_dict"])
        if state.get("finished"):
            return payload["metadata"]["pretraining"]
        load_optimizer_state(optimizer, state["optimizer"])
        generator.set_state(state["generator"])
        order = state["order"]
        start, elapsed, history = state["step"], state["seconds"], state["history"]

    images = data.images(train)  # built-in datasets are small: keep the split decoded in memory
    tokens = data.tokens[train]

    def save(step, finished, summary=None):
        if checkpoint is None:
            return
        meta = dict(metadata or {})
        if summary is not None:
            meta["pretraining"] = summary
        save_checkpoint(
            checkpoint, model, meta,
            train_state={"step": step, "finished": finished, "seconds": elapsed, "history": history, "settings": settings,
                         "optimizer": optimizer.state_dict(), "generator": generator.get_state(),
                         "order": order},
        )

    model.train()
    bar = tqdm(total=steps, initial=start, desc=f"pretrain {model.config.name}", disable=not progress,
               dynamic_ncols=True)
    step = start
    while step < steps:
        began = time.perf_counter()
        if order.numel() < batch_size:  # a fresh permutation per epoch, from the seeded generator
            order = torch.cat([order, torch.randperm(len(train), generator=generator)])
        batch, order = order[:batch_size], order[batch_size:]
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, base=lr, warmup=warmup, total=steps)
        with autocast(device):
            losses = model.pretraining_loss(images[batch].to(device), tokens[batch].to(device))
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()
        step += 1
        elapsed += time.perf_counter() - began
        loss_value = losses["loss"].item()
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"pretraining loss became {loss_value} at step {step}")
        history.append(loss_value)
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.3f}")
        if step % checkpoint_every == 0 and step < steps:
            save(step, finished=False)
    bar.close()

    model.eval()
    summary = {
        "steps": steps,
        "seconds": round(elapsed, 1),
        "initial_loss": float(np.mean(history[:10])) if history else float("nan"),
        "final_loss": float(np.mean(history[-20:])) if history else float("nan"),
        "zero_shot_accuracy": zero_shot_accuracy(model, data, data.dataset.indices("test")),
        "curvature": model.geometry.c.item(),
    }
    save(step, finished=True, summary=summary)
    return summary


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pretrain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--geometry", choices=sorted(DEFAULT_MODELS), default="lorentz",
                        help="lorentz = MERU, euclidean = CLIP (default: %(default)s)")
    parser.add_argument("--model", default=None, help="model config name (default: meru-tiny / clip-tiny)")
    parser.add_argument("--dataset", default="shapes", help="shapes, digits or a dataset folder")
    parser.add_argument("--out", default=None, help="checkpoint file (default: runs/pretrained/<model>-<dataset>-seed<seed>.pt)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: %(default)s)")
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
        device = resolve_device(args.device)
        model_name = args.model or DEFAULT_MODELS[args.geometry]
        config = models.model_config(model_name)
        if config.geometry != args.geometry:
            raise ValueError(f"--model {model_name} is {config.geometry}, but --geometry is {args.geometry}")
        dataset = load_dataset(args.dataset, seed=args.seed, image_size=config.vision.image_size)
    except (ValueError, DatasetError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    settings = default_settings(dataset.name)
    for key in ("steps", "batch_size", "lr"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    out = Path(args.out or f"runs/pretrained/{model_name}-{dataset.name}-seed{args.seed}.pt")
    data = EncodedDataset.build(dataset, config.text.context_length)
    torch.manual_seed(args.seed)  # before building: reproducible initial weights
    model = models.create_model(config)
    try:
        summary = pretrain(model, data, seed=args.seed, device=device, checkpoint=out,
                           metadata=checkpoint_metadata(data, args.seed), progress=not args.no_progress, **settings)
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{model_name} on {dataset.name}: zero-shot leaf accuracy {summary['zero_shot_accuracy']:.1%} "
          f"after {summary['steps']} steps ({summary['seconds']:.0f} s of training); checkpoint {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
