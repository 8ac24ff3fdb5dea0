"""How does geometry change forgetting? Remove concepts from MERU and CLIP, audit, report.

    python -m benchmarks.run --geometry lorentz          # HAC on MERU (the built-in default)
    python -m benchmarks.run --geometry both             # HAC on MERU next to AC on CLIP
    python -m benchmarks.run --geometry both --scaling 1,2,4,8
    python -m benchmarks.run --method hac,retrain        # HAC next to the retrain oracle (gap in report.md)
    python -m benchmarks.run --sequential triangle,heart,ring   # one request after another
    python -m benchmarks.run --ablation
    python -m benchmarks.run --dataset shapes --list-concepts

Pretrained models are trained on first use and cached (``--cache``); results go to ``--out``
(``results.jsonl``, ``report.md``, figures). Rerunning the same command resumes: finished runs are
skipped, and a torn last record, a lost ``config.json``, ``report.md`` or figure is repaired. Both
are keyed by fingerprints of their inputs (dataset content, model file, settings), not by names.
One command at a time uses an output folder or trains a cache entry; another one waits for it
(``--lock-timeout`` bounds the wait). Errors a user can fix are reported in one line with exit
status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import json
import math
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

import models
from manifolds import geometry_names, geometry_spec, geometry_specs

from models.distributed import SINGLE, World, barrier, init_from_environment, process_device

from .common import EncodedDataset, InputError, bounded_name, on_main, resolve_device, tell, write_json
from .datasets import DatasetError, load_dataset, validate_images
from .datasets.base import SPLIT_NAMES
from .experiment import (TARGET_FORGET_ACCURACY, TARGET_RETAIN_KEPT, ResultsFile, RunSpec, cached_model,
                         check_classes, check_vocabulary, pretrained_entry, run_one, unlearned_copy)
from .fingerprints import file_sha256, json_fingerprint, short
from .locks import LockBusy, hold_lock
from .methods import ORACLE, Environment, create_method, list_methods
from .pretrain import default_model
from .report import outcome_line
from .sequential import check_sequence, run_sequences, stage_specs

# `--geometry both`: the comparison this toolkit exists for, hyperbolic MERU next to Euclidean CLIP.
BOTH = ("lorentz", "euclidean")
DEFAULT_FORGET = {"shapes": "triangle", "digits": "seven", "glyphs": "letter_b"}
OUT_LOCK = ".lock"  # inside the output folder

# Options whose empty value would silently mean something else: the default (``--forget ""``) or
# the current folder (``--out ""``).
NON_EMPTY_OPTIONS = ("method", "forget", "scaling", "sequential", "dataset", "checkpoint", "model", "out", "cache")

# What each split is for, in the message refusing a dataset or a concept without pairs in it.
SPLIT_USES = {"train": "pretraining and unlearning learn from it", "test": "the audit measures on it"}

# How a file written by torch.save begins: a zip archive (since torch 1.6) or a pickle (before).
TORCH_FILE_SIGNATURES = (b"PK\x03\x04", b"\x80")

# File-system failures the user fixes outside this program (permissions, space, a file in the way):
# one line naming the path, not a traceback.
FIXABLE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EEXIST,
                            errno.ENOTDIR, errno.EISDIR, errno.ENOENT})


def _show_fingerprints(fingerprints) -> str:
    return ", ".join(f"{geometry} {short(fp)}" for geometry, fp in sorted((fingerprints or {}).items())) or "none"


# What identifies the results in an output folder (a rerun must match every field): how a mismatch
# reads, and how to show the two values (``None``: not shown).
CONFIG_FIELDS = {
    "dataset_fingerprint": ("dataset content differs", lambda fp: f"fingerprint {short(fp)}"),
    "model_fingerprints": ("the models differ (another --checkpoint file, model config or pretraining)",
                           _show_fingerprints),
    "runs": ("the planned runs differ (--geometry, --method, --forget, --seeds, --scaling, --sequential or "
             "--ablation)", None),
    "steps": ("--steps differs", json.dumps),
    "batch_size": ("--batch-size differs", json.dumps),
    "early_stop": ("the early-stopping rule differs (--no-early-stop, --retain-kept, or a folder written by a "
                   "version that stopped at the forget target alone)", json.dumps),
}


class UsageError(InputError):
    """A mistake in the command line or its inputs: reported in one line, exit status 2."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--geometry", default="lorentz",
                        help=", ".join(f"{spec.name} = {spec.display_name}" for spec in geometry_specs())
                        + f", both = {' and '.join(BOTH)} side by side, or a comma-separated list "
                        "(default: %(default)s)")
    parser.add_argument("--method", default=None,
                        help="method(s): unlearning objectives or the retrain oracle, comma-separated (default: "
                             + ", ".join(f"{spec.default_method} on {spec.display_name}" for spec in geometry_specs())
                             + "); "
                             f"known: {', '.join(list_methods())} ({ORACLE} = the retrain oracle: the default "
                             "model pretrained without the forget pairs)")
    parser.add_argument("--forget", default=None, help="concept(s) to forget, comma-separated "
                        "(default: triangle for shapes, seven for digits, else the first leaf)")
    parser.add_argument("--dataset", default="shapes", help="shapes, digits or a dataset folder (default: shapes)")
    parser.add_argument("--checkpoint", default=None,
                        help="pretrained model file instead of the cached default: one of ours, or a "
                             "released MERU/CLIP .pth (meru_vit_b.pth, ...)")
    parser.add_argument("--model", default=None,
                        help="config of a released --checkpoint whose weights do not tell its size "
                             f"(known: {', '.join(models.list_models())})")
    parser.add_argument("--seeds", type=int, default=1, help="number of unlearning seeds (default: 1)")
    parser.add_argument("--out", default=None, help="output folder (default: runs/<configuration>)")
    parser.add_argument("--cache", default="runs/pretrained", help="pretrained-model cache (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="data-loader processes decoding image files (default: the CPUs, at most 8)")
    parser.add_argument("--list-concepts", action="store_true", help="print every concept with its parent and exit")
    parser.add_argument("--scaling", default=None, help="forget that many concepts at once, e.g. 1,2,4,8")
    parser.add_argument("--sequential", default=None, metavar="A,B,...",
                        help="forget these concepts one request after another on the same model, auditing "
                             "after each request (resumable stage by stage)")
    parser.add_argument("--ablation", action="store_true",
                        help="HAC with each component off, AC on MERU and AC on CLIP")
    parser.add_argument("--steps", type=int, default=None, help="override the unlearning steps of every method")
    parser.add_argument("--batch-size", type=int, default=None, metavar="N",
                        help="override the unlearning batch of every method: the global batch, whatever the "
                        "number of processes (default: each method's own, 128)")
    parser.add_argument("--no-early-stop", action="store_true",
                        help="run every step instead of stopping once the forget concepts are forgotten")
    parser.add_argument("--retain-kept", type=float, default=TARGET_RETAIN_KEPT, metavar="SHARE",
                        help="early stopping waits, after the forget target is met, until the retain accuracy "
                             "is back to this share of its value before unlearning (0: stop at the forget "
                             "target alone; default: %(default)s)")
    parser.add_argument("--lock-timeout", type=float, default=None, metavar="SECONDS",
                        help="how long to wait for another command using the same --out or cache entry "
                             "(default: as long as it takes)")
    parser.add_argument("--no-figures", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def chosen_geometries(value: str) -> list:
    """The geometries of ``--geometry``: one registered name, ``both`` or a comma-separated list."""
    names = list(BOTH) if value == "both" else [name.strip() for name in value.split(",")]
    for name in names:
        if name not in geometry_names():
            raise UsageError(f"--geometry {value}: unknown geometry {name!r}; expected one of "
                             f"{', '.join(geometry_names())}, both, or a comma-separated list")
    if len(set(names)) != len(names):
        raise UsageError(f"--geometry {value}: a geometry is named twice")
    return names


def ablation_specs(forget: tuple, seed: int) -> list:
    """HAC with each component off, the parent-cone variant, AC on MERU and AC on CLIP."""
    variants = [
        ("HAC", "hac", {}),
        ("HAC − positive calibration (β=0)", "hac", {"beta": 0.0}),
        ("HAC − entailment calibration (λ_E=0)", "hac", {"entailment_weight": 0.0}),
        ("HAC − norm regularisation (λ_N=0)", "hac", {"norm_weight": 0.0}),
        ("HAC + parent cone", "hac-parent", {}),
        ("AC on MERU (λ_E=λ_N=0)", "ac", {}),
    ]
    hyperbolic, flat = BOTH
    specs = [RunSpec(hyperbolic, method, forget, seed, label, tuple(sorted(options.items())))
             for label, method, options in variants]
    specs.append(RunSpec(flat, "ac", forget, seed, f"AC on {geometry_spec(flat).display_name}"))
    return specs


def draw_concepts(classes: list, count: int, seed: int) -> tuple:
    """``count`` leaf concepts drawn reproducibly (nested: the first k of one fixed permutation)."""
    if count < 1:
        raise UsageError(f"--scaling {count}: counts must be at least 1")
    if count >= len(classes):
        raise UsageError(f"--scaling {count}: the dataset has only {len(classes)} leaf concepts; "
                         "forgetting all of them leaves nothing to retain")
    order = np.random.default_rng(seed).permutation(len(classes))
    return tuple(sorted(classes[i] for i in order[:count]))


def check_arguments(args) -> None:
    """Refuse, before loading anything, option values that cannot be meant."""
    for name in NON_EMPTY_OPTIONS:
        value = getattr(args, name)
        if value is not None and not value.strip():
            raise UsageError(f"--{name} is empty; leave the option out for its default, or give a value")
    if args.lock_timeout is not None and not args.lock_timeout >= 0:
        raise UsageError(f"--lock-timeout must be a number of seconds >= 0, got {args.lock_timeout}")
    if args.workers is not None and args.workers < 0:
        raise UsageError(f"--workers must be 0 or more, got {args.workers}")
    if Path(args.cache).exists() and not Path(args.cache).is_dir():
        raise UsageError(f"--cache {args.cache} is a file; expected a folder for pretrained models")


def comma_list(option: str, value: str) -> list:
    """The distinct items of the comma-separated ``value``, in order; an empty item (``a,,b``) is
    refused rather than dropped, since it is usually a typo."""
    items = [item.strip() for item in value.split(",")]
    if "" in items:
        raise UsageError(f"--{option} {value!r}: empty item in the comma-separated list")
    return list(dict.fromkeys(items))


def check_model_file(path) -> None:
    """Refuse, in words, a --checkpoint that is no model file (torch.load's own error for a text
    file reads "KeyError: 101")."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--checkpoint {path} {'is a folder' if path.is_dir() else 'does not exist'}; "
                         "expected a model file (.pt or .pth)")
    with open(path, "rb") as file:
        head = file.read(4)
    if not head.startswith(TORCH_FILE_SIGNATURES):
        raise UsageError(f"not a checkpoint: --checkpoint {path} is no PyTorch file (it begins with {head!r}; "
                         ".pt/.pth files begin as a zip archive or a pickle)")


def check_dataset(dataset) -> None:
    """Refuse a dataset the harness cannot use: it needs train and test pairs, and a leaf class to
    retain besides the one it forgets."""
    for split in SPLIT_NAMES:
        if not len(dataset.indices(split)):
            raise UsageError(f"dataset {dataset.name!r} has no {split} pairs ({SPLIT_USES[split]}); "
                             f"mark some pairs with \"split\": \"{split}\"")
    classes = dataset.leaf_classes()
    if len(classes) < 2:
        raise UsageError(f"dataset {dataset.name!r} has one leaf class ({classes[0]}); forgetting needs at "
                         "least two: one to forget and one to retain")


def check_forget_set(dataset, concepts) -> None:
    """Refuse to forget a concept without train pairs (nothing to unlearn) or without test pairs
    (its forgetting cannot be measured), or concepts that leave nothing to retain."""
    for split in SPLIT_NAMES:
        in_split = dataset.indices(split)
        for concept in concepts:
            if not dataset.concept_mask([concept])[in_split].any():
                raise UsageError(f"concept {concept!r} has no {split} pairs in dataset {dataset.name!r} "
                                 f"({SPLIT_USES[split]}); choose a concept with {split} pairs")
        dataset.split_forget_retain(list(concepts), split)  # raises when no pair is left to retain


def plan(args, data: EncodedDataset) -> list:
    """Every run the command asks for, in order."""
    geometries = chosen_geometries(args.geometry)
    methods = comma_list("method", args.method) if args.method is not None else None
    for method in methods or []:
        create_method(method)  # an unknown name is refused here, listing the known ones
    forget = known_concepts("forget", comma_list("forget", args.forget), data) if args.forget is not None else (
        DEFAULT_FORGET.get(data.dataset.name) or data.classes[0],)
    check_numbers(args)
    check_modes(args)
    runs_of = run_layout(args, data, forget)
    specs = []
    for seed in range(args.seeds):
        if args.ablation:
            specs += ablation_specs(forget, seed)
            continue
        for geometry in geometries:
            for method in methods or [geometry_spec(geometry).default_method]:
                specs += runs_of(geometry, method, seed)
    for spec in specs:
        create_method(spec.method).check(spec, checkpoint=args.checkpoint is not None)
    for concepts in dict.fromkeys(spec.forget for spec in specs):
        check_forget_set(data.dataset, concepts)
    return specs


def known_concepts(option: str, concepts: list, data: EncodedDataset) -> tuple:
    """``concepts`` as a tuple, after refusing one the dataset does not have."""
    for concept in concepts:
        if concept not in data.dataset.hierarchy:
            raise UsageError(f"--{option} {concept}: unknown concept in {data.dataset.name!r}; known: "
                             f"{', '.join(data.dataset.hierarchy.concepts())}")
    return tuple(concepts)


def check_numbers(args) -> None:
    """Refuse counts that cannot be meant (--seeds, --steps, --batch-size)."""
    if args.seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {args.seeds}")
    if args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps must be at least 1, got {args.steps}")
    if not 0 <= args.retain_kept <= 1:
        raise UsageError(f"--retain-kept must be a share in [0, 1] (0: no retain condition), got {args.retain_kept}")
    if args.batch_size is not None and args.batch_size < 2:
        raise UsageError(f"--batch-size must be at least 2 (a retain and a forget pair), got {args.batch_size}")


def check_modes(args) -> None:
    """Refuse combinations of --ablation, --scaling, --sequential and --forget that contradict each other."""
    if args.ablation and (args.method or args.scaling or args.checkpoint or args.sequential):
        raise UsageError("--ablation runs its own methods on both default models; drop --method, --scaling, "
                         "--sequential and --checkpoint")
    if args.scaling and args.forget is not None:
        raise UsageError("--scaling draws the concepts it forgets; drop --forget")
    if args.sequential and (args.forget is not None or args.scaling):
        raise UsageError("--sequential names the concepts it forgets, one request after another; drop "
                         f"{'--forget' if args.forget is not None else '--scaling'}")


def run_layout(args, data: EncodedDataset, forget: tuple):
    """``runs_of(geometry, method, seed)``: the runs of one method on one model — one per forget set
    (``--forget``, or the draws of ``--scaling``), or the stages of the ``--sequential`` sequence."""
    if args.sequential:
        sequence = known_concepts("sequential", comma_list("sequential", args.sequential), data)
        check_sequence(sequence, data.dataset.hierarchy)
        return functools.partial(stage_specs, sequence=sequence)
    forget_sets = [forget]
    if args.scaling:
        forget_sets = [draw_concepts(data.classes, k, seed=1234) for k in scaling_counts(args.scaling)]
    return lambda geometry, method, seed: [RunSpec(geometry, method, concepts, seed) for concepts in forget_sets]


def scaling_counts(value: str) -> list:
    """The distinct counts of ``--scaling`` (``"1,2,4,8"``)."""
    try:
        return [int(count) for count in comma_list("scaling", value)]
    except ValueError:
        raise UsageError(f"--scaling expects comma-separated counts such as 1,2,4,8, got {value!r}") from None


def model_fingerprints(args, data: EncodedDataset, specs: list, checkpoint) -> dict:
    """Per geometry of ``specs``: the fingerprint of the model its runs start from — the
    --checkpoint file's bytes and config, or the default model's cache entry (dataset content,
    model config, pretraining settings)."""
    geometries = dict.fromkeys(spec.geometry for spec in specs)
    if checkpoint is not None:
        return {geometry: checkpoint[2] for geometry in geometries}
    return {geometry: pretrained_entry(geometry, data, args.cache)[1] for geometry in geometries}


def experiment_config(args, data: EncodedDataset, specs: list, fingerprints: dict) -> dict:
    """What identifies the contents of an output folder (a rerun must match each field of
    :data:`CONFIG_FIELDS`); ``dataset`` and ``checkpoint`` name the inputs for the reader."""
    return {
        "dataset": data.dataset.name,
        "checkpoint": str(Path(args.checkpoint).resolve()) if args.checkpoint else None,
        "dataset_fingerprint": data.fingerprint,
        "model_fingerprints": fingerprints,
        "runs": sorted(spec.key for spec in specs),
        "steps": args.steps,
        "batch_size": args.batch_size,
        "early_stop": early_stopping_rule(args),
    }


def record_inputs(args, data: EncodedDataset, fingerprints: dict) -> dict:
    """Per geometry, what each record of this command states it was made from: the dataset and
    model fingerprints and the settings ``config.json`` identifies (``--steps``, ``--batch-size``,
    the early-stopping rule), so that a folder whose ``config.json`` is lost adopts only runs made
    the way this command makes them (:func:`check_records_fit`)."""
    settings = {"steps": args.steps, "batch_size": args.batch_size, "early_stop": early_stopping_rule(args)}
    return {geometry: {"dataset_fingerprint": data.fingerprint, "model_fingerprint": fingerprint, **settings}
            for geometry, fingerprint in fingerprints.items()}


def early_stopping_rule(args) -> dict | bool:
    """The early-stopping targets of this command's unlearning runs (``False``: every step runs, as
    folders written before the retain condition existed say too)."""
    if args.no_early_stop:
        return False
    return {"forget_accuracy": TARGET_FORGET_ACCURACY, "retain_kept": args.retain_kept or None}


def config_differences(existing: dict, config: dict) -> list:
    """What differs between an output folder's ``config.json`` and this command's, in words."""
    differences = []
    for key, (what, show) in CONFIG_FIELDS.items():
        if existing.get(key) != config[key]:
            differences.append(f"{what} ({show(existing.get(key))} vs {show(config[key])})" if show else what)
    return differences


def default_out(args, data: EncodedDataset) -> Path:
    mode = "ablation" if args.ablation else f"scaling-{args.scaling.replace(',', '_')}" if args.scaling else \
        f"sequential-{args.sequential.replace(',', '+')}" if args.sequential else None
    parts = [data.dataset.name, "ablation" if args.ablation else args.geometry.replace(",", "+")]
    if args.method:
        parts.append(args.method.replace(",", "+"))
    if args.forget:
        parts.append(args.forget.replace(",", "+"))
    if mode and not args.ablation:
        parts.append(mode)
    if args.seeds > 1:
        parts.append(f"{args.seeds}seeds")
    return Path("runs") / bounded_name("-".join(parts))


def make_out_folder(out: Path) -> None:
    """Create the output folder ``out`` (and its parents), refusing a path that names a file."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; expected a folder for the results (new, or holding "
                         "earlier results of this command)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"--out {out}: cannot create that folder ({error.strerror})") from None


def read_config(path: Path) -> tuple:
    """``(config, None)``, or ``(None, problem)`` where ``problem`` says the file is "missing" or
    "damaged" (not a JSON object: emptied or cut short by a crash, edited by hand)."""
    try:
        config = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None, "missing"
    except ValueError:
        return None, "damaged"
    return (config, None) if isinstance(config, dict) else (None, "damaged")


def open_results(out: Path, config: dict, specs: list, inputs: dict) -> ResultsFile:
    """The results of ``out``, after checking that the folder holds results of this configuration
    (or none) and repairing what can be: a torn last record is dropped (its run is redone) and a
    missing or damaged ``config.json`` is rebuilt from this command when the records fit it."""
    results = ResultsFile.open(out / "results.jsonl")
    if results.torn_line is not None:
        tell(f"warning: {results.path} line {results.torn_line} is cut short (an interrupted write): "
             "dropped, its run is redone")
    config_path = out / "config.json"
    existing, problem = read_config(config_path)
    if existing is not None:
        differences = config_differences(existing, config)
        if differences:
            raise UsageError(f"--out {out} holds results of a different configuration: {'; '.join(differences)}; "
                             "choose another --out or delete that folder")
    elif results.records or problem == "damaged":
        check_records_fit(results, config_path, problem, specs, inputs)
        tell(f"warning: {config_path} is {problem}: rebuilt from this command, which its "
             f"{len(results.records)} finished run(s) fit")
    write_json(config_path, config)
    return results


def check_records_fit(results: ResultsFile, config_path: Path, problem: str, specs: list, inputs: dict) -> None:
    """Refuse to rebuild ``config_path`` from this command when ``results`` holds a run it does not
    plan, or one recorded from other inputs or settings (dataset content, model, ``--steps``,
    ``--batch-size``, early stopping: :func:`record_inputs`). Records of older versions state
    fewer inputs (the fingerprints alone, or none); they are compared on what they state."""
    planned = {spec.key: inputs[spec.geometry] for spec in specs}

    def fits(record) -> bool:
        stated = record.get("inputs", {})
        return stated == {key: planned[record["key"]].get(key) for key in stated}

    foreign = [r for r in results.records if r["key"] not in planned or not fits(r)]
    if foreign:
        raise UsageError(f"{config_path} is {problem} and {results.path} holds {len(foreign)} run(s) that this "
                         "command does not plan or made from other inputs or settings; rerun the command "
                         "that wrote them, or choose another --out")


def list_concepts(dataset) -> None:
    hierarchy = dataset.hierarchy
    for concept in hierarchy.concepts():
        print(f"{concept}\t{hierarchy.parent_of(concept) or '-'}")


def describe_os_error(error: OSError) -> str:
    """One line for a file-system failure: where (for the temporary file of an atomic write, its
    folder) and what the system said."""
    where = error.filename
    if where is not None and str(where).endswith(".tmp"):
        where = f"cannot write in {Path(where).parent}"
    return f"{where or 'writing a file'}: {error.strerror or error}"


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return _main(args)
    except (InputError, DatasetError, models.CheckpointError, LockBusy) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        if error.errno not in FIXABLE_ERRNOS:
            raise
        print(f"error: {describe_os_error(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished runs are saved; rerun the same command to resume", file=sys.stderr)
        return 130


def load_checkpoint_model(args):
    """``(model, metadata, fingerprint)`` of the --checkpoint file, or ``None`` without one."""
    if not args.checkpoint:
        if args.model:
            raise UsageError("--model names the config of a released --checkpoint file; pass --checkpoint too")
        return None
    if len(chosen_geometries(args.geometry)) != 1:
        raise UsageError(f"--checkpoint holds one model; use one --geometry ({', '.join(geometry_names())}) with it")
    check_model_file(args.checkpoint)
    model, metadata = models.load_model_file(args.checkpoint, args.model)
    if model.config.geometry != args.geometry:
        raise UsageError(f"--checkpoint {args.checkpoint} holds a {model.config.geometry} model "
                         f"({model.config.name}), but --geometry is {args.geometry}")
    fingerprint = json_fingerprint({"file_sha256": file_sha256(args.checkpoint), "config": model.config.to_dict()})
    return model, metadata, fingerprint


def _main(args) -> int:
    check_arguments(args)
    try:
        device = resolve_device(args.device)
    except ValueError as error:
        raise UsageError(str(error)) from None
    # Under torchrun every process runs this function; rank 0 alone takes the locks and writes
    # files, and what it decides (which runs are left) is handed to the others (docs/SPEC.md section 6).
    world = init_from_environment(device)
    device = process_device(device)
    checkpoint = load_checkpoint_model(args)
    image_size = checkpoint[0].image_size if checkpoint else 32
    dataset = load_dataset(args.dataset, image_size=image_size)
    if args.list_concepts:
        list_concepts(dataset)
        return 0
    check_dataset(dataset)
    # A bad file stops us now, not mid-run (checked once, by rank 0, for every process).
    on_main(world, lambda: validate_images(dataset, progress=not args.no_progress))
    # The default MERU and CLIP configs share their text tower's context length.
    context_length = checkpoint[0].context_length if checkpoint else \
        models.model_config(default_model(BOTH[0])).text.context_length
    data = EncodedDataset.build(dataset, context_length)
    base_models = {}  # geometry -> the model to unlearn from
    if checkpoint:
        check_classes(args.checkpoint, checkpoint[1], data)
        base_models[args.geometry] = checkpoint[0].to(device).eval()
    specs = plan(args, data)
    fingerprints = model_fingerprints(args, data, specs, checkpoint)
    if checkpoint is None:  # a dataset the default models cannot learn fails now, not during pretraining
        for geometry in fingerprints:
            check_vocabulary(models.create_model(default_model(geometry)), data)
    inputs = record_inputs(args, data, fingerprints)
    out = Path(args.out) if args.out else default_out(args, data)
    on_main(world, lambda: make_out_folder(out))
    lock = hold_lock(out / OUT_LOCK, f"--out {out}", timeout=args.lock_timeout, notify=tell) if world.is_main \
        else contextlib.nullcontext()
    with lock:
        config = experiment_config(args, data, specs, fingerprints)
        results = on_main(world, lambda: open_results(out, config, specs, inputs))
        bench = Workbench(args, data, device, base_models, world=world)
        todo = [s for s in specs if s.key not in results.keys()]
        if world.is_main:
            tell(f"{len(specs)} run(s), {len(specs) - len(todo)} already done; results in {out}"
                 + (f"; {world.size} processes" if world.distributed else ""))
        runner = run_sequences if args.sequential else run_missing  # stages run in order, each from the last
        runner(bench, todo, results, out, inputs)
        if world.is_main:
            if not args.no_figures:
                redraw_missing_figures(bench, specs, results, out)
            print(write_outputs(args, out, specs, results))
        barrier(world)
    return 0


@dataclass
class Workbench:
    """What the runs of one command share, each made on first use: the models to unlearn from,
    the audit contexts, and the audits before unlearning."""

    args: argparse.Namespace
    data: EncodedDataset
    device: object
    base_models: dict  # geometry -> model (a --checkpoint's model is there from the start)
    world: World = SINGLE  # the processes of a torchrun launch, which share every run's work
    contexts: dict = field(default_factory=dict)
    audits_before: dict = field(default_factory=dict)

    pretraining: dict = field(default_factory=dict)  # geometry -> the cached model's pretraining summary

    def base(self, geometry: str):
        if geometry not in self.base_models:
            entry = pretrained_entry(geometry, self.data, Path(self.args.cache))
            self.base_models[geometry], metadata = cached_model(
                entry, geometry, self.data, device=self.device, progress=not self.args.no_progress,
                lock_timeout=self.args.lock_timeout, world=self.world, workers=self.args.workers)
            self.pretraining[geometry] = metadata.get("pretraining")
        return self.base_models[geometry]

    def context(self, spec: RunSpec):
        from .audits import AuditContext

        if (spec.forget, spec.seed) not in self.contexts:
            self.contexts[(spec.forget, spec.seed)] = AuditContext.build(self.data, list(spec.forget), seed=spec.seed,
                                                                         world=self.world)
        return self.contexts[(spec.forget, spec.seed)]

    def before(self, spec: RunSpec) -> dict:
        from .audits import run_audits

        key = (spec.geometry, spec.forget, spec.seed)
        if key not in self.audits_before:
            self.audits_before[key] = run_audits(self.base(spec.geometry), self.context(spec))
            if self.world.is_main:
                warn_if_not_known(spec, self.audits_before[key])
        return self.audits_before[key]

    def environment(self, *, progress: bool, world: World | None = None) -> Environment:
        """Where this command's methods run: its device, processes (``world``: default, all of
        them), data-loader workers and pretrained-model cache."""
        return Environment(device=self.device, progress=progress, world=self.world if world is None else world,
                           workers=self.args.workers, cache_dir=Path(self.args.cache),
                           lock_timeout=self.args.lock_timeout)

    def trainer_overrides(self) -> dict:
        """The trainer settings the command line overrides (--steps, --batch-size, --no-early-stop,
        --retain-kept)."""
        overrides = {"steps": self.args.steps} if self.args.steps is not None else {}
        if self.args.batch_size is not None:
            overrides["batch_size"] = self.args.batch_size
        if self.args.no_early_stop:
            overrides["target_forget_accuracy"] = None
        overrides["target_retain_kept"] = self.args.retain_kept or None
        return overrides


#: Below this zero-shot accuracy before unlearning, forgetting a concept says little: the model
#: hardly knew it (chance on ``shapes`` is 1/12).
KNOWN_CONCEPT_ACCURACY = 0.5


def warn_if_not_known(spec: RunSpec, before: dict) -> None:
    """One line when the model recognises the concepts to forget on fewer than half of their test
    images: a low forget accuracy after unlearning would then mean little."""
    accuracy = before.get("forget_accuracy")
    if accuracy is not None and math.isfinite(accuracy) and accuracy < KNOWN_CONCEPT_ACCURACY:
        tell(f"warning: before unlearning, the {spec.geometry} model recognises {', '.join(spec.forget)} on only "
             f"{accuracy:.1%} of the test images (zero-shot); forgetting what the model never knew means little "
             "— pretrain it longer or choose concepts it knows")


def run_missing(bench: Workbench, todo: list, results: ResultsFile, out: Path, inputs: dict) -> None:
    """Run every run of ``todo``, appending each record as soon as it is done (rank 0 writes; in a
    distributed run every process does each run's work with it)."""
    from .figures import write_figures

    for number, spec in enumerate(todo, 1):
        base, context, before = bench.base(spec.geometry), bench.context(spec), bench.before(spec)
        environment = bench.environment(progress=bench.world.is_main and not bench.args.no_progress)
        if not bench.world.is_main:
            run_one(spec, base, context, before, environment=environment, overrides=bench.trainer_overrides())
            continue
        tell(f"[{number}/{len(todo)}] {spec.label}: forgetting {', '.join(spec.forget)} (seed {spec.seed})")
        record, after_model = run_one(spec, base, context, before, environment=environment,
                                      overrides=bench.trainer_overrides())
        record["inputs"] = inputs[spec.geometry]
        record["pretraining"] = bench.pretraining.get(spec.geometry)  # None for a --checkpoint model
        if not bench.args.no_figures and spec.seed == 0:  # before the record: a rerun redoes both
            write_figures(out, spec, base, after_model, context, record)
        results.append(record)
        tell(outcome_line(record))


def redraw_missing_figures(bench: Workbench, specs: list, results: ResultsFile, out: Path) -> None:
    """Draw again the figures of finished seed-0 runs that were deleted since. The alignment figure
    comes from the record; the others need the unlearned model, so the run's unlearning is redone
    (the cost of a run, paid only for a missing figure; the record stays as it is)."""
    from .figures import MODEL_FIGURES, figure_paths, write_figures

    records = {record["key"]: record for record in results.records}
    for spec in specs:
        record = records.get(spec.key)
        if spec.seed != 0 or record is None or not spec.per_run_figures:
            continue
        missing = [kind for kind, path in figure_paths(out, spec, record).items() if not path.exists()]
        base = after = context = None
        if any(kind in MODEL_FIGURES for kind in missing):
            tell(f"redrawing the {', '.join(missing)} figure(s) of {spec.label} forgetting {', '.join(spec.forget)}: "
                 "making its model again (its record stays as it is)")
            base, context = bench.base(spec.geometry), bench.context(spec)
            # Rank 0 alone: redone in one process (figures are pictures; no record changes).
            after = unlearned_copy(spec, base, replace(context, world=SINGLE, _cache=[]), record["settings"],
                                   environment=bench.environment(progress=False, world=SINGLE))
        if missing:
            write_figures(out, spec, base, after, context, record, kinds=missing)


def write_outputs(args, out: Path, specs: list, results: ResultsFile) -> str:
    """Write the report (and with --scaling its figure) from the records; return the report."""
    from .figures import scaling_figure
    from .report import write_report

    planned = {spec.key for spec in specs}
    records = [record for record in results.records if record["key"] in planned]
    if args.scaling and not args.no_figures:
        scaling_figure(out / "scaling.png", records)
    return write_report(out, records, scaling=bool(args.scaling), figures=not args.no_figures)


if __name__ == "__main__":
    sys.exit(main())
