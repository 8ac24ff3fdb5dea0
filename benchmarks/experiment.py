"""One forgetting experiment: pretrained model -> audit -> unlearn -> audit -> record.

The harness (:mod:`benchmarks.run`) plans many of these; this module holds the pieces that do one."""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar, NamedTuple

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
TARGET_FORGET_ACCURACY = 0.05  # early-stopping target on the *train* forget images ...
TARGET_RETAIN_KEPT = 0.9  # ... met while the train retain images keep this share of their accuracy


@dataclass(frozen=True)
class RunSpec:
    """One record of ``results.jsonl``: which model forgets what, how, with which seed."""

    geometry: str
    method: str
    forget: tuple
    seed: int
    variant: str = ""  # a label for ablation variants
    options: tuple = ()  # objective options as sorted (name, value) pairs
    per_run_figures: ClassVar[bool] = True  # figures of its models (first seed), redrawn when deleted

    @property
    def key(self) -> str:
        return hashlib.sha1(json.dumps(self._identity()).encode()).hexdigest()[:16]

    def _identity(self) -> list:
        """What the key is a digest of (a subclass adds to it; these fields keep their old keys)."""
        return [self.geometry, self.method, list(self.forget), self.seed, self.variant, [list(o) for o in self.options]]

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
    """Where the pretrained-model cache keeps one default model (:func:`pretrained_entry`): the
    file, the fingerprint it is keyed by, the pretraining ``settings`` (the recipe) and the
    concepts whose pairs it never saw (``forget``: empty for the full model, the forget set for
    the retrain oracle)."""

    path: Path
    fingerprint: str
    settings: dict
    forget: tuple = ()

    def metadata(self, data: EncodedDataset) -> dict:
        """The checkpoint metadata of this entry: the data's, plus the fingerprints it is keyed by
        (and, for an oracle, the concepts it was trained without)."""
        oracle = {"trained_without": list(self.forget)} if self.forget else {}
        return {**checkpoint_metadata(data, PRETRAINING_SEED), "dataset_fingerprint": data.fingerprint,
                "cache_fingerprint": self.fingerprint, **oracle}

    def train_rows(self, data: EncodedDataset) -> np.ndarray | None:
        """The train pairs this entry learns from: all (``None``), or those showing no concept of
        ``forget`` (the retain pairs of ``dataset.split_forget_retain``)."""
        if not self.forget:
            return None
        return data.dataset.split_forget_retain(list(self.forget), "train")[1]


def pretrained_entry(geometry: str, data: EncodedDataset, cache_dir, *, forget=()) -> CacheEntry:
    """The cache entry holding the default pretrained model of ``geometry`` for ``data``: the one
    place that knows the cache's layout. The fingerprint covers everything the model depends on —
    the dataset's content, the model config, the pretraining settings and seed, and with
    ``forget`` (the retrain oracle) the concepts whose pairs are left out — and a short form of it
    is part of the file name, so two datasets that share a name never share an entry."""
    name = default_model(geometry)
    forget = tuple(sorted(forget))  # the same oracle whatever order the concepts are named in
    # The same recipe for the oracle: as many passes over its (smaller) train split.
    train_pairs = len(data.dataset.split_forget_retain(list(forget), "train")[1]) if forget \
        else len(data.dataset.indices("train"))
    settings = default_settings(train_pairs)
    inputs = {"dataset": data.fingerprint, "model": models.model_config(name).to_dict(), "settings": settings,
              "seed": PRETRAINING_SEED}
    if forget:  # only then: the full model's fingerprints stay what they were
        inputs["trained_without"] = list(forget)
    fingerprint = json_fingerprint(inputs)
    kind = "-retrain" if forget else ""
    path = Path(cache_dir) / f"{name}-{data.dataset.name}{kind}-{short(fingerprint)}-seed{PRETRAINING_SEED}.pt"
    return CacheEntry(path, fingerprint, settings, forget)


def pretrained_model(geometry: str, data: EncodedDataset, *, cache_dir: Path, device, progress: bool,
                     lock_timeout: float | None = None, notify=tell, world: World = SINGLE,
                     workers: int | None = None):
    """The cached pretrained default model for this geometry and dataset (trained now, resumably,
    when missing). One command at a time trains an entry: another one waits for it (``notify``
    says who it waits for; past ``lock_timeout`` seconds it gives up with
    :class:`~benchmarks.locks.LockBusy`) and then reuses the finished checkpoint. In a distributed
    run rank 0 holds the lock and writes the entry; all processes train it together."""
    entry = pretrained_entry(geometry, data, cache_dir)
    return cached_model(entry, geometry, data, device=device, progress=progress, lock_timeout=lock_timeout,
                        notify=notify, world=world, workers=workers)[0]


def cached_model(entry: CacheEntry, geometry: str, data: EncodedDataset, *, device, progress: bool,
                 lock_timeout: float | None = None, notify=tell, world: World = SINGLE,
                 workers: int | None = None) -> tuple:
    """``(model, metadata)`` of the cache ``entry``, pretrained now (resumably, under the entry's
    lock) when it is missing or unfinished: what :func:`pretrained_model` does, for any entry —
    the full model's or a retrain oracle's (:func:`pretrained_entry` with ``forget``)."""
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
    return model.to(device).eval(), metadata


def _pretrain_entry(entry: CacheEntry, geometry: str, data: EncodedDataset, *, device, progress: bool,
                    world: World = SINGLE, workers: int | None = None) -> None:
    """Pretrain the default model of ``geometry`` on ``data`` (on the entry's train rows) into the
    cache ``entry`` (resuming an interrupted run there); its metadata records the fingerprints it
    was keyed by."""
    torch.manual_seed(PRETRAINING_SEED)  # before building: reproducible initial weights
    model = models.create_model(default_model(geometry))
    check_vocabulary(model, data)
    pretrain(model, data, seed=PRETRAINING_SEED, device=device, checkpoint=entry.path,
             metadata=entry.metadata(data), progress=progress, world=world, workers=workers,
             train_rows=entry.train_rows(data), **entry.settings)


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
    targets: stop once the forget images are forgotten *and* the retain accuracy has recovered
    (:func:`unlearning.trainer.reached_targets`)."""
    if forget_count < 1:
        raise ValueError(f"forget_count must be at least 1, got {forget_count}")
    settings = unlearning.trainer_defaults(method).as_dict()
    settings["forget_fraction"] = min(MAX_FORGET_FRACTION, settings["forget_fraction"] * forget_count)
    return {**settings, "eval_every": EVAL_EVERY, "target_forget_accuracy": TARGET_FORGET_ACCURACY,
            "target_retain_kept": TARGET_RETAIN_KEPT}


def run_one(spec: RunSpec, start_model, context, before: dict, *, environment, overrides: dict | None = None,
            unlearn_context=None) -> tuple:
    """Make the model of ``spec`` from ``start_model`` with its method (:mod:`benchmarks.methods`:
    unlearning a copy, or the retrain oracle) and audit it on ``context``. Returns ``(record, model)``.
    ``environment`` (:class:`~benchmarks.methods.Environment`) says where it runs; ``overrides``
    replace trainer settings (``--steps``, ...); ``unlearn_context`` is the problem the method
    solves when it is not the audited one (a stage of a sequence: forget the request, keep what
    was not forgotten before). In a distributed run (``context.world``) every process calls this;
    the record states the ``world_size``, which changes no number beyond float rounding."""
    from .audits import run_audits
    from .methods import create_method

    device = environment.device
    _reset_peak_memory(device)
    began = time.perf_counter()
    outcome = create_method(spec.method).run(spec, start_model, unlearn_context or context,
                                             overrides=overrides or {}, environment=environment)
    seconds = time.perf_counter() - began
    after = run_audits(outcome.model, context)
    record = {
        "key": spec.key,
        **spec.as_dict(),
        "label": spec.label,
        "model": start_model.config.name,
        "dataset": context.data.dataset.name,
        "settings": outcome.settings,
        "world_size": context.world.size,
        "objective": outcome.details,
        "before": before,
        "after": after,
        "unlearning": {**outcome.unlearning, "peak_memory_mb": _peak_memory_mb(device)},
        "seconds": round(seconds, 2),
    }
    return record, outcome.model


def unlearned_copy(spec: RunSpec, base_model, context, settings: dict, *, environment):
    """The model :func:`run_one` made for ``spec`` from ``base_model``, made again under the
    ``settings`` of its record (the same seed: the same model on CPU; the oracle comes from the
    cache). Redrawing a finished run's deleted figures needs it; its record stays as it is."""
    from .methods import create_method

    return create_method(spec.method).run(spec, base_model, context, overrides=settings,
                                          environment=environment).model


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
