"""Sequential unlearning (MUSE's sustainability test): one model forgets concepts one request after
another, audited after each request (docs/SPEC.md section 5).

    python -m benchmarks.run --sequential triangle,heart,ring --method hac,retrain

Stage ``k`` of a sequence starts from the model of stage ``k − 1`` (stage 1 from the pretrained
model) and removes the ``k``-th concept, the *request*, with the method's settings for one concept:
its forget pairs are the request's, its retain pairs those showing none of the concepts forgotten so
far (an already forgotten concept is never trained back in). The audit then treats all ``k``
concepts as forgotten (forget accuracy over all of them, retain accuracy on the rest), and
``request_forget_accuracy`` is the forget accuracy of the request alone. The retrain oracle of
stage ``k`` is the default model pretrained without all ``k`` concepts (one cache entry per stage).

After each stage the model and the stage's record are written atomically to
``<out>/sequential/<sequence>.pt`` before the record is appended to ``results.jsonl``: a rerun
continues after the last finished stage (and restores a record lost between the two writes)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

from models.checkpoint import model_from_payload, read_checkpoint, save_checkpoint
from models.distributed import barrier
from models.evaluation import macro_accuracy, zero_shot_predictions

from .common import InputError, on_main, tell
from .experiment import RunSpec, run_one
from .report import outcome_line, percent

#: Where an output folder keeps the model of the last finished stage of each sequence.
CHECKPOINT_FOLDER = "sequential"


@dataclass(frozen=True)
class StageSpec(RunSpec):
    """Stage ``len(forget)`` of forgetting ``sequence`` one concept after another: ``forget`` holds
    the concepts forgotten so far (a prefix of ``sequence``), its last one the current request."""

    sequence: tuple = ()
    per_run_figures: ClassVar[bool] = False  # a stage's model is kept only until the next stage

    @property
    def stage(self) -> int:
        return len(self.forget)

    @property
    def request(self) -> str:
        return self.forget[-1]

    @property
    def key(self) -> str:
        return _digest([*self._identity(), {"sequence": list(self.sequence)}])

    @property
    def sequence_key(self) -> str:
        """The same for every stage of one sequence of one method, model and seed."""
        return _digest(["sequence", self.geometry, self.method, self.seed, self.variant,
                        [list(o) for o in self.options], list(self.sequence)])

    @property
    def label(self) -> str:
        return f"{super().label}, sequential"

    def as_dict(self) -> dict:
        return {**super().as_dict(), "sequence": list(self.sequence), "stage": self.stage, "request": self.request}


def _digest(payload) -> str:
    return hashlib.sha1(json.dumps(payload).encode()).hexdigest()[:16]


def stage_specs(geometry: str, method: str, seed: int, *, sequence: tuple) -> list:
    """The stages of forgetting ``sequence`` one concept after another, in order."""
    return [StageSpec(geometry, method, tuple(sequence[:k]), seed, sequence=tuple(sequence))
            for k in range(1, len(sequence) + 1)]


def check_sequence(sequence: tuple, hierarchy) -> None:
    """Refuse a sequence of fewer than two requests, or one whose request lies under a concept
    forgotten before it (it would have nothing left to forget)."""
    if len(sequence) < 2:
        raise InputError(f"--sequential {','.join(sequence)}: a sequence needs at least two concepts; to forget "
                         "one, use --forget")
    for stage, concept in enumerate(sequence[1:], 2):
        earlier = [c for c in sequence[:stage - 1] if c in hierarchy.closure([concept])]
        if earlier:
            raise InputError(f"--sequential {','.join(sequence)}: {concept} (stage {stage}) lies under {earlier[0]}, "
                             "forgotten before it, and would have nothing left to forget; drop it or move it first")


@dataclass(frozen=True)
class StageCheckpoint:
    """The file holding the model after the last finished stage of one sequence, with that
    stage's number, key and record (written atomically after every stage)."""

    path: Path

    @classmethod
    def of(cls, out: Path, spec: StageSpec) -> "StageCheckpoint":
        name = f"{spec.method}-{spec.geometry}-seed{spec.seed}-{spec.sequence_key}.pt"
        return cls(Path(out) / CHECKPOINT_FOLDER / name)

    def save(self, model, spec: StageSpec, record: dict) -> None:
        save_checkpoint(self.path, model, {"stage": spec.stage, "stage_key": spec.key, "record": record})

    def load(self, stages: list, device) -> tuple:
        """``(stage, record, model)`` of the file, checked to be a stage of ``stages``."""
        payload = read_checkpoint(self.path)
        metadata = payload["metadata"]
        stage = metadata.get("stage")
        if not (isinstance(stage, int) and 1 <= stage <= len(stages)) or metadata.get("stage_key") != stages[stage - 1].key:
            raise InputError(f"{self.path} holds no stage of the sequence {', '.join(stages[0].sequence)} "
                             f"({stages[0].label}, seed {stages[0].seed}); delete it (its sequence starts over)")
        model, _ = model_from_payload(payload, self.path, expected_geometry=stages[0].geometry)
        return stage, metadata["record"], model.to(device).eval()


def run_sequences(bench, todo: list, results, out: Path, inputs: dict) -> None:
    """Run every sequence that has a stage in ``todo``, stage after stage, each from the model of
    the one before (rank 0 writes; in a distributed run every process does each stage's work)."""
    sequences = {}
    for spec in todo:
        sequences.setdefault(spec.sequence_key, spec)
    for number, spec in enumerate(sequences.values(), 1):
        if bench.world.is_main:
            tell(f"[{number}/{len(sequences)}] {spec.label}: forgetting {' then '.join(spec.sequence)} "
                 f"(seed {spec.seed})")
        stages = stage_specs(spec.geometry, spec.method, spec.seed, sequence=spec.sequence)
        run_sequence(bench, stages, results, StageCheckpoint.of(out, spec), inputs[spec.geometry])


def run_sequence(bench, stages: list, results, checkpoint: StageCheckpoint, inputs: dict) -> None:
    """The stages of one sequence after the last one saved in ``checkpoint``; a stage already
    recorded is redone (to rebuild its model) only when the checkpoint was lost, and keeps its record."""
    done, model = resume(bench, stages, results, checkpoint)
    recorded = on_main(bench.world, results.keys)
    for spec in stages[done:]:
        if bench.world.is_main:
            again = " again, to rebuild its model (the stage checkpoint is missing)" if spec.key in recorded else ""
            tell(f"    stage {spec.stage}/{len(stages)}: forgetting {spec.request}{again}")
        record, model = run_stage(bench, spec, model)
        if bench.world.is_main:
            record["inputs"] = inputs
            checkpoint.save(model, spec, record)  # before the record: a rerun never redoes a recorded stage
            if spec.key not in recorded:
                results.append(record)
            tell(outcome_line(record) + f"; the request alone {_request_line(record)}")
        barrier(bench.world)


def resume(bench, stages: list, results, checkpoint: StageCheckpoint) -> tuple:
    """``(stages finished, model to continue from)``: the checkpoint's stage and model, or ``0``
    and the pretrained model. A record the checkpoint holds but ``results`` lost (a crash between
    the two writes) is appended."""
    spec = stages[0]
    if not on_main(bench.world, checkpoint.path.exists):
        return 0, bench.base(spec.geometry)
    stage, record, model = checkpoint.load(stages, bench.device)
    if bench.world.is_main:
        tell(f"    continuing after stage {stage} (its model is in {checkpoint.path})")
        if record["key"] not in results.keys():
            tell(f"    the record of stage {stage} was missing from {results.path}: restored from {checkpoint.path}")
            results.append(record)
    return stage, model


def run_stage(bench, spec: StageSpec, start_model) -> tuple:
    """``(record, model)`` of one stage: the method removes the request from ``start_model`` and the
    model is audited for all concepts forgotten so far; ``before`` is the pretrained model's audit."""
    context = bench.context(spec)
    base = bench.base(spec.geometry)
    before = {**bench.before(spec), "request_forget_accuracy": request_accuracy(base, context, spec.request)}
    record, model = run_one(spec, start_model, context, before,
                            environment=bench.environment(progress=bench.world.is_main and not bench.args.no_progress),
                            overrides=bench.trainer_overrides(), unlearn_context=request_context(context, spec.request))
    record["after"]["request_forget_accuracy"] = request_accuracy(model, context, spec.request)
    return record, model


def request_context(context, request: str):
    """The unlearning problem of one request: forget the request's pairs, keep those of ``context``
    (the pairs showing none of the concepts forgotten so far)."""
    from .audits import AuditContext

    alone = AuditContext.build(context.data, [request], seed=context.seed, world=context.world)
    return replace(alone, retain_train=context.retain_train, retain_test=context.retain_test, _cache=[])


def request_accuracy(model, context, request: str) -> float:
    """Zero-shot forget accuracy of ``request`` alone: ``context``'s forget-test images of the
    request's leaf classes, classified among all leaf classes, macro over those classes (the
    embeddings of the audit are reused)."""
    data = context.data
    classes = [k for k, leaf in enumerate(data.classes) if request in data.dataset.hierarchy.closure([leaf])]
    embedded = context.embed(model)
    predictions = zero_shot_predictions(model, embedded.images["forget_test"], embedded.classes)
    return macro_accuracy(predictions, embedded.targets["forget_test"].cpu(), classes)


def _request_line(record: dict) -> str:
    before, after = record["before"]["request_forget_accuracy"], record["after"]["request_forget_accuracy"]
    return f"{percent(before)} -> {percent(after)}"
