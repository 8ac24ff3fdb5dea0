"""One forgetting experiment: pretrained model -> audit -> unlearn -> audit -> record.

The harness (:mod:`benchmarks.run`) plans many of these; this module holds the pieces that do one."""

from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

import models
import unlearning

from .common import EncodedDataset, atomic_write_text
from .pretrain import DEFAULT_MODELS, checkpoint_metadata, default_settings, pretrain

# Default objective per geometry: the method each geometry's paper proposes.
DEFAULT_METHODS = {"lorentz": "hac", "euclidean": "ac"}

# Trainer settings per objective: one fixed set each, chosen on `triangle` and on `heart, ring, cross`
# with the default pretrained models, then checked on other concepts (README, "Defaults").
# ``forget_fraction`` is the share of each batch *per forgotten concept*: removing k concepts at once
# gives each one as many pairs per step as removing it alone would (capped, so retain pairs remain).
METHOD_SETTINGS = {
    name: {"lr": lr, "steps": 150, "batch_size": 128, "forget_fraction": 0.125}
    for name, lr in (("ac", 1e-4), ("hac", 1e-4), ("hac-parent", 1e-4), ("relabel", 1e-4), ("ft", 1e-4),
                     ("ga", 1e-5), ("neggrad+", 5e-5))
}
MAX_FORGET_FRACTION = 0.5
EVAL_EVERY = 5
TARGET_FORGET_ACCURACY = 0.05  # early-stopping target on the *train* forget images


@dataclass(frozen=True)
class RunSpec:
    """One record of ``results.jsonl``: which model forgets what, how, with which seed."""

    geometry: str
    method: str
    forget: tuple
    seed: int
    variant: str = ""  # a label for ablation variants
    options: tuple = ()  # objective options as sorted (name, value) pairs

    @property
    def key(self) -> str:
        payload = json.dumps([self.geometry, self.method, list(self.forget), self.seed, self.variant,
                              [list(o) for o in self.options]])
        return hashlib.sha1(payload.encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        return self.variant or f"{self.method} ({self.geometry})"

    def as_dict(self) -> dict:
        data = asdict(self)
        data["forget"] = list(self.forget)
        data["options"] = dict(self.options)
        return data


def pretrained_model(geometry: str, data: EncodedDataset, *, cache_dir: Path, device, progress: bool):
    """The cached pretrained default model for this geometry and dataset (trained now, resumably,
    when missing)."""
    name = DEFAULT_MODELS[geometry]
    path = Path(cache_dir) / f"{name}-{data.dataset.name}-seed0.pt"
    if not _finished(path):
        torch.manual_seed(0)
        model = models.create_model(name)
        pretrain(model, data, seed=0, device=device, checkpoint=path,
                 metadata=checkpoint_metadata(data, 0), progress=progress, **default_settings(data.dataset.name))
    model, metadata = models.load_checkpoint(path, expected_geometry=geometry)
    check_classes(path, metadata, data)  # the cache is keyed by dataset *name*: two folders may share it
    return model.to(device).eval()


def _finished(path: Path) -> bool:
    if not path.exists():
        return False
    from models.checkpoint import read_checkpoint

    return bool(read_checkpoint(path).get("train_state", {}).get("finished"))


def check_classes(path, metadata: dict, data: EncodedDataset) -> None:
    """Refuse a checkpoint trained on other classes than ``data``'s (released files record none)."""
    classes = metadata.get("classes")
    if classes is not None and list(classes) != list(data.classes):
        raise models.CheckpointError(
            f"checkpoint {path}: trained on classes {classes[:6]}... which differ from the dataset "
            f"{data.dataset.name!r} classes {data.classes[:6]}..."
        )


def unlearning_data(context, *, seed: int, probe_size: int = 240) -> unlearning.UnlearningData:
    """Tensors for :func:`unlearning.unlearn` from the train split of the audit ``context``. Parents
    are the context's reference parents, so training (parent cones, sibling mismatches) and the audit
    agree when an inner concept is forgotten. The early-stopping probe uses *train* images (forget
    pairs and a retain sample): the test split stays untouched until the audit."""
    data, forget_train, retain_train = context.data, context.forget_train, context.retain_train
    rows = np.concatenate([retain_train, forget_train])
    forget = torch.zeros(len(rows), dtype=torch.bool)
    forget[len(retain_train):] = True
    rng = np.random.default_rng(seed)
    probe_rows = np.concatenate([
        rng.choice(forget_train, min(probe_size // 2, len(forget_train)), replace=False),
        rng.choice(retain_train, min(probe_size, len(retain_train)), replace=False),
    ])
    probe = unlearning.ZeroShotProbe(
        images=data.images(probe_rows), targets=torch.from_numpy(data.targets[probe_rows]),
        class_prompt_tokens=data.prompt_tokens, forget_classes=list(context.forget_classes),
    )
    return unlearning.UnlearningData(
        images=data.images(rows), tokens=data.tokens[rows], labels=torch.from_numpy(data.targets[rows]),
        forget=forget, class_parents=torch.from_numpy(context.class_parent_index),
        parent_prompt_tokens=[data.concept_prompt_tokens(p) for p in context.parent_concepts], probe=probe,
    )


def trainer_settings(method: str, forget_count: int) -> dict:
    """The trainer settings of ``method`` when ``forget_count`` concepts are removed at once: the
    per-concept ``forget_fraction`` of :data:`METHOD_SETTINGS` times the count, capped at
    :data:`MAX_FORGET_FRACTION`, and the probe schedule with its early-stopping target."""
    if forget_count < 1:
        raise ValueError(f"forget_count must be at least 1, got {forget_count}")
    settings = dict(METHOD_SETTINGS.get(method, METHOD_SETTINGS["ac"]))
    settings["forget_fraction"] = min(MAX_FORGET_FRACTION, settings["forget_fraction"] * forget_count)
    return {**settings, "eval_every": EVAL_EVERY, "target_forget_accuracy": TARGET_FORGET_ACCURACY}


def run_one(spec: RunSpec, base_model, data: EncodedDataset, context, before: dict, *, device,
            progress: bool, settings: dict | None = None) -> tuple:
    """Unlearn ``spec`` from a copy of ``base_model`` and audit it. Returns ``(record, model)``."""
    from .audits import run_audits

    settings = {**trainer_settings(spec.method, len(spec.forget)), **(settings or {})}
    objective = unlearning.create_objective(spec.method, **dict(spec.options))
    model = copy.deepcopy(base_model)
    train_data = unlearning_data(context, seed=spec.seed)
    _reset_peak_memory(device)
    began = time.perf_counter()
    result = unlearning.unlearn(
        model, train_data, objective, seed=spec.seed, device=device, progress=progress, **settings,
    )
    unlearn_seconds = time.perf_counter() - began
    after = run_audits(model, context)
    record = {
        "key": spec.key,
        **spec.as_dict(),
        "label": spec.label,
        "model": base_model.config.name,
        "dataset": data.dataset.name,
        "settings": settings,
        "objective": asdict(objective),
        "before": before,
        "after": after,
        "unlearning": {
            "steps": result.steps, "seconds": round(result.seconds, 2), "stopped_early": result.stopped_early,
            "samples_per_second": round(result.samples_per_second, 1), "evaluations": result.evaluations,
            "peak_memory_mb": _peak_memory_mb(device),
        },
        "seconds": round(unlearn_seconds, 2),
    }
    return record, model


def _reset_peak_memory(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_memory_mb(device) -> float | None:
    """CUDA: the peak allocated since :func:`_reset_peak_memory` (this run's). CPU: the process's
    peak resident memory so far, which includes earlier runs of the same command."""
    if torch.device(device).type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    try:
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB
    except (ImportError, OSError):
        return None


@dataclass
class ResultsFile:
    """``results.jsonl``: one JSON record per finished run. Every write replaces the file atomically
    with its previous content plus the new line, so an interruption never leaves a partial record."""

    path: Path
    records: list = field(default_factory=list)

    @classmethod
    def open(cls, path) -> "ResultsFile":
        path = Path(path)
        records = []
        if path.exists():
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError as error:
                        raise ValueError(f"{path}:{number}: not a JSON record ({error})") from None
        return cls(path, records)

    def keys(self) -> set:
        return {r["key"] for r in self.records}

    def append(self, record: dict) -> None:
        self.records.append(record)
        atomic_write_text(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.records))
