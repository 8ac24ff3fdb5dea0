"""The harness's methods: how the model of one run is made from the model it starts from.

Every unlearning objective of :mod:`unlearning` is a method (:class:`ObjectiveMethod`: it unlearns
a copy of the start model). Methods that make their model another way register here with
``@register_method(name)``; :data:`ORACLE` (``retrain``) is the retrain oracle: the default model
of the geometry pretrained from scratch, with the same recipe, on the train pairs that show no
forget concept (docs/SPEC.md section 3). :func:`create_method` gives either kind by name; the
harness calls ``check`` when it plans a run and ``run`` when it makes the run's model."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path

import unlearning
from manifolds import geometry_spec, geometry_specs
from models.distributed import SINGLE, World

from .common import InputError
from .experiment import PRETRAINING_SEED, cached_model, pretrained_entry, trainer_settings, unlearning_data

#: The name of the retrain oracle, which oracle-relative metrics compare every other method with.
ORACLE = "retrain"


@dataclass(frozen=True)
class Environment:
    """Where and how a method runs: the device, the processes, the data-loader workers, and the
    pretrained-model cache (its folder and how long to wait for an entry another command trains)."""

    device: object
    progress: bool = False
    world: World = SINGLE
    workers: int | None = None
    cache_dir: Path | None = None
    lock_timeout: float | None = None


@dataclass
class Outcome:
    """The model a method made, with what its record states about how: the ``settings`` it ran
    with, ``details`` (the record's ``objective``) and ``unlearning`` (steps, seconds, ...)."""

    model: object
    settings: dict
    details: dict
    unlearning: dict


_METHODS: dict = {}


def register_method(name: str):
    """Class decorator: register a harness method under ``name`` (a name no objective has)."""

    def decorator(cls):
        if name in _METHODS or name in unlearning.list_objectives():
            raise ValueError(f"method {name!r} is already registered (as a method or an unlearning objective)")
        cls.name = name
        _METHODS[name] = cls
        return cls

    return decorator


def list_methods() -> list:
    """Every method the harness can run: the unlearning objectives and the registered methods."""
    return sorted([*unlearning.list_objectives(), *_METHODS])


def create_method(name: str):
    """The method called ``name``: a registered harness method, or an unlearning objective."""
    if name in _METHODS:
        return _METHODS[name]()
    if name in unlearning.list_objectives():
        return ObjectiveMethod(name)
    raise InputError(f"--method {name}: unknown objective or method; known: {', '.join(list_methods())}")


class ObjectiveMethod:
    """An unlearning objective as a method: unlearn a copy of the start model with the objective's
    tuned trainer settings for the number of concepts removed at once."""

    def __init__(self, name: str):
        self.name = name

    def check(self, spec, *, checkpoint: bool) -> None:
        """Refuse, at planning time, a run this objective cannot do: options it does not have, no
        tuned settings, or a Euclidean model for an objective that needs a hyperbolic one."""
        objective = unlearning.create_objective(spec.method, **dict(spec.options))
        try:
            unlearning.trainer_defaults(spec.method)  # the harness runs each objective with its own
        except ValueError as error:
            raise InputError(f"--method {spec.method}: {error}") from None
        if objective.requires_hyperbolic and not geometry_spec(spec.geometry).hyperbolic:
            hyperbolic = [g.name for g in geometry_specs() if g.hyperbolic]
            raise InputError(f"--method {spec.method} needs a hyperbolic geometry ({', '.join(hyperbolic)}), "
                             f"not {spec.geometry}; use ac for {geometry_spec(spec.geometry).display_name} "
                             f"or --geometry {hyperbolic[0]}")

    def run(self, spec, start_model, context, *, overrides: dict, environment: Environment) -> Outcome:
        """Unlearn ``context``'s forget concepts from a copy of ``start_model`` (``overrides``: trainer
        settings replacing the objective's own, e.g. ``--steps``)."""
        settings = {**trainer_settings(spec.method, len(context.forget_concepts)), **overrides}
        model = copy.deepcopy(start_model)
        objective = unlearning.create_objective(spec.method, **dict(spec.options))
        result = unlearning.unlearn(model, unlearning_data(context, seed=spec.seed), objective, seed=spec.seed,
                                    device=environment.device, progress=environment.progress,
                                    world=environment.world, workers=environment.workers, **settings)
        return Outcome(model, settings, asdict(objective), {
            "steps": result.steps, "seconds": round(result.seconds, 2), "stopped_early": result.stopped_early,
            "samples_per_second": round(result.samples_per_second, 1), "evaluations": result.evaluations,
            "losses": result.history,
        })


@register_method(ORACLE)
class RetrainOracle:
    """The retrain oracle: the default model of the run's geometry pretrained from scratch (same
    recipe and seed as the full model) on the train pairs showing none of ``spec.forget``, kept in
    the pretrained-model cache under a fingerprint that includes the forget set. The start model
    is not used (it only fixes the geometry); trainer overrides such as ``--steps`` do not apply."""

    def check(self, spec, *, checkpoint: bool) -> None:
        """Refuse what the oracle cannot stand in for: a --checkpoint model (its recipe is not ours)."""
        if checkpoint:
            raise InputError(f"--method {ORACLE} pretrains the default {spec.geometry} model from scratch; it "
                             "is no oracle for a --checkpoint model: drop --checkpoint or the retrain method")
        if spec.options:
            raise InputError(f"--method {ORACLE} has no options, got {dict(spec.options)}")

    def run(self, spec, start_model, context, *, overrides: dict, environment: Environment) -> Outcome:
        """The oracle of ``spec.forget`` from the cache (pretrained now when missing)."""
        if environment.cache_dir is None:
            raise ValueError(f"the {ORACLE} method needs the pretrained-model cache folder (Environment.cache_dir)")
        data = context.data
        entry = pretrained_entry(spec.geometry, data, environment.cache_dir, forget=spec.forget)
        model, metadata = cached_model(entry, spec.geometry, data, device=environment.device,
                                       progress=environment.progress, lock_timeout=environment.lock_timeout,
                                       world=environment.world, workers=environment.workers)
        summary = metadata.get("pretraining", {})
        steps, seconds = summary.get("steps"), summary.get("seconds")
        pairs_per_second = steps * entry.settings["batch_size"] / seconds if steps and seconds else float("nan")
        details = {"name": ORACLE, "cache_entry": entry.path.name, "trained_without": list(entry.forget),
                   "train_pairs": int(len(entry.train_rows(data))),
                   "pretraining_zero_shot_accuracy": summary.get("zero_shot_accuracy")}
        return Outcome(model, {**entry.settings, "seed": PRETRAINING_SEED}, details, {
            "steps": steps, "seconds": seconds, "stopped_early": False,
            "samples_per_second": round(pairs_per_second, 1), "evaluations": [], "losses": [],
        })
