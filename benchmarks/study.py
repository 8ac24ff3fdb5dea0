"""The pre-registered study (issue 13 item 5): one command runs a fixed grid of forgetting runs and
writes ``docs/RESULTS.md`` — tables, figures, and a verdict on each claim computed by fixed rules.

    python -m benchmarks.study                  # the default grid (GRIDS["default"])
    python -m benchmarks.study --quick          # a ~10-minute subset on shapes
    python -m benchmarks.study --plan           # list the grid and its estimated cost; run nothing
    python -m benchmarks.study --with-poincare  # add HAC on the Poincaré ball (its pretraining is slow)

The grid is data (:data:`GRIDS`): experiments of arms (a method on a model), forget counts and
seeds. Each run forgets ``count`` leaf concepts drawn at random per seed
(:func:`benchmarks.run.draw_concepts` with the study seed: nested, the first ``count`` of one
permutation per seed, so the arms of one (dataset, count, seed) forget the same concepts and pair
up). Every (arm, dataset, count, seed) is a *cell* with its own harness output folder under
``--work`` (``<dataset>/k<count>-seed<seed>/<arm>``; a sequence: ``<dataset>/sequential-<n>-seed<seed>/<arm>``),
run through the harness's functions (:mod:`benchmarks.run`) with one shared ``--cache``: the
harness resumes finished runs, and one workbench per dataset reuses the pretrained models and the
audits before unlearning across cells. An experiment naming a cell another one has (the HAC
default in the sweep, say) reuses it. Rerunning the command runs only what is missing, then
rewrites ``--out``; ``--quick`` cells are cells of the default grid, so a quick run is never redone.

Statistics (docs/SPEC.md section 5.2): mean and 95% t-interval over seeds; paired differences over
matching (dataset, count, seed) with a percentile-bootstrap 95% interval (fixed seed) and a
two-sided sign test; verdicts by the rules of :data:`CLAIMS`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

from .common import InputError, atomic_write_text, tell
from .experiment import EVAL_EVERY, TARGET_FORGET_ACCURACY

#: Sentinels of the verdicts.
SUPPORTED, CONTRADICTED, UNDECIDED = "supported", "contradicted", "cannot decide"
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
NOT_MEASURED = "n/a"
#: The fewest pairs a paired or growth test decides on: below it a percentile bootstrap interval is
#: little more than the range of the differences (two pairs of one sign already "exclude 0"); 6 is
#: the fewest with which a two-sided sign test can reach p < 0.05 (2/64).
MIN_PAIRS = 6


# ---------------------------------------------------------------------------------------------- the grid
@dataclass(frozen=True)
class Arm:
    """One method on one model, as the tables name it. ``name`` is the runs' ``variant`` label, so
    it is part of their keys: an arm keeps its name for as long as its results should be reused."""

    name: str
    geometry: str
    method: str
    options: tuple = ()  # objective options as sorted (name, value) pairs

    @property
    def folder(self) -> str:
        """The cell folder's last part: method, geometry and options, readable and distinct."""
        parts = [self.method, self.geometry, *(f"{name}={value:g}" for name, value in self.options)]
        return "-".join(parts).replace("+", "plus")

    def spec(self, forget: tuple, seed: int):
        from .experiment import RunSpec

        return RunSpec(self.geometry, self.method, tuple(forget), seed, self.name, self.options)


HAC_MERU = Arm("HAC on MERU", "lorentz", "hac")
AC_MERU = Arm("AC on MERU", "lorentz", "ac")
AC_CLIP = Arm("AC on CLIP", "euclidean", "ac")
CORE = (HAC_MERU, AC_MERU, AC_CLIP)
HAC_POINCARE = Arm("HAC on Poincaré", "poincare", "hac")
BASELINES = tuple(Arm(f"{title} on MERU", "lorentz", method)
                  for method, title in (("ft", "FT"), ("ga", "GA"), ("neggrad+", "NegGrad+"), ("relabel", "relabel")))
RETRAIN_MERU = Arm("retrain on MERU", "lorentz", "retrain")
RETRAIN_CLIP = Arm("retrain on CLIP", "euclidean", "retrain")

#: HAC's weights the sweep varies (``unlearning.objective_options("hac")`` names): option -> symbol.
SWEEP_WEIGHTS = {"entailment_weight": "λ_E", "norm_weight": "λ_N", "parent_cone_weight": "parent-cone weight"}
SWEEP_VALUES = (0.0, 0.1, 1.0, 10.0, 100.0)


def sweep_arm(option: str, value: float) -> Arm:
    """HAC on MERU with one weight set to ``value`` (HAC itself where that is the default)."""
    import unlearning

    if unlearning.objective_options("hac")[option] == value:
        return HAC_MERU
    return Arm(f"HAC, {SWEEP_WEIGHTS[option]}={value:g}", "lorentz", "hac", ((option, float(value)),))


SWEEP = tuple(dict.fromkeys(sweep_arm(option, value) for option in SWEEP_WEIGHTS for value in SWEEP_VALUES))
ABLATION = (HAC_MERU, Arm("HAC − positive calibration (β=0)", "lorentz", "hac", (("beta", 0.0),)),
            sweep_arm("entailment_weight", 0.0), sweep_arm("norm_weight", 0.0),
            Arm("HAC + parent cone (hac-parent)", "lorentz", "hac-parent"), AC_MERU, AC_CLIP)


@dataclass(frozen=True)
class Experiment:
    """One block of the grid, and one table of ``RESULTS.md``: every arm forgets ``count`` concepts
    drawn per seed, for each count and seed; with ``sequential``, one sequence of ``counts[0]``
    concepts drawn per seed is forgotten one request after another. ``kind`` says how its table
    reads (``scaling``: rows per count and arm, the figures, paired comparisons and claims;
    ``table``: the same rows only; ``sweep``: rows per weight; ``sequential``: rows per stage)."""

    name: str
    dataset: str
    arms: tuple
    counts: tuple
    seeds: tuple
    kind: str = "table"
    note: str = ""

    @property
    def sequential(self) -> bool:
        return self.kind == "sequential"


@dataclass(frozen=True)
class Grid:
    """A pre-registered grid: its experiments in the order they run, and what was trimmed from the
    issue's grid to fit the time budget (shown in ``RESULTS.md``)."""

    name: str
    experiments: tuple
    trimmed: tuple = ()


DEFAULT_GRID = Grid("default", (
    Experiment("Scaling on taxonomy", "taxonomy", CORE, (1, 2, 4, 8, 16), (0, 1, 2, 3, 4), "scaling"),
    Experiment("Scaling on shapes", "shapes", CORE, (1, 2, 4, 8), (0, 1, 2, 3, 4), "scaling"),
    Experiment("Baselines on taxonomy", "taxonomy", (*CORE, *BASELINES), (4,), (0, 1)),
    Experiment("Retrain oracle on shapes", "shapes", (*CORE, RETRAIN_MERU, RETRAIN_CLIP), (1,), (0,)),
    Experiment("Weight sweep on taxonomy", "taxonomy", SWEEP, (4,), (0,), "sweep"),
    Experiment("Ablation on taxonomy", "taxonomy", ABLATION, (4,), (0,)),
    Experiment("Sequential unlearning on shapes", "shapes", (HAC_MERU, AC_CLIP), (3,), (0,), "sequential"),
), trimmed=(
    "baselines (FT, GA, NegGrad+, relabel) on MERU only, at 4 concepts on taxonomy, 2 seeds",
    "the retrain oracle (one full pretraining per forget set, seed and model) at 1 concept on shapes, 1 seed",
    "the weight sweep and the ablation at 4 concepts on taxonomy, 1 seed (no confidence interval)",
    "sequential unlearning: one sequence of 3 concepts on shapes, HAC on MERU and AC on CLIP, 1 seed",
    "the Poincaré ball only with --with-poincare: its pretraining took 7.5x MERU's on this machine",
))

QUICK_GRID = Grid("quick", (
    Experiment("Scaling on shapes", "shapes", CORE, (1, 4), (0, 1), "scaling"),
    Experiment("Retrain oracle on shapes", "shapes", (*CORE, RETRAIN_MERU), (1,), (0,)),
), trimmed=("the --quick subset: shapes only, 1 and 4 concepts, 2 seeds, the oracle on MERU for one seed; "
            "no taxonomy, baselines, sweep, ablation or sequence",))

POINCARE = Experiment("HAC on the Poincaré ball (shapes)", "shapes", (HAC_MERU, HAC_POINCARE), (1, 4), (0, 1),
                      note="the same model as MERU in another chart (README, Measured defaults)")

GRIDS = {"default": DEFAULT_GRID, "quick": QUICK_GRID}


# ---------------------------------------------------------------------------------------------- cells
@dataclass(frozen=True)
class Cell:
    """One arm on one forget set of one seed (``sequential``: one sequence of ``count`` requests):
    the runs of one harness output folder."""

    dataset: str
    arm: Arm
    count: int
    seed: int
    sequential: bool = False

    def folder(self, work: Path) -> Path:
        what = f"sequential-{self.count}" if self.sequential else f"k{self.count}"
        return Path(work) / dataset_label(self.dataset) / f"{what}-seed{self.seed}" / self.arm.folder

    def specs(self, classes: list) -> list:
        """The harness runs of this cell: one, or the stages of its sequence."""
        from .run import draw_concepts
        from .sequential import stage_specs

        if not self.sequential:
            return [self.arm.spec(draw_concepts(classes, self.count, self.seed), self.seed)]
        sequence = draw_sequence(classes, self.count, self.seed)
        return stage_specs(self.arm.geometry, self.arm.method, self.seed, sequence=sequence)

    def describe(self) -> str:
        what = f"a sequence of {self.count}" if self.sequential else f"k={self.count}"
        return f"{dataset_label(self.dataset)} {what} seed {self.seed}: {self.arm.name}"


def draw_sequence(classes: list, length: int, seed: int) -> tuple:
    """The requests of a sequence: the concepts :func:`~benchmarks.run.draw_concepts` draws for
    ``length`` and ``seed``, in the order of its permutation (stage ``k`` forgets the draw for ``k``)."""
    from .run import draw_concepts

    draw_concepts(classes, length, seed)  # refuses a length the dataset cannot take, in words
    order = np.random.default_rng(seed).permutation(len(classes))
    return tuple(classes[i] for i in order[:length])


def dataset_label(dataset: str) -> str:
    """A built-in dataset's name, or a dataset folder's last part."""
    return Path(dataset).name or str(dataset)


def grid_cells(grid: Grid) -> list:
    """Every cell of ``grid`` once, in run order: experiment by experiment, seed, count, arm."""
    cells = OrderedDict()
    for experiment in grid.experiments:
        for cell in experiment_cells(experiment):
            cells.setdefault(cell, None)
    return list(cells)


def experiment_cells(experiment: Experiment) -> list:
    return [Cell(experiment.dataset, arm, count, seed, experiment.sequential)
            for seed in experiment.seeds for count in experiment.counts for arm in experiment.arms]


# ---------------------------------------------------------------------------------------------- cost
#: Rough costs on a quiet 2-core CPU, in seconds, fitted to the grid's run of 2026-12-03 (night) from an
#: empty cache (its cells' times: 45 taxonomy scaling cells 1,176 s with two pretrainings, 24 shapes
#: cells 504 s with two; pretraining ~105 s on shapes, ~140 s on taxonomy). For ``--plan`` only: a
#: cell's time varies with its count and with how early its run stops (the sweep's 150-step runs took ~27 s).
COST = {"run": {"shapes": 10, "taxonomy": 19}, "audit": {"shapes": 3, "taxonomy": 4},
        "pretraining": {"shapes": 105, "taxonomy": 140}, "other_dataset": 20}
#: How much longer a geometry's pretraining takes than MERU's (measured once, see ``trimmed``).
PRETRAINING_FACTOR = {"poincare": 7.5}


def estimate_seconds(cells: list, *, cached: bool = False) -> float:
    """The rough cost of running ``cells`` from scratch (``cached``: pretrained models present)."""
    def cost(kind, dataset):
        return COST[kind].get(dataset_label(dataset), COST["other_dataset"])

    total, audits, models = 0.0, set(), set()
    for cell in cells:
        stages = cell.count if cell.sequential else 1
        total += stages * cost("run", cell.dataset)
        # One audit before unlearning per model and forget set (a stage of a sequence has its own).
        audits.update((cell.dataset, cell.arm.geometry, cell.count, cell.seed, cell.sequential, stage)
                      for stage in range(stages))
        models.add((cell.dataset, cell.arm.geometry))
        if cell.arm.method == "retrain":
            total += cost("pretraining", cell.dataset) * PRETRAINING_FACTOR.get(cell.arm.geometry, 1.0)
    total += sum(cost("audit", audit[0]) for audit in audits)
    if not cached:
        total += sum(cost("pretraining", d) * PRETRAINING_FACTOR.get(g, 1.0) for d, g in models)
    return total


# ---------------------------------------------------------------------------------------------- running
@dataclass
class Study:
    """What one command of the study shares: the options, one harness workbench per dataset (its
    pretrained models and audits before unlearning), and what it ran."""

    work: Path
    cache: str
    device: str = "auto"
    steps: int | None = None
    progress: bool = False
    workers: int | None = None
    benches: dict = field(default_factory=dict)
    ran: int = 0  # runs (sequence stages) made by this command

    def harness_args(self, dataset: str):
        """The harness options a cell of ``dataset`` runs with (as ``benchmarks.run`` would parse them)."""
        from . import run

        argv = ["--dataset", str(dataset), "--cache", str(self.cache), "--device", self.device, "--no-figures",
                "--retain-kept", str(STUDY_RETAIN_KEPT)]
        argv += ["--steps", str(self.steps)] if self.steps is not None else []
        argv += ["--workers", str(self.workers)] if self.workers is not None else []
        argv += [] if self.progress else ["--no-progress"]
        return run.parse_args(argv)

    def bench(self, dataset: str):
        """The harness workbench of ``dataset``, made on first use as ``benchmarks.run`` makes it."""
        if dataset not in self.benches:
            self.benches[dataset] = _make_bench(self.harness_args(dataset))
        return self.benches[dataset]


def _make_bench(args):
    """A :class:`benchmarks.run.Workbench` for ``args.dataset`` after the harness's own checks."""
    import models
    from . import run
    from .common import EncodedDataset, resolve_device
    from .datasets import load_dataset, validate_images
    from .experiment import check_vocabulary
    from .pretrain import default_model

    run.check_arguments(args)
    try:
        device = resolve_device(args.device)
    except ValueError as error:
        raise InputError(str(error)) from None
    dataset = load_dataset(args.dataset, image_size=32)
    run.check_dataset(dataset)
    validate_images(dataset, progress=not args.no_progress)
    data = EncodedDataset.build(dataset, models.model_config(default_model(run.BOTH[0])).text.context_length)
    for geometry in run.BOTH:
        check_vocabulary(models.create_model(default_model(geometry)), data)
    return run.Workbench(args, data, device, {})


def check_cells(study: Study, cells: list) -> None:
    """Refuse, before anything runs, a cell the harness would refuse (an unknown method or option,
    a count the dataset cannot take, a forget set without test pairs)."""
    from .methods import create_method
    from .run import check_forget_set

    for cell in cells:
        if cell.sequential and cell.arm.options:
            # The harness rebuilds a sequence's stages from (geometry, method, seed, sequence) alone.
            raise InputError(f"sequential cell {cell.describe()}: an arm with options {dict(cell.arm.options)} "
                             "cannot run a sequence; expected an arm without options")
        bench = study.bench(cell.dataset)
        try:
            for spec in cell.specs(bench.data.classes):
                create_method(spec.method).check(spec, checkpoint=False)
                check_forget_set(bench.data.dataset, spec.forget)
        except InputError as error:
            raise InputError(f"study cell {cell.describe()}: {error}") from None


def run_cell(study: Study, cell: Cell) -> tuple:
    """Run what is missing of ``cell`` in its folder, as ``benchmarks.run`` runs one output folder
    (same config check, lock, resumable ``results.jsonl`` and ``report.md``). Returns ``(records,
    runs made)``."""
    from . import run
    from .locks import hold_lock
    from .sequential import run_sequences

    bench = study.bench(cell.dataset)
    specs, out = cell.specs(bench.data.classes), cell.folder(study.work)
    fingerprints = run.model_fingerprints(bench.args, bench.data, specs, None)
    inputs = run.record_inputs(bench.args, bench.data, fingerprints)
    run.make_out_folder(out)
    with hold_lock(out / run.OUT_LOCK, f"--out {out}", timeout=bench.args.lock_timeout, notify=tell):
        config = run.experiment_config(bench.args, bench.data, specs, fingerprints)
        try:
            results = run.open_results(out, config, specs, inputs)
        except InputError as error:
            raise InputError(f"study cell {cell.describe()}: {error} (a cell folder under --work)") from None
        todo = [spec for spec in specs if spec.key not in results.keys()]
        if todo:
            (run_sequences if cell.sequential else run.run_missing)(bench, todo, results, out, inputs)
        run.write_outputs(bench.args, out, specs, results)  # the cell's report.md, as the harness keeps it
        # The audit contexts hold the last model's embeddings; the audits before unlearning stay cached.
        bench.contexts.clear()
        planned = {spec.key for spec in specs}
        return [record for record in results.records if record["key"] in planned], len(todo)


def run_study(grid: Grid, *, work, out, cache, device: str = "auto", steps: int | None = None,
              progress: bool = False, workers: int | None = None, jobs: int = 1, worker_setup=None) -> dict:
    """Run every missing cell of ``grid`` and write ``out`` (after each experiment, and at the end).
    With ``jobs`` > 1 the cells run in that many worker processes (:func:`run_cells_in_parallel`;
    ``worker_setup``, a module-level function, runs first in each of them). Returns
    ``{"runs_made": n, "cells": n, "verdicts": [...]}``."""
    if jobs < 1:
        raise InputError(f"--jobs must be at least 1, got {jobs}")
    began = time.perf_counter()
    study = Study(Path(work), str(cache), device=device, steps=steps, progress=progress, workers=workers)
    cells = grid_cells(grid)
    check_cells(study, cells)
    records, done_with, finished = {}, set(), False

    def done(cell, cell_records, made, seconds):
        records[cell] = cell_records
        study.ran += made
        tell(progress_line(len(records), len(cells), cell, cell_records, made, seconds))
        for experiment in grid.experiments:
            if experiment not in done_with and all(c in records for c in experiment_cells(experiment)):
                done_with.add(experiment)
                # An interim RESULTS.md (figures are drawn at the end): a long grid shows what it has so far.
                write_results(grid, records, out=Path(out), timing=record_time(study, began, save=False),
                              steps=steps, figures=False)

    try:
        if jobs == 1:
            for cell in cells:
                cell_began = time.perf_counter()
                cell_records, made = run_cell(study, cell)
                done(cell, cell_records, made, time.perf_counter() - cell_began)
        else:
            run_cells_in_parallel(study, cells, jobs=jobs, done=done, setup=worker_setup)
        finished = True
    finally:
        # The time of a command cut short counts too: the grid is then finished by several commands.
        timing = record_time(study, began, save=bool(study.ran) or not finished)
    verdicts = write_results(grid, records, out=Path(out), timing=timing, steps=steps)
    return {"runs_made": study.ran, "cells": len(cells), "verdicts": verdicts}


# ---------------------------------------------------------------------------------------------- parallel cells
_worker_study: Study | None = None  # the study of a worker process of run_cells_in_parallel


def worker_device(device: str, index: int) -> str:
    """The device of worker ``index``: one GPU each, round robin over the visible ones, where the
    study runs on CUDA; else ``device`` (the workers then share the CPU's cores)."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        return f"cuda:{index % torch.cuda.device_count()}"
    return device


def _start_worker(settings: dict, threads: int, start_method: str, slots, setup) -> None:
    """Process-pool initializer: this worker's :class:`Study`, device and intra-op threads, then ``setup``."""
    import multiprocessing

    import torch

    global _worker_study
    index = slots.get()
    # A spawned interpreter starts its own children (data-loader workers) by spawning too, each
    # importing torch afresh (measured: 33 s per cell of a tiny study instead of 1 s); start them as
    # the calling program does.
    multiprocessing.set_start_method(start_method, force=True)
    torch.set_num_threads(threads)
    _worker_study = Study(**{**settings, "device": worker_device(settings["device"], index)})
    if setup is not None:
        setup()


def _pretrain_in_worker(dataset: str, geometry: str) -> None:
    _worker_study.bench(dataset).base(geometry)


def _run_cell_in_worker(cell: Cell) -> tuple:
    began = time.perf_counter()
    records, made = run_cell(_worker_study, cell)
    return records, made, time.perf_counter() - began


def run_cells_in_parallel(study: Study, cells: list, *, jobs: int, done, setup=None) -> None:
    """Run ``cells`` in ``jobs`` worker processes and call ``done(cell, records, runs made, seconds)``
    in this process as each finishes. ``setup`` (a module-level function, or ``None``) runs in each
    worker before its first task: the workers are fresh interpreters (``spawn``), so objectives,
    datasets or audits registered by the calling program must be registered there again.

    Every pretrained model the cells start from is made first, one task per model, so that no two
    workers wait on one model while another model is not being trained; a cell is queued once its
    model is in the cache, behind the pretrainings still queued. Each worker keeps its own
    workbenches (models and audits before unlearning, as one command does) and, on a CPU, takes an
    equal share of its cores as intra-op threads. Where it pays: one GPU per worker, or a CPU with
    more cores than one small model's operations can use; on the 2-core CPU two workers of one
    thread took 1.09-1.10x one process of two threads (README, "The study"). A cell's numbers do not
    depend on which worker ran it or how many there are, up to float rounding (each cell is seeded
    and starts from the cached model). An error in a worker stops the pool and is raised here;
    finished runs stay in their folders."""
    import multiprocessing
    import os
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    context = multiprocessing.get_context("spawn")  # a forked torch process can deadlock in its thread pools
    slots = context.Queue()
    for index in range(jobs):
        slots.put(index)
    settings = {"work": study.work, "cache": study.cache, "device": study.device, "steps": study.steps,
                "progress": False, "workers": study.workers}  # bars of parallel workers would interleave
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cpus // jobs)
    by_model = OrderedDict()
    for cell in cells:
        by_model.setdefault((cell.dataset, cell.arm.geometry), []).append(cell)
    pool = ProcessPoolExecutor(jobs, mp_context=context, initializer=_start_worker,
                               initargs=(settings, threads, multiprocessing.get_start_method(), slots, setup))
    try:
        pending = {pool.submit(_pretrain_in_worker, *model): ("model", model) for model in by_model}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                kind, what = pending.pop(future)
                result = future.result()  # a worker's error is raised here
                if kind == "model":
                    pending.update({pool.submit(_run_cell_in_worker, cell): ("cell", cell) for cell in by_model[what]})
                else:
                    done(what, *result)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def progress_line(number: int, total: int, cell: Cell, records: list, made: int, seconds: float) -> str:
    """One line per cell: what it is, whether it ran, and its outcome (the last stage of a sequence)."""
    from .report import percent

    state = f"ran {made} run(s) in {seconds:.0f} s" if made else "already done"
    last = records[-1]["after"] if records else {}
    return (f"[{number}/{total}] {cell.describe()}: {state}; forget {percent(last.get('forget_accuracy'))}, "
            f"retain {percent(last.get('retain_accuracy'))}")


TIMING_FILE = "timing.json"


def record_time(study: Study, began: float, *, save: bool) -> dict:
    """The wall time of this command so far and of the earlier ones saved in ``work/timing.json``
    (with ``save``, this command's time is added there)."""
    path = study.work / TIMING_FILE
    earlier = json.loads(path.read_text()) if path.exists() else {"seconds": 0.0, "commands": 0}
    now = time.perf_counter() - began
    if save:
        from .common import write_json

        write_json(path, {"seconds": earlier["seconds"] + now, "commands": earlier["commands"] + 1})
    return {"this_command": now, "earlier": earlier["seconds"], "earlier_commands": earlier["commands"],
            "runs_made": study.ran}


# ---------------------------------------------------------------------------------------------- rows
#: The metrics of the study's tables: key -> (title, format). Keys of a record's ``after`` audit,
#: plus ``retain_kept`` (retain accuracy after / before) and ``average_gap`` (to the retrain oracle).
METRICS = OrderedDict([
    ("forget_accuracy", ("forget acc ↓", "pct")),
    ("retain_accuracy", ("retain acc ↑", "pct")),
    ("retain_kept", ("retain kept", "pct")),
    ("parent_accuracy", ("parent acc", "pct")),
    ("mia_auc", ("MIA AUC", "num")),
    ("probe_forget_accuracy", ("probe forget", "pct")),
    ("forget_tree_error", ("forget TIE", "num")),
    ("forget_lca_depth", ("forget LCA depth", "num")),
    ("average_gap", ("oracle avg gap", "pts")),
    ("unlearning_steps", ("steps", "steps")),
    ("stopped_early", ("stopped early", "share")),
])
SEQUENTIAL_METRICS = OrderedDict([
    ("request_forget_accuracy", ("request forget acc ↓", "pct")),
    ("forget_accuracy", ("forget acc so far ↓", "pct")),
    ("retain_accuracy", ("retain acc ↑", "pct")),
    ("parent_accuracy", ("parent acc", "pct")),
    ("mia_auc", ("MIA AUC", "num")),
])
HYPERBOLICITY_METRICS = OrderedDict([
    ("curvature", ("c", "num")),
    ("image_scaled_dist0_median", ("image √c·d₀ median", "num")),
    ("gromov_delta_relative", ("2δ/diam", "num")),
])


def rows_of(records_by_cell: dict) -> list:
    """One flat row per record: the cell's dataset, arm, count and seed (a stage's count is its
    stage), the ``after`` and ``before`` values, and the gap to the retrain oracle where the cell's
    geometry, forget set and seed have one (:func:`benchmarks.report.oracle_gaps`)."""
    from .report import oracle_gaps

    rows = []
    for dataset in dict.fromkeys(cell.dataset for cell in records_by_cell):
        cells = [cell for cell in records_by_cell if cell.dataset == dataset]
        records = [record for cell in cells for record in records_by_cell[cell]]
        gaps = {id(record): gap["average_gap"] for record, gap in oracle_gaps(records)}
        for cell in cells:
            for record in records_by_cell[cell]:
                rows.append(row_of(record, cell, gaps.get(id(record))))
    return rows


def row_of(record: dict, cell: Cell, average_gap=None) -> dict:
    """The row of one record of ``cell`` (see :func:`rows_of`)."""
    from .methods import ORACLE

    after, before = dict(record["after"]), dict(record["before"])
    after["retain_kept"] = _ratio(after.get("retain_accuracy"), before.get("retain_accuracy"))
    after["average_gap"] = average_gap
    # How the run ended (the trainer stops at the first evaluation that meets its targets); the
    # retrain oracle's summary is of its pretraining, not of an unlearning run.
    trained = {} if record.get("method") == ORACLE else record.get("unlearning") or {}
    after["unlearning_steps"] = trained.get("steps")
    after["stopped_early"] = None if "stopped_early" not in trained else float(trained["stopped_early"])
    return {"dataset": cell.dataset, "arm": cell.arm.name, "count": len(record["forget"]), "seed": record["seed"],
            "forget": tuple(sorted(record["forget"])), "sequential": cell.sequential, "after": after,
            "before": before}


def _ratio(numerator, denominator):
    if not (_finite(numerator) and _finite(denominator)) or denominator == 0:
        return None
    return numerator / denominator


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def select(rows: list, *, dataset=None, arm=None, count=None, seeds=None, sequential=False) -> list:
    """The rows matching every given field (``seeds``: a collection)."""
    return [row for row in rows if row["sequential"] == sequential
            and (dataset is None or row["dataset"] == dataset) and (arm is None or row["arm"] == arm)
            and (count is None or row["count"] == count) and (seeds is None or row["seed"] in seeds)]


# ---------------------------------------------------------------------------------------------- statistics
@dataclass(frozen=True)
class Estimate:
    """A mean with its 95% confidence interval over ``n`` values (``half_width`` is ``None`` for
    fewer than two values; ``mean`` for none)."""

    mean: float | None
    half_width: float | None
    n: int

    @property
    def low(self):
        return None if self.half_width is None else self.mean - self.half_width

    @property
    def high(self):
        return None if self.half_width is None else self.mean + self.half_width


def measured(values) -> list:
    """The finite numbers of ``values`` (a metric not measured is ``None``), as floats."""
    return [float(value) for value in values if _finite(value)]


def mean_ci(values, *, confidence: float = CONFIDENCE) -> Estimate:
    """Mean and Student-t interval ``mean ± t_{(1+confidence)/2, n−1} · s/√n`` of the measured
    ``values`` (``s`` the sample standard deviation)."""
    values = measured(values)
    if not values:
        return Estimate(None, None, 0)
    mean = float(np.mean(values))
    if len(values) < 2:
        return Estimate(mean, None, 1)
    half = float(stats.t.ppf((1 + confidence) / 2, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values)))
    return Estimate(mean, half, len(values))


def sample_means(samples: np.ndarray) -> np.ndarray:
    """The mean of each resample ``(resamples, n) -> (resamples,)``."""
    return samples.mean(axis=1)


def sample_slopes(samples: np.ndarray) -> np.ndarray:
    """The least-squares slope of ``y`` on ``log2(count)`` in each resample of ``(count, y)``
    points ``(resamples, n, 2) -> (resamples,)``; ``nan`` where the counts do not vary."""
    x, y = np.log2(samples[..., 0]), samples[..., 1]
    x = x - x.mean(axis=1, keepdims=True)
    spread = (x * x).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(spread > 0, (x * (y - y.mean(axis=1, keepdims=True))).sum(axis=1) / spread, np.nan)


def bootstrap_ci(values, *, statistic=sample_means, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                 confidence: float = CONFIDENCE):
    """Percentile-bootstrap interval ``(low, high)`` of ``statistic`` over ``values`` (rows of an
    array, resampled with replacement ``resamples`` times by ``numpy.random.default_rng(seed)``,
    so the same input gives the same interval; ``statistic`` maps the stacked resamples to one
    value each, e.g. :func:`sample_means`). ``None`` for fewer than two values. Resamples on which
    ``statistic`` is not finite (a slope over one distinct count) are left out."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return None
    picks = np.random.default_rng(seed).integers(0, len(values), size=(resamples, len(values)))
    draws = np.asarray(statistic(values[picks]), dtype=float)
    draws = draws[np.isfinite(draws)]
    if not draws.size:
        return None
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def sign_test(differences) -> float | None:
    """Two-sided sign test of the measured ``differences``: the binomial probability (p = ½) of a
    split of positive and negative signs at least as uneven; ties (0) are dropped. ``None`` when
    no difference is non-zero."""
    values = measured(differences)
    positive, negative = sum(v > 0 for v in values), sum(v < 0 for v in values)
    if positive + negative == 0:
        return None
    return float(stats.binomtest(positive, positive + negative, 0.5).pvalue)


@dataclass(frozen=True)
class Comparison:
    """``a − b`` of one metric over paired runs: the mean difference, its bootstrap interval, the
    sign test, and how often ``a`` was above / below ``b``."""

    metric: str
    a: str
    b: str
    differences: tuple
    mean: float | None
    interval: tuple | None
    sign_p: float | None

    @property
    def n(self) -> int:
        return len(self.differences)

    @property
    def above(self) -> int:
        return sum(d > 0 for d in self.differences)

    @property
    def below(self) -> int:
        return sum(d < 0 for d in self.differences)


def paired_differences(rows: list, a: str, b: str, metric: str) -> list:
    """``(count, a − b)`` of ``metric`` after unlearning for every (dataset, count, seed) where
    arms ``a`` and ``b`` both have a measured value for the same forget set, in row order."""
    others = {(row["dataset"], row["count"], row["seed"], row["forget"]): row for row in rows if row["arm"] == b}
    pairs = []
    for row in rows:
        other = others.get((row["dataset"], row["count"], row["seed"], row["forget"]))
        if row["arm"] == a and other is not None:
            x, y = row["after"].get(metric), other["after"].get(metric)
            if _finite(x) and _finite(y):
                pairs.append((row["count"], float(x) - float(y)))
    return pairs


def compare(rows: list, a: str, b: str, metric: str) -> Comparison:
    """The :class:`Comparison` of arms ``a`` and ``b`` on ``metric`` over ``rows``."""
    differences = tuple(d for _, d in paired_differences(rows, a, b, metric))
    return Comparison(metric, a, b, differences, float(np.mean(differences)) if differences else None,
                      bootstrap_ci(differences), sign_test(differences))


def slope(points) -> float:
    """Least-squares slope of ``y`` on ``log2(count)`` over ``points`` ``(n, 2)`` of ``(count, y)``;
    ``nan`` when the counts do not vary."""
    return float(sample_slopes(np.asarray(points, dtype=float)[None])[0])


def growth(rows: list, a: str, b: str, metric: str) -> tuple:
    """How ``b − a`` (``a``'s advantage when lower is better) changes per doubling of the count:
    ``(slope, bootstrap interval or None, number of pairs)``."""
    points = [(count, -difference) for count, difference in paired_differences(rows, a, b, metric)]
    if len({count for count, _ in points}) < 2:
        return None, None, len(points)
    return slope(points), bootstrap_ci(points, statistic=sample_slopes), len(points)


# ---------------------------------------------------------------------------------------------- claims
def direction_verdict(interval, direction: int, *, n: int) -> str:
    """``supported`` when the interval lies wholly on the claimed side of 0 (``direction`` +1:
    above, −1: below), ``contradicted`` when wholly on the other side, else ``cannot decide``
    (also with fewer than :data:`MIN_PAIRS` pairs ``n``)."""
    if interval is None or n < MIN_PAIRS:
        return UNDECIDED
    low, high = (direction * value for value in interval)
    low, high = min(low, high), max(low, high)
    return SUPPORTED if low > 0 else CONTRADICTED if high < 0 else UNDECIDED


def threshold_verdict(estimates: list, threshold: float, direction: int) -> str:
    """For "the mean is at most ``threshold``" (``direction`` −1) or "at least" (+1) at every count:
    ``supported`` when every count's interval lies on the claimed side (bounds included),
    ``contradicted`` when some count's interval lies wholly on the other side, else ``cannot decide``
    (also when a count has no interval: one seed)."""
    if not estimates:
        return UNDECIDED

    def side(value):
        return direction * (value - threshold)

    if any(e.half_width is not None and side(e.low) < 0 and side(e.high) < 0 for e in estimates):
        return CONTRADICTED
    if all(e.half_width is not None and side(e.low) >= 0 and side(e.high) >= 0 for e in estimates):
        return SUPPORTED
    return UNDECIDED


def combine(verdicts: list) -> str:
    """A claim made of parts: ``contradicted`` if a part is, ``supported`` if every part is, else
    ``cannot decide``."""
    if CONTRADICTED in verdicts:
        return CONTRADICTED
    return SUPPORTED if verdicts and all(v == SUPPORTED for v in verdicts) else UNDECIDED


@dataclass(frozen=True)
class Part:
    """One test of a claim, with its verdict and the numbers it was decided on (as text)."""

    text: str
    evidence: str
    verdict: str


def threshold_part(rows: list, arm: str, metric: str, threshold: float, direction: int, text: str) -> Part:
    """A :func:`threshold_verdict` on ``arm``'s ``metric`` per count."""
    counts = sorted({row["count"] for row in rows if row["arm"] == arm})
    estimates = [mean_ci(row["after"].get(metric) for row in select(rows, arm=arm, count=count)) for count in counts]
    kind = METRICS.get(metric, (None, "num"))[1]
    evidence = "; ".join(f"k={count}: {format_estimate(e, kind)}" for count, e in zip(counts, estimates))
    return Part(text, evidence or "no runs", threshold_verdict(estimates, threshold, direction))


def paired_part(rows: list, a: str, b: str, metric: str, direction: int, text: str) -> Part:
    """A :func:`direction_verdict` on the bootstrap interval of the paired ``a − b``."""
    comparison = compare(rows, a, b, metric)
    return Part(text, describe_comparison(comparison),
                direction_verdict(comparison.interval, direction, n=comparison.n))


def growth_part(rows: list, a: str, b: str, metric: str, text: str) -> Part:
    """A :func:`direction_verdict` (+1) on the bootstrap interval of :func:`growth`."""
    value, interval, n = growth(rows, a, b, metric)
    evidence = ("needs two counts or more" if value is None else
                f"slope {value * 100:+.1f} pts per doubling, 95% CI {_interval(interval, 'pts')}, n={n}")
    return Part(text, evidence, direction_verdict(interval, +1, n=n))


NEAR_PERFECT = 0.05  # forget accuracy: the early-stopping target of the trainer
#: The early-stopping rule of every cell, passed to the harness explicitly so that a later change of
#: its default cannot change the grid: a run stops at the first evaluation that meets the forget
#: target with retain accuracy back to this share of its value before unlearning (both on training
#: images; ``benchmarks.run --retain-kept``). The first run of the grid (2026-12-03) stopped at the
#: forget target alone and caught some runs in the first steps' drop of retain accuracy.
STUDY_RETAIN_KEPT = 0.9
REASONABLE_RETAIN = 0.85  # retain accuracy kept: the tuning target (README, Measured defaults)
PROBE_FINDS = 0.5  # a linear probe that names the concept on half its images still finds it


def claim_v1(rows: list) -> list:
    return [
        threshold_part(rows, HAC_MERU.name, "forget_accuracy", NEAR_PERFECT, -1,
                       f"HAC on MERU: forget accuracy ≤ {NEAR_PERFECT:.0%} at every count"),
        growth_part(rows, HAC_MERU.name, AC_CLIP.name, "forget_accuracy",
                    "HAC's forget-accuracy advantage over AC on CLIP grows with the count"),
        growth_part(rows, HAC_MERU.name, AC_MERU.name, "forget_accuracy",
                    "HAC's forget-accuracy advantage over AC on MERU grows with the count"),
    ]


def claim_v2(rows: list) -> list:
    return [
        paired_part(rows, HAC_MERU.name, AC_CLIP.name, "forget_accuracy", -1,
                    "forget accuracy: HAC on MERU below AC on CLIP"),
        paired_part(rows, HAC_MERU.name, AC_MERU.name, "forget_accuracy", -1,
                    "forget accuracy: HAC on MERU below AC on MERU"),
        threshold_part(rows, HAC_MERU.name, "retain_kept", REASONABLE_RETAIN, +1,
                       f"HAC on MERU keeps ≥ {REASONABLE_RETAIN:.0%} of its retain accuracy at every count"),
    ]


def claim_ours(rows: list) -> list:
    return [
        paired_part(rows, HAC_MERU.name, AC_CLIP.name, "forget_tree_error", -1,
                    "forget images land nearer in the tree: TIE of HAC on MERU below AC on CLIP"),
        paired_part(rows, HAC_MERU.name, AC_CLIP.name, "forget_lca_depth", +1,
                    "deeper common ancestor: LCA depth of HAC on MERU above AC on CLIP"),
        paired_part(rows, HAC_MERU.name, AC_CLIP.name, "parent_accuracy", +1,
                    "parent kept: parent accuracy of HAC on MERU above AC on CLIP"),
        threshold_part(rows, AC_CLIP.name, "probe_forget_accuracy", PROBE_FINDS, +1,
                       f"Euclidean forgetting disconnects: a linear probe finds the concept after AC on CLIP "
                       f"(probe forget accuracy ≥ {PROBE_FINDS:.0%} at every count)"),
    ]


#: The claims the study tests: (name, statement, parts). Each is decided per dataset of a scaling
#: experiment, on that experiment's rows, and combined by :func:`combine`.
CLAIMS = (
    ("v1", "near-perfect forgetting with HAC, and an advantage that grows with the number of concepts", claim_v1),
    ("v2", "lower forget accuracy than AC with reasonable retain accuracy", claim_v2),
    ("ours", "hyperbolic forgetting reorganises (forget images predicted as a near relative, parent kept) while "
             "Euclidean forgetting disconnects (a linear probe still finds the concept)", claim_ours),
)


@dataclass(frozen=True)
class Verdict:
    claim: str
    statement: str
    dataset: str
    parts: tuple
    verdict: str


def decide_claims(grid: Grid, rows: list) -> list:
    """A :class:`Verdict` per claim and scaling experiment of ``grid``."""
    verdicts = []
    for experiment in grid.experiments:
        if experiment.kind != "scaling":
            continue
        chosen = experiment_rows(rows, experiment)
        for name, statement, test in CLAIMS:
            parts = tuple(test(chosen))
            verdicts.append(Verdict(name, statement, dataset_label(experiment.dataset), parts,
                                    combine([part.verdict for part in parts])))
    return verdicts


def experiment_rows(rows: list, experiment: Experiment) -> list:
    """The rows of ``experiment``: its dataset, arms, counts and seeds."""
    arms = {arm.name for arm in experiment.arms}
    return [row for row in select(rows, dataset=experiment.dataset, sequential=experiment.sequential)
            if row["arm"] in arms and row["seed"] in experiment.seeds
            and (experiment.sequential or row["count"] in experiment.counts)]


# ---------------------------------------------------------------------------------------------- formatting
SCALES = {"pct": (100.0, "%", 1), "pts": (100.0, "", 1), "num": (1.0, "", 3), "steps": (1.0, "", 0)}


def format_value(value, kind: str) -> str:
    if value is None:
        return NOT_MEASURED
    scale, suffix, digits = SCALES[kind]
    return f"{value * scale:.{digits}f}{suffix}"


def format_estimate(estimate: Estimate, kind: str) -> str:
    """``mean ± half-width`` (the 95% interval), or the mean alone for one value."""
    if estimate.mean is None:
        return NOT_MEASURED
    scale, suffix, digits = SCALES[kind]
    if estimate.half_width is None:
        return f"{estimate.mean * scale:.{digits}f}{suffix}"
    return f"{estimate.mean * scale:.{digits}f} ± {estimate.half_width * scale:.{digits}f}{suffix}"


def _interval(interval, kind: str) -> str:
    if interval is None:
        return NOT_MEASURED
    scale, _, digits = SCALES[kind]
    return f"[{interval[0] * scale:+.{digits}f}, {interval[1] * scale:+.{digits}f}]"


def describe_comparison(comparison: Comparison) -> str:
    kind = "pts" if METRICS.get(comparison.metric, (None, "num"))[1] in ("pct", "pts") else "num"
    unit = " pts" if kind == "pts" else ""
    p = NOT_MEASURED if comparison.sign_p is None else f"{comparison.sign_p:.3f}"
    scale, _, digits = SCALES[kind]
    mean = NOT_MEASURED if comparison.mean is None else f"{comparison.mean * scale:+.{digits}f}{unit}"
    return (f"mean difference {mean}, 95% CI {_interval(comparison.interval, kind)}, sign test p={p} "
            f"({comparison.above} above, {comparison.below} below, n={comparison.n})")


def markdown_table(header: list, lines: list) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                      *("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines)])


# ---------------------------------------------------------------------------------------------- tables
def experiment_table(rows: list, experiment: Experiment) -> str:
    """Per count and arm: mean ± 95% CI over seeds of every :data:`METRICS` column."""
    chosen = experiment_rows(rows, experiment)
    lines = []
    for count in experiment.counts:
        for arm in experiment.arms:
            group = select(chosen, arm=arm.name, count=count)
            if group:
                lines.append([count, arm.name, len(group), *metric_cells(group, METRICS)])
    return markdown_table(["k", "arm", "seeds", *(title for title, _ in METRICS.values())], lines) if lines else \
        "No finished runs yet."


def metric_cells(group: list, metrics: dict) -> list:
    """Mean ± 95% CI over the rows of ``group`` of each metric of ``metrics`` (key -> (title, format));
    a ``share`` (a yes/no per run) as "yes of measured": an interval of a proportion over 2-3 runs says nothing."""
    return [format_share(row["after"].get(metric) for row in group) if kind == "share" else
            format_estimate(mean_ci(row["after"].get(metric) for row in group), kind)
            for metric, (_, kind) in metrics.items()]


def format_share(values) -> str:
    """``"2/3"``: how many of the measured yes/no values (1.0 / 0.0) are yes; n/a when none is measured."""
    measured_values = measured(values)
    return f"{sum(v == 1.0 for v in measured_values)}/{len(measured_values)}" if measured_values else NOT_MEASURED


def sweep_table(rows: list, experiment: Experiment) -> str:
    """One row per swept weight and value (the default HAC row under each weight)."""
    import unlearning

    chosen = experiment_rows(rows, experiment)
    defaults = unlearning.objective_options("hac")
    metrics = OrderedDict((m, v) for m, v in METRICS.items() if m != "average_gap")  # the sweep has no oracle
    lines = []
    for option, symbol in SWEEP_WEIGHTS.items():
        for value in SWEEP_VALUES:
            group = select(chosen, arm=sweep_arm(option, value).name)
            if group:
                label = f"{symbol} = {value:g}" + (" (HAC default)" if defaults[option] == value else "")
                lines.append([label, len(group), *metric_cells(group, metrics)])
    titles = [title for title, _ in metrics.values()]
    return markdown_table(["weight", "runs", *titles], lines) if lines else "No finished runs yet."


def sequential_table(rows: list, experiment: Experiment) -> str:
    """Per arm and stage: mean ± CI over seeds of :data:`SEQUENTIAL_METRICS`."""
    chosen = experiment_rows(rows, experiment)
    lines = []
    for arm in experiment.arms:
        for stage in range(1, experiment.counts[0] + 1):
            group = select(chosen, arm=arm.name, count=stage, sequential=True)
            if group:
                lines.append([arm.name, stage, len(group), *metric_cells(group, SEQUENTIAL_METRICS)])
    return markdown_table(["arm", "stage", "seeds", *(title for title, _ in SEQUENTIAL_METRICS.values())], lines) \
        if lines else "No finished runs yet."


TABLES = {"scaling": experiment_table, "table": experiment_table, "sweep": sweep_table,
          "sequential": sequential_table}

#: The paired comparisons reported for every scaling experiment: (a, b, what the difference isolates).
PAIRS = ((HAC_MERU, AC_MERU, "the objective (same MERU model)"), (AC_MERU, AC_CLIP, "the geometry (same AC objective)"),
         (HAC_MERU, AC_CLIP, "method and geometry together"))
PAIRED_METRICS = ("forget_accuracy", "retain_accuracy", "parent_accuracy", "mia_auc", "probe_forget_accuracy",
                  "forget_tree_error", "forget_lca_depth")


def paired_table(rows: list, experiment: Experiment) -> str:
    """``a − b`` per pair of :data:`PAIRS` and metric of :data:`PAIRED_METRICS`, pooled over counts."""
    chosen = experiment_rows(rows, experiment)
    lines = []
    for a, b, _ in PAIRS:
        for metric in PAIRED_METRICS:
            comparison = compare(chosen, a.name, b.name, metric)
            if comparison.n:
                lines.append([f"{a.name} − {b.name}", METRICS[metric][0], *comparison_cells(comparison)])
    return markdown_table(["difference", "metric", "n", "mean", "95% CI (bootstrap)", "sign test p", "above/below"],
                          lines) if lines else "No paired runs yet."


#: The metrics of the per-count paired table.
PER_COUNT_METRICS = ("forget_accuracy", "retain_accuracy")


def paired_per_count_table(rows: list, experiment: Experiment) -> str:
    """``a − b`` per pair and count for :data:`PER_COUNT_METRICS`: mean [bootstrap 95% CI] (n)."""
    chosen = experiment_rows(rows, experiment)
    lines = []
    for a, b, _ in PAIRS:
        for count in experiment.counts:
            comparisons = [compare(select(chosen, count=count), a.name, b.name, m) for m in PER_COUNT_METRICS]
            if any(c.n for c in comparisons):
                lines.append([f"{a.name} − {b.name}", count, *(_short_comparison(c) for c in comparisons)])
    return markdown_table(["difference", "k", *(f"{METRICS[m][0]} (pts)" for m in PER_COUNT_METRICS)], lines) \
        if lines else ""


def _short_comparison(comparison: Comparison) -> str:
    if not comparison.n:
        return NOT_MEASURED
    return f"{comparison.mean * 100:+.1f} {_interval(comparison.interval, 'pts')} (n={comparison.n})"


def comparison_cells(comparison: Comparison) -> list:
    kind = "pts" if METRICS[comparison.metric][1] in ("pct", "pts") else "num"
    scale, _, digits = SCALES[kind]
    p = NOT_MEASURED if comparison.sign_p is None else f"{comparison.sign_p:.3f}"
    return [comparison.n, f"{comparison.mean * scale:+.{digits}f}", _interval(comparison.interval, kind), p,
            f"{comparison.above}/{comparison.below}"]


def hyperbolicity_table(rows: list, experiment: Experiment) -> str:
    """Per arm, over all its runs of the experiment: mean before → mean ± CI after of
    :data:`HYPERBOLICITY_METRICS`."""
    chosen = experiment_rows(rows, experiment)
    lines = []
    for arm in experiment.arms:
        group = select(chosen, arm=arm.name)
        if group:
            cells = []
            for metric in HYPERBOLICITY_METRICS:
                before = mean_ci(r["before"].get(metric) for r in group)
                after = mean_ci(r["after"].get(metric) for r in group)
                cells.append(f"{format_value(before.mean, 'num')} → {format_estimate(after, 'num')}")
            lines.append([arm.name, len(group), *cells])
    titles = [f"{title} before → after" for title, _ in HYPERBOLICITY_METRICS.values()]
    return markdown_table(["arm", "runs", *titles], lines) if lines else "No finished runs yet."


def flat_regime_sentence(rows: list, experiment: Experiment) -> str:
    """Whether MERU's image embedding lies in the nearly flat regime (median √c·d₀ below 1) before
    unlearning, in one sentence computed from the rows."""
    group = select(experiment_rows(rows, experiment), arm=HAC_MERU.name)
    median = mean_ci(r["before"].get("image_scaled_dist0_median") for r in group).mean
    if median is None:
        return ""
    regime = "below 1: most images lie in the nearly flat regime of the hyperboloid" if median < 1 else \
        "at least 1: most images lie where the hyperboloid's distances grow exponentially"
    return f"Before unlearning the pretrained MERU's median image radius √c·d₀ is {median:.3f}, {regime}."


SCALED_QUANTILES = ("5", "25", "50", "75", "95")


def pretrained_hyperbolicity_table(rows: list, experiment: Experiment) -> str:
    """The pretrained MERU model before unlearning (issue 13 item 1: how much hyperbolic room it uses):
    curvature, quantiles of √c·d₀ for test images and captions, the tangent-space approximation's
    rank agreement and relative gap, 2δ/diam; means over the HAC runs' before-audits."""
    group = select(experiment_rows(rows, experiment), arm=HAC_MERU.name)
    if not group:
        return ""

    def mean_of(read):
        return mean_ci(read(r["before"]) for r in group).mean

    def quantile(key, q):
        return lambda before: (before.get(key) or {}).get(q)

    lines = [[f"{kind} √c·d₀", *(format_value(mean_of(quantile(f"{kind}_scaled_dist0", q)), "num")
                                 for q in SCALED_QUANTILES)] for kind in ("image", "text")]
    table = markdown_table(["pretrained MERU", *(f"{q}%" for q in SCALED_QUANTILES)], lines)
    scalars = ", ".join(f"{title} {format_value(mean_of(lambda b, key=key: b.get(key)), 'num')}" for key, title in (
        ("curvature", "curvature c"), ("tangent_rank_agreement", "rank agreement of geodesic and tangent-space "
                                                                 "distances (Spearman)"),
        ("tangent_relative_gap", "their mean relative gap"), ("gromov_delta_relative", "2δ/diam")))
    return f"{table}\n\nBefore unlearning ({len(group)} before-audits): {scalars}."


def stopping_sentence(rows: list, experiment: Experiment) -> str:
    """How the unlearning runs ended, in one paragraph computed from the rows: a run stops at the first
    evaluation that meets the forget target with retain accuracy recovered (:data:`STUDY_RETAIN_KEPT`);
    one that never meets both trains every step."""
    chosen = [r for r in experiment_rows(rows, experiment) if r["after"].get("stopped_early") is not None]
    if not chosen:
        return ""
    parts = []
    for stopped, label in ((1.0, "met both targets and stopped"), (0.0, "never met both and trained every step")):
        group = [r for r in chosen if r["after"]["stopped_early"] == stopped]
        if group:
            steps = mean_ci(r["after"]["unlearning_steps"] for r in group).mean
            forget = mean_ci(r["after"]["forget_accuracy"] for r in group).mean
            kept = mean_ci(r["after"]["retain_kept"] for r in group).mean
            counts = ", ".join(str(k) for k in sorted({r["count"] for r in group}))
            parts.append(f"{len(group)} {label} (k = {counts}; mean {format_value(steps, 'steps')} steps, forget "
                         f"{format_value(forget, 'pct')}, retain kept {format_value(kept, 'pct')})")
    return (f"Of {len(chosen)} unlearning runs, " + "; ".join(parts) + ". The targets, checked every "
            f"{EVAL_EVERY} steps on training images: forget accuracy ≤ {TARGET_FORGET_ACCURACY:.0%} and retain "
            f"accuracy ≥ {STUDY_RETAIN_KEPT:.0%} of its value before unlearning (`--retain-kept {STUDY_RETAIN_KEPT:g}`). "
            "A run that meets the forget target while its retain accuracy is still down goes on until it "
            "recovers (the first run of this grid, on 2026-12-03, stopped at the forget target alone).")


# ---------------------------------------------------------------------------------------------- figures
FIGURES = {"results-forget-retain.png": ("forget_accuracy", "retain_accuracy"),
           "results-hierarchy.png": ("forget_tree_error", "probe_forget_accuracy")}


def draw_figure(path: Path, grid: Grid, rows: list, metrics: tuple) -> bool:
    """One panel per scaling experiment and metric: the metric against the number of concepts per
    arm, mean with 95% CI bars. Written atomically; ``False`` (nothing written) without runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from models.checkpoint import atomic_write

    experiments = [e for e in grid.experiments if e.kind == "scaling" and experiment_rows(rows, e)]
    if not experiments:
        return False
    fig, axes = plt.subplots(len(experiments), len(metrics), figsize=(5 * len(metrics), 3.6 * len(experiments)),
                             squeeze=False)
    for line, experiment in zip(axes, experiments):
        chosen = experiment_rows(rows, experiment)
        for ax, metric in zip(line, metrics):
            for number, arm in enumerate(experiment.arms):
                points = [(count, mean_ci(r["after"].get(metric) for r in select(chosen, arm=arm.name, count=count)))
                          for count in experiment.counts]
                points = [(count, e) for count, e in points if e.mean is not None]
                if points:
                    shift = 2 ** ((number - (len(experiment.arms) - 1) / 2) * 0.04)  # keep the bars apart
                    ax.errorbar([c * shift for c, _ in points], [e.mean for _, e in points],
                                yerr=[e.half_width or 0.0 for _, e in points], marker="o", capsize=3, label=arm.name)
            ax.set_xscale("log", base=2)
            ax.set_xticks(list(experiment.counts))
            ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.set_xlabel("concepts forgotten at once")
            ax.set_ylabel(METRICS[metric][0])
            if METRICS[metric][1] == "pct":  # a fraction: intervals of two seeds reach far past [0, 1]
                ax.set_ylim(-0.05, 1.05)
            ax.set_title(dataset_label(experiment.dataset))
            if ax.get_legend_handles_labels()[0]:  # a metric not measured draws no line
                ax.legend(fontsize=7)
    fig.suptitle("mean ± 95% CI over seeds", fontsize=9)
    fig.tight_layout()
    try:
        atomic_write(path, lambda file: fig.savefig(file, format="png", dpi=110))
    finally:
        plt.close(fig)
    return True


# ---------------------------------------------------------------------------------------------- RESULTS.md
def write_results(grid: Grid, records_by_cell: dict, *, out: Path, timing: dict, steps: int | None = None,
                  figures: bool = True) -> list:
    """Write ``out`` (atomically) and, with ``figures``, its figures beside it, from the records of
    the finished cells; returns the claim verdicts."""
    rows = rows_of(records_by_cell)
    verdicts = decide_claims(grid, rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    drawn = [name for name, metrics in FIGURES.items()
             if figures and draw_figure(out.parent / name, grid, rows, metrics)]
    parts = [f"# Results of the pre-registered study ({grid.name} grid)",
             "Written by `python -m benchmarks.study" + (" --quick" if grid.name == "quick" else "") +
             "` from the runs it made (each run's record is in its cell folder under the study's `--work`); "
             "rerunning the command resumes and rewrites this file. Do not edit it by hand.",
             grid_section(grid, records_by_cell, timing, steps), claims_section(verdicts)]
    for experiment in grid.experiments:
        parts.append(experiment_section(experiment, rows))
    if drawn:
        parts += ["## Figures", *(f"![{name}]({name})" for name in drawn)]
    parts.append(STATISTICS_TEXT)
    atomic_write_text(out, "\n\n".join(part for part in parts if part) + "\n")
    return verdicts


def grid_section(grid: Grid, records_by_cell: dict, timing: dict, steps: int | None) -> str:
    cells = grid_cells(grid)
    done = sum(1 for cell in cells if cell in records_by_cell and _complete(cell, records_by_cell[cell]))
    lines = [[e.name, dataset_label(e.dataset), ", ".join(a.name for a in e.arms), ", ".join(map(str, e.counts)),
              ", ".join(map(str, e.seeds)), len(experiment_cells(e))] for e in grid.experiments]
    text = [
        "## The grid",
        "Each run forgets `k` leaf concepts drawn at random per seed (the same draw for every arm of one dataset, "
        "k and seed, so arms pair up; a sequence forgets the draw's concepts one request after another). Seeds "
        "vary the draw, the unlearning (batch order, mismatched captions) and audit sampling; the pretrained model "
        "of each geometry is the same for all runs.",
        markdown_table(["experiment", "dataset", "arms", "k", "seeds", "cells"], lines),
        f"{done} of {len(cells)} cells finished. " + wall_time_sentence(timing),
        f"Trimmed from the grid of issue 13 towards its {BUDGET_MINUTES}-minute budget on a 2-core CPU "
        f"({budget_verdict(timing, done == len(cells))}): " + "; ".join(grid.trimmed) + "." if grid.trimmed else "",
    ]
    if steps is not None:
        text.append(f"**Not the pre-registered settings:** every unlearning method ran {steps} step(s) (`--steps`).")
    return "\n\n".join(t for t in text if t)


BUDGET_MINUTES = 60  # issue 13: the default grid on the 2-core CPU


def budget_verdict(timing: dict, finished: bool) -> str:
    """Whether the commands that ran cells stayed within :data:`BUDGET_MINUTES`, as far as is known."""
    minutes = (timing["earlier"] + (timing["this_command"] if timing["runs_made"] else 0.0)) / 60
    if minutes > BUDGET_MINUTES:
        return "not met: see the wall time above"
    return "met" if finished else "not yet known: the grid is not finished"


def wall_time_sentence(timing: dict) -> str:
    """The wall time of the commands that ran cells (:func:`record_time`); a command that ran none only
    rewrites this file and is not counted."""
    this = timing["this_command"] / 60
    if timing["runs_made"]:
        return (f"Wall time: {timing['earlier'] / 60 + this:.1f} min over {timing['earlier_commands'] + 1} command(s) "
                f"that ran cells (this one: {this:.1f} min, {timing['runs_made']} run(s) made), pretraining included "
                "where a model was not cached.")
    return (f"Wall time: {timing['earlier'] / 60:.1f} min over {timing['earlier_commands']} command(s) that ran cells, "
            f"pretraining included where a model was not cached; this file was rewritten by a command that ran none "
            f"({this:.1f} min).")


def _complete(cell: Cell, records: list) -> bool:
    return len(records) == (cell.count if cell.sequential else 1)


def claims_section(verdicts: list) -> str:
    if not verdicts:
        return "## Claims\n\nNo scaling experiment has finished runs yet."
    lines = [[v.claim, v.dataset, f"**{v.verdict}**", "<br>".join(f"{p.text}: *{p.verdict}* ({p.evidence})"
                                                                      for p in v.parts)] for v in verdicts]
    summary = [claim_sentence(v) for v in verdicts]
    return "\n\n".join(["## Claims", CLAIM_RULES_TEXT, markdown_table(["claim", "dataset", "verdict", "tests"], lines),
                        "In words:", "\n".join(f"- {s}" for s in summary)])


def claim_sentence(verdict: Verdict) -> str:
    """The verdict on one claim and dataset in a plain sentence, naming the parts that decided it."""
    by = {kind: [p.text for p in verdict.parts if p.verdict == kind] for kind in (SUPPORTED, CONTRADICTED, UNDECIDED)}
    head = {SUPPORTED: "the data supports", CONTRADICTED: "the data contradicts",
            UNDECIDED: "the data cannot decide"}[verdict.verdict]
    details = [f"{label}: {'; '.join(by[kind])}" for kind, label in
               ((SUPPORTED, "Supported"), (CONTRADICTED, "Contradicted"), (UNDECIDED, "Undecided")) if by[kind]]
    return f"On {verdict.dataset}, {head} claim {verdict.claim} ({verdict.statement}). " + ". ".join(details) + "."


def experiment_section(experiment: Experiment, rows: list) -> str:
    parts = [f"## {experiment.name}", experiment.note, TABLES[experiment.kind](rows, experiment)]
    if experiment.kind == "scaling":
        parts += [f"### Paired comparisons ({dataset_label(experiment.dataset)})",
                  "Differences `a − b` after unlearning over runs with the same dataset, k, seed and forget set "
                  "(accuracies in percentage points). " + " ".join(f"{a.name} − {b.name} isolates {what}."
                                                                    for a, b, what in PAIRS),
                  paired_table(rows, experiment), paired_per_count_table(rows, experiment),
                  f"### Hyperbolicity before and after ({dataset_label(experiment.dataset)})",
                  flat_regime_sentence(rows, experiment), pretrained_hyperbolicity_table(rows, experiment),
                  hyperbolicity_table(rows, experiment),
                  f"### How the runs ended ({dataset_label(experiment.dataset)})", stopping_sentence(rows, experiment)]
    return "\n\n".join(part for part in parts if part)


CLAIM_RULES_TEXT = f"""Each claim is decided per dataset on its scaling experiment by fixed rules, set before the runs:

- a *paired* test ("HAC below AC"): **supported** when the 95% bootstrap interval of the mean paired
  difference lies wholly on the claimed side of 0, **contradicted** when it lies wholly on the other
  side, **cannot decide** otherwise, and always with fewer than {MIN_PAIRS} pairs (below that a
  bootstrap interval is little more than the range of the differences; the sign test is reported
  beside it, not used);
- a *growth* test ("the advantage grows with the number of concepts"): the same rule on the
  bootstrap interval of the least-squares slope of the paired advantage against log₂ k;
- a *threshold* test ("≤ {NEAR_PERFECT:.0%} at every count"): **supported** when every count's 95%
  t-interval lies on the claimed side, **contradicted** when some count's interval lies wholly on the
  other side, **cannot decide** otherwise (one seed gives no interval);
- a claim is **contradicted** when one of its tests is, **supported** when all are, and **cannot
  decide** otherwise. Thresholds: near-perfect forgetting ≤ {NEAR_PERFECT:.0%} forget accuracy (the
  trainer's early-stopping target); reasonable retain ≥ {REASONABLE_RETAIN:.0%} of the retain accuracy
  before unlearning (the tuning target); the probe still finds a concept at ≥ {PROBE_FINDS:.0%} probe
  forget accuracy."""

STATISTICS_TEXT = f"""## How the numbers are made

Cells show the mean over seeds ± the half-width of its 95% Student-t interval (`scipy.stats.t`; the
mean alone for one seed; n/a where nothing was measured). Paired differences: mean, 95% percentile
bootstrap interval ({BOOTSTRAP_RESAMPLES:,} resamples, `numpy.random.default_rng({BOOTSTRAP_SEED})`) and a
two-sided sign test (`scipy.stats.binomtest`, ties dropped). With at most 5 seeds per count a
per-count interval is wide and a sign test cannot reach p < 0.05 (five equal signs give p = 0.0625): the
claims are decided on the differences pooled over counts. "retain kept" is retain accuracy after /
before; "oracle avg gap" the mean of |forget|, |retain|, |MIA|, |parent| gaps to the retrain oracle
of the same model, forget set and seed (docs/SPEC.md section 5), in points. TIE and LCA depth are
the hierarchical audit's on the forget images (lower TIE and deeper LCA: predicted as a nearer
relative). docs/SPEC.md section 5.2 states these rules."""


# ---------------------------------------------------------------------------------------------- command line
def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the ~10-minute subset (shapes, k 1 and 4, 2 seeds)")
    parser.add_argument("--with-poincare", action="store_true", help="add HAC on the Poincaré ball (shapes)")
    parser.add_argument("--work", default="runs/study", help="cell output folders (default: %(default)s)")
    parser.add_argument("--out", default="docs/RESULTS.md", help="the results file (default: %(default)s)")
    parser.add_argument("--cache", default="runs/pretrained", help="pretrained-model cache (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="data-loader processes (default: the harness's)")
    parser.add_argument("--steps", type=int, default=None,
                        help="override every method's unlearning steps (smoke tests only: RESULTS.md then says the "
                             "settings are not the pre-registered ones)")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="run cells in N worker processes (on CUDA one GPU each, round robin; on a CPU they share "
                             "its cores; default: %(default)s)")
    parser.add_argument("--plan", action="store_true", help="list the grid and its rough cost; run nothing")
    parser.add_argument("--progress", action="store_true", help="progress bars of pretraining and unlearning")
    return parser.parse_args(argv)


def chosen_grid(args) -> Grid:
    grid = GRIDS["quick" if args.quick else "default"]
    if args.with_poincare:
        grid = Grid(grid.name + "+poincare", (*grid.experiments, POINCARE),
                    tuple(t for t in grid.trimmed if "Poincaré" not in t))
    return grid


def plan_text(grid: Grid) -> str:
    """The grid's experiments with their cells and the rough cost of each (:data:`COST`)."""
    cells, seen, lines = grid_cells(grid), set(), []
    for experiment in grid.experiments:
        new = [cell for cell in experiment_cells(experiment) if cell not in seen]
        seen.update(new)
        lines.append(f"{experiment.name}: {len(experiment_cells(experiment))} cells, {len(new)} new, "
                     f"~{estimate_seconds(new, cached=True) / 60:.0f} min")
    lines.append(f"total: {len(cells)} cells, ~{estimate_seconds(cells, cached=True) / 60:.0f} min with the "
                 f"pretrained models cached, ~{estimate_seconds(cells) / 60:.0f} min from an empty cache "
                 "(rough: quiet 2-core CPU)")
    return "\n".join(lines)


def main(argv=None) -> int:
    import models
    from .datasets import DatasetError
    from .locks import LockBusy

    args = parse_args(argv)
    grid = chosen_grid(args)
    if args.plan:
        print(plan_text(grid))
        return 0
    try:
        outcome = run_study(grid, work=args.work, out=args.out, cache=args.cache, device=args.device,
                            steps=args.steps, progress=args.progress, workers=args.workers, jobs=args.jobs)
    except (InputError, DatasetError, models.CheckpointError, LockBusy) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished runs are saved; rerun the same command to resume", file=sys.stderr)
        return 130
    print(f"{args.out}: {outcome['cells']} cells, {outcome['runs_made']} run(s) made by this command")
    for verdict in outcome["verdicts"]:
        print(f"  {verdict.claim} on {verdict.dataset}: {verdict.verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
