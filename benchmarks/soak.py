"""Soak test of MERU pretraining numerics: long runs with the curvature started at its clamp bounds.

    python -m benchmarks.soak [--steps 10000] [--device auto] [--out runs/soak.json]

Pretrains ``meru-tiny`` on ``shapes`` with the default schedule of ``benchmarks.pretrain`` (batch
128, learning rate 1e-3 with warm-up and cosine decay, entailment weight warmed up over the first
quarter) for ``--steps`` steps, once with the learnable curvature started at each end of its clamp
range (the default config's ``c_range``: 0.1 and 10), in float32 and, when CUDA is available, also
with the towers in bfloat16 autocast. The model is built from the default config (whose curvature
sets the range) and its ``log c`` is then set to the bound, so the range stays the default one.

Per run it counts the steps with a non-finite loss, a non-finite gradient and a non-finite parameter
(all must be 0; a run stops at its first non-finite parameter), records the curvature trajectory,
and prints a line starting with ``warning:`` when the curvature sat on a clamp bound for more than
10% of the last 1000 steps. A table of the runs goes to stdout and, as JSON, to ``--out`` (written
atomically after every run). Exit status 1 when any count is not 0. Not part of CI: 10,000 steps
take about half an hour per run on a quiet 2-core CPU; ``--steps 50`` checks the script in a minute.

This script found that a curvature started on a bound never moved: it was read as ``exp(log c)``
clamped to its range, and ``torch.clamp`` passes no gradient on a bound. ``log c`` now lives on a
:class:`manifolds.Interval`, which keeps it in range with a live gradient; the at-bound warning
guards against a regression.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from pathlib import Path

import geoopt
import numpy as np
import torch

import models

from .common import EncodedDataset, autocast, resolve_device, write_json, zero_shot_accuracy
from .datasets import load_dataset
from .pretrain import default_entailment_warmup, default_settings, entailment_weight_at, learning_rate

MODEL = "meru-tiny"
DATASET = "shapes"
BOUND_WINDOW = 1000  # the last steps in which time on a clamp bound is measured
BOUND_WARNING = 0.10  # warn above this fraction of BOUND_WINDOW
TRAJECTORY_POINTS = 1000  # at most this many recorded curvature values per run


def soak_run(data: EncodedDataset, *, start_c: float, precision: str, steps: int, device: torch.device,
             seed: int = 0, progress: bool = True) -> dict:
    """Pretrain a fresh model for ``steps`` steps with ``c`` started at ``start_c``; the run's
    counts, curvature trajectory and final metrics."""
    torch.manual_seed(seed)
    model = models.create_model(MODEL)
    with torch.no_grad():  # the default range (the config's curvature / 10, x 10), started at start_c
        model.geometry.log_c.fill_(math.log(start_c))
    low, high = (math.log(bound) for bound in model.geometry.c_range)
    model.build_vocabulary(torch.cat([data.tokens, *data.prompt_tokens]))
    model.to(device).train()
    settings = default_settings(len(data.dataset.indices("train")))
    entailment_warmup = default_entailment_warmup(steps)
    optimizer = geoopt.optim.RiemannianAdam(model.parameters(), lr=settings["lr"])
    parameters = [p for p in model.parameters() if p.requires_grad]
    train = data.dataset.indices("train")
    images, tokens = data.images(train), data.tokens[train]
    generator = torch.Generator().manual_seed(seed)
    order = torch.empty(0, dtype=torch.long)
    precision_context = (lambda: autocast(device)) if precision == "bfloat16" else contextlib.nullcontext
    counts = {"non_finite_loss": 0, "non_finite_gradient": 0, "non_finite_parameter": 0}
    every = max(1, math.ceil(steps / TRAJECTORY_POINTS))
    trajectory, at_bound, losses = {"step": [0], "c": [start_c]}, [], []
    began = time.perf_counter()
    for step in range(steps):
        while order.numel() < settings["batch_size"]:
            order = torch.cat([order, torch.randperm(len(train), generator=generator)])
        batch, order = order[:settings["batch_size"]], order[settings["batch_size"]:]
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, base=settings["lr"], warmup=settings["warmup"], total=steps)
        weight = entailment_weight_at(step, full=model.config.entailment_weight, warmup=entailment_warmup)
        with precision_context():
            loss = model.pretraining_loss(images[batch].to(device), tokens[batch].to(device),
                                          entailment_weight=weight)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        gradients = [p.grad for p in parameters if p.grad is not None]
        finite_gradient = torch.stack([torch.isfinite(g).all() for g in gradients]).all()
        optimizer.step()
        finite_parameters = torch.stack([torch.isfinite(p).all() for p in parameters]).all()
        loss_value, log_c = loss.item(), model.geometry.log_c.item()
        counts["non_finite_loss"] += not math.isfinite(loss_value)
        counts["non_finite_gradient"] += not bool(finite_gradient)
        losses.append(loss_value)
        at_bound.append(not low < log_c < high)
        if (step + 1) % every == 0 or step + 1 == steps:
            trajectory["step"].append(step + 1)
            trajectory["c"].append(model.geometry.c.item())
        if progress and ((step + 1) % max(1, steps // 20) == 0 or step + 1 == steps):
            print(f"  c0={start_c:g} {precision}: step {step + 1}/{steps}, loss {loss_value:.4f}, "
                  f"c {model.geometry.c.item():.4g}", file=sys.stderr)
        if not bool(finite_parameters):
            counts["non_finite_parameter"] += 1
            print(f"  c0={start_c:g} {precision}: a parameter became non-finite at step {step + 1}; run stopped",
                  file=sys.stderr)
            break
    seconds = time.perf_counter() - began
    model.eval()
    window = at_bound[-BOUND_WINDOW:]
    healthy = counts["non_finite_parameter"] == 0
    return {
        "start_c": start_c, "precision": precision, "device": str(device), "steps": len(losses), "planned_steps": steps,
        **counts,
        "final_c": model.geometry.c.item(),
        "c_range": list(model.geometry.c_range),
        "fraction_at_bound": sum(window) / len(window) if window else 0.0,
        "bound_window": len(window),
        "final_loss": float(np.mean(losses[-20:])) if losses else float("nan"),
        "zero_shot_accuracy": zero_shot_accuracy(model, data, data.dataset.indices("test")) if healthy else float("nan"),
        "seconds": round(seconds, 1),
        "curvature_trajectory": trajectory,
    }


def table(runs: list) -> str:
    """The runs as an aligned text table."""
    header = ("start c", "precision", "steps", "nf loss", "nf grad", "nf param", "final c", "at bound",
              "final loss", "zero-shot")
    rows = [(f"{r['start_c']:g}", r["precision"], str(r["steps"]), str(r["non_finite_loss"]),
             str(r["non_finite_gradient"]), str(r["non_finite_parameter"]), f"{r['final_c']:.4g}",
             f"{r['fraction_at_bound']:.1%}", f"{r['final_loss']:.4f}", f"{r['zero_shot_accuracy']:.1%}")
            for r in runs]
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in [header, *rows])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10_000, help="pretraining steps per run (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: %(default)s)")
    parser.add_argument("--out", default="runs/soak.json", help="JSON results file (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        device = resolve_device(args.device)
        if args.steps < 1:
            raise ValueError(f"--steps must be at least 1, got {args.steps}")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    config = models.model_config(MODEL)
    dataset = load_dataset(DATASET, seed=args.seed, image_size=config.vision.image_size)
    data = EncodedDataset.build(dataset, config.text.context_length)
    bounds = models.create_model(MODEL).geometry.c_range  # the default config's clamp range
    precisions = ["float32"] + (["bfloat16"] if device.type == "cuda" else [])
    if device.type == "cuda":  # float32 means float32: no TF32 matrix products or convolutions
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    out = Path(args.out)
    report = {"model": MODEL, "dataset": DATASET, "steps": args.steps, "seed": args.seed, "device": str(device),
              "settings": default_settings(len(dataset.indices("train"))), "bound_window": BOUND_WINDOW, "runs": []}
    for precision in precisions:
        for start_c in bounds:
            print(f"soak: {MODEL} on {DATASET}, c started at {start_c:g}, {precision}, {args.steps} steps",
                  file=sys.stderr)
            run = soak_run(data, start_c=start_c, precision=precision, steps=args.steps, device=device,
                           seed=args.seed, progress=not args.no_progress)
            report["runs"].append(run)
            write_json(out, report)
    print(table(report["runs"]))
    failed = False
    for run in report["runs"]:
        label = f"c started at {run['start_c']:g}, {run['precision']}"
        if run["fraction_at_bound"] > BOUND_WARNING:
            print(f"warning: {label}: the curvature sat on a clamp bound {run['c_range']} for "
                  f"{run['fraction_at_bound']:.0%} of the last {run['bound_window']} steps (final c {run['final_c']:.4g})")
        bad = {k: run[k] for k in ("non_finite_loss", "non_finite_gradient", "non_finite_parameter") if run[k]}
        if bad:
            failed = True
            print(f"error: {label}: non-finite values: " + ", ".join(f"{k.replace('_', ' ')} in {v} step(s)"
                                                                     for k, v in bad.items()))
    print(f"results in {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
