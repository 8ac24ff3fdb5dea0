"""One forgetting experiment: pretrained model -> audit -> unlearn -> audit -> record.

The harness (:mod:`benchmarks.run`) plans many of these; this module holds the pieces that do one."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

import models
import unlearning

from models.checkpoint import model_from_payload, read_checkpoint
from models.distributed import SINGLE, World, barrier

from .common import EncodedDataset, InputError, on_main, atomic_write_text, finite_json, strict_json, tell
from .fingerprints import json_fingerprint, short
from .locks import hold_lock
from .pretrain import checkpoint_metadata, default_model, default_settings, pretrain

# Each objective carries its tuned trainer settings (``unlearning.trainer_defaults``: one fixed set
# each, chosen on `triangle` and on `heart, ring, cross` with the default pretrained models, then
# checked on other concepts; README, "Measured defaults"). The harness caps the forget share:
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


PRETRAINING_SEED = 0


class CacheEntry(NamedTuple):
    """Where the pretrained-model cache keeps one default model (:func:`pretrained_entry`)."""

    path: Path
    fingerprint: str

    def metadata(self, data: EncodedDataset) -> dict:
        """The checkpoint metadata of this entry: the data's, plus the fingerprints it is keyed by."""
        return {**checkpoint_metadata(data, PRETRAINING_SEED), "dataset_fingerprint": data.fingerprint,
                "cache_fingerprint": self.fingerprint}


def pretrained_entry(geometry: str, data: EncodedDataset, cache_dir) -> CacheEntry:
    """``(path, fingerprint)`` of the cache entry holding the default pretrained model of
    ``geometry`` for ``data``: the one place that knows the cache's layout. The fingerprint covers
    everything the model depends on — the dataset's content, the model config, the pretraining
    settings and seed — and a short form of it is part of the file name, so two datasets that
    share a name never share an entry."""
    name = default_model(geometry)
    fingerprint = json_fingerprint({
        "dataset": data.fingerprint,
        "model": models.model_config(name).to_dict(),
        "settings": default_settings(len(data.dataset.indices("train"))),
        "seed": PRETRAINING_SEED,
    })
    path = Path(cache_dir) / f"{name}-{data.dataset.name}-{short(fingerprint)}-seed{PRETRAINING_SEED}.pt"
    return CacheEntry(path, fingerprint)


def pretrained_model(geometry: str, data: EncodedDataset, *, cache_dir: Path, device, progress: bool,
                     lock_timeout: float | None = None, notify=tell, world: World = SINGLE,
                     workers: int | None = None):
    """The cached pretrained default model for this geometry and dataset (trained now, resumably,
    when missing). One command at a time trains an entry: another one waits for it (``notify``
    says who it waits for; past ``lock_timeout`` seconds it gives up with
    :class:`~benchmarks.locks.LockBusy`) and then reuses the finished checkpoint. In a distributed
    run rank 0 holds the lock and writes the entry; all processes train it together."""
    entry = pretrained_entry(geometry, data, cache_dir)
    path = entry.path
    lock = hold_lock(path.with_name(path.name + ".lock"), f"the pretrained-model cache entry {path}",
                     timeout=lock_timeout, notify=notify) if world.is_main else contextlib.nullcontext()
    with lock:
        finished = on_main(world, lambda: _finished_entry(path) is not None)
        if not finished:
            _pretrain_entry(entry, geometry, data, device=device, progress=progress, world=world, workers=workers)
        barrier(world)  # rank 0 has written the finished entry
        payload = read_checkpoint(path)
    model, metadata = model_from_payload(payload, path, expected_geometry=geometry)
    check_classes(path, metadata, data)
    return model.to(device).eval()


def _pretrain_entry(entry: CacheEntry, geometry: str, data: EncodedDataset, *, device, progress: bool,
                    world: World = SINGLE, workers: int | None = None) -> None:
    """Pretrain the default model of ``geometry`` on ``data`` into the cache ``entry`` (resuming an
    interrupted run there); its metadata records the fingerprints it was keyed by."""
    torch.manual_seed(PRETRAINING_SEED)  # before building: reproducible initial weights
    model = models.create_model(default_model(geometry))
    check_vocabulary(model, data)
    pretrain(model, data, seed=PRETRAINING_SEED, device=device, checkpoint=entry.path,
             metadata=entry.metadata(data), progress=progress, world=world, workers=workers,
             **default_settings(len(data.dataset.indices("train"))))


def check_vocabulary(model, data: EncodedDataset) -> None:
    """Refuse, before any training, a dataset with more distinct words than the compact vocabulary
    of ``model`` holds (pretraining builds the same vocabulary again: this call only fails early,
    with a message saying what to do)."""
    if not model.config.text.compact_vocabulary:
        return
    try:
        model.build_vocabulary(torch.cat([data.tokens, *data.prompt_tokens]))
    except ValueError as error:
        raise InputError(
            f"dataset {data.dataset.name!r} does not fit the default {model.config.name} model: {error}, "
            "pretrain it (python -m benchmarks.pretrain --model NAME) and pass it with --checkpoint; or use "
            "captions with fewer distinct words"
        ) from None


def _finished_entry(path: Path) -> tuple | None:
    """``(path, payload)`` of a finished pretraining checkpoint at ``path``; ``None`` when there is
    none yet or it was interrupted (pretraining then resumes it)."""
    if not path.exists():
        return None
    payload = read_checkpoint(path)
    return (path, payload) if payload.get("train_state", {}).get("finished") else None


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
        images=data.image_source(probe_rows), targets=torch.from_numpy(data.targets[probe_rows]),
        class_prompt_tokens=data.prompt_tokens, forget_classes=list(context.forget_classes),
    )
    return unlearning.UnlearningData(
        images=data.image_source(rows), tokens=data.tokens[rows], labels=torch.from_numpy(data.targets[rows]),
        forget=forget, class_parents=torch.from_numpy(context.class_parent_index),
        parent_prompt_tokens=[data.concept_prompt_tokens(p) for p in context.parent_concepts], probe=probe,
    )


def trainer_settings(method: str, forget_count: int) -> dict:
    """The trainer settings of ``method`` when ``forget_count`` concepts are removed at once: the
    objective's :func:`unlearning.trainer_defaults`, with their per-concept ``forget_fraction`` times
    the count, capped at :data:`MAX_FORGET_FRACTION`, and the probe schedule with its early-stopping
    target."""
    if forget_count < 1:
        raise ValueError(f"forget_count must be at least 1, got {forget_count}")
    settings = unlearning.trainer_defaults(method).as_dict()
    settings["forget_fraction"] = min(MAX_FORGET_FRACTION, settings["forget_fraction"] * forget_count)
    return {**settings, "eval_every": EVAL_EVERY, "target_forget_accuracy": TARGET_FORGET_ACCURACY}


def run_one(spec: RunSpec, base_model, data: EncodedDataset, context, before: dict, *, device,
            progress: bool, settings: dict | None = None, workers: int | None = None) -> tuple:
    """Unlearn ``spec`` from a copy of ``base_model`` and audit it. Returns ``(record, model)``.
    In a distributed run (``context.world``) every process calls this; the record states the
    ``world_size``, which changes no number beyond float rounding."""
    from .audits import run_audits

    settings = {**trainer_settings(spec.method, len(spec.forget)), **(settings or {})}
    model = copy.deepcopy(base_model)
    train_data = unlearning_data(context, seed=spec.seed)
    _reset_peak_memory(device)
    began = time.perf_counter()
    objective, result = _unlearn(spec, model, train_data, settings, device=device, progress=progress,
                                 world=context.world, workers=workers)
    unlearn_seconds = time.perf_counter() - began
    after = run_audits(model, context)
    record = {
        "key": spec.key,
        **spec.as_dict(),
        "label": spec.label,
        "model": base_model.config.name,
        "dataset": data.dataset.name,
        "settings": settings,
        "world_size": context.world.size,
        "objective": asdict(objective),
        "before": before,
        "after": after,
        "unlearning": {
            "steps": result.steps, "seconds": round(result.seconds, 2), "stopped_early": result.stopped_early,
            "samples_per_second": round(result.samples_per_second, 1), "evaluations": result.evaluations,
            "losses": result.history,
            "peak_memory_mb": _peak_memory_mb(device),
        },
        "seconds": round(unlearn_seconds, 2),
    }
    return record, model


def unlearned_copy(spec: RunSpec, base_model, context, settings: dict, *, device, progress: bool = False):
    """A copy of ``base_model`` unlearned as :func:`run_one` unlearned it for ``spec`` under the
    trainer ``settings`` of its record (the same seed: the same model on CPU). Redrawing a finished
    run's deleted figures needs it; its record stays as it is."""
    model = copy.deepcopy(base_model)
    _unlearn(spec, model, unlearning_data(context, seed=spec.seed), settings, device=device, progress=progress)
    return model


def _unlearn(spec: RunSpec, model, train_data, settings: dict, *, device, progress: bool,
             world: World = SINGLE, workers: int | None = None) -> tuple:
    """Unlearn ``spec``'s concepts from ``model`` in place: ``(objective, trainer result)``."""
    objective = unlearning.create_objective(spec.method, **dict(spec.options))
    result = unlearning.unlearn(model, train_data, objective, seed=spec.seed, device=device, progress=progress,
                                world=world, workers=workers, **settings)
    return objective, result


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


class ResultsFileError(InputError):
    """A damaged ``results.jsonl`` that cannot be repaired by dropping its torn last line."""


@dataclass
class ResultsFile:
    """``results.jsonl``: one JSON record per finished run. Every write replaces the file atomically
    with its previous content plus the new line, so this program never leaves a partial record; a
    torn last line (another writer, a copy cut short) is dropped on reading and its run redone."""

    path: Path
    records: list = field(default_factory=list)
    torn_line: int | None = None  # the number of the damaged last line dropped on reading

    @classmethod
    def open(cls, path) -> "ResultsFile":
        """Read ``path`` (missing: no records). A damaged line other than the last one raises
        :class:`ResultsFileError` naming the file and line: dropping it would silently lose a run."""
        path = Path(path)
        if not path.exists():
            return cls(path)
        text = path.read_bytes().decode("utf-8", errors="replace")  # a torn write may end mid-character
        lines = [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
        records = [_parse_record(line) for _, line in lines]
        damaged = [number for (number, _), record in zip(lines, records) if record is None]
        if damaged and damaged[0] != lines[-1][0]:
            raise ResultsFileError(f"{path} line {damaged[0]}: not a JSON record of a run; repair or delete "
                                   "that line (its run is then redone), or choose another --out")
        return cls(path, [r for r in records if r is not None], damaged[0] if damaged else None)

    def keys(self) -> set:
        return {r["key"] for r in self.records}

    def append(self, record: dict) -> None:
        """Add ``record`` (non-finite numbers become ``null``, see :func:`~benchmarks.common.finite_json`)."""
        self.records.append(finite_json(record))
        atomic_write_text(self.path, "".join(strict_json(r) + "\n" for r in self.records))


def _parse_record(line: str) -> dict | None:
    """The record a line holds, or ``None`` when it is not a JSON object with a run ``key``."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("key"), str) else None
