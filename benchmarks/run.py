"""How does geometry change forgetting? Remove concepts from MERU and CLIP, audit, report.

    python -m benchmarks.run --geometry lorentz          # HAC on MERU (the built-in default)
    python -m benchmarks.run --geometry both             # HAC on MERU next to AC on CLIP
    python -m benchmarks.run --geometry both --scaling 1,2,4,8
    python -m benchmarks.run --ablation
    python -m benchmarks.run --dataset shapes --list-concepts

Pretrained models are trained on first use and cached (``--cache``); results go to ``--out``
(``results.jsonl``, ``report.md``, figures). Rerunning the same command resumes: finished runs are
skipped. Errors a user can fix are reported in one line with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

import models
import unlearning

from .common import EncodedDataset, resolve_device, write_json
from .datasets import DatasetError, load_dataset
from .pretrain import DEFAULT_MODELS
from .experiment import DEFAULT_METHODS, ResultsFile, RunSpec, check_classes, pretrained_model, run_one

GEOMETRY_CHOICES = {"lorentz": ["lorentz"], "euclidean": ["euclidean"], "both": ["lorentz", "euclidean"]}
DEFAULT_FORGET = {"shapes": "triangle", "digits": "seven"}


class UsageError(ValueError):
    """A mistake in the command line or its inputs: reported in one line, exit status 2."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--geometry", choices=sorted(GEOMETRY_CHOICES), default="lorentz",
                        help="lorentz = MERU, euclidean = CLIP, both = side by side (default: %(default)s)")
    parser.add_argument("--method", default=None,
                        help="objective(s), comma-separated (default: hac on MERU, ac on CLIP); "
                             f"known: {', '.join(unlearning.list_objectives())}")
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
    parser.add_argument("--list-concepts", action="store_true", help="print every concept with its parent and exit")
    parser.add_argument("--scaling", default=None, help="forget that many concepts at once, e.g. 1,2,4,8")
    parser.add_argument("--ablation", action="store_true",
                        help="HAC with each component off, AC on MERU and AC on CLIP")
    parser.add_argument("--steps", type=int, default=None, help="override the unlearning steps of every method")
    parser.add_argument("--no-early-stop", action="store_true",
                        help="run every step instead of stopping once the forget concepts are forgotten")
    parser.add_argument("--no-figures", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


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
    specs = [RunSpec("lorentz", method, forget, seed, label, tuple(sorted(options.items())))
             for label, method, options in variants]
    specs.append(RunSpec("euclidean", "ac", forget, seed, "AC on CLIP"))
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


def plan(args, data: EncodedDataset) -> list:
    """Every run the command asks for, in order."""
    geometries = GEOMETRY_CHOICES[args.geometry]
    known = unlearning.list_objectives()
    methods = list(dict.fromkeys(args.method.split(","))) if args.method else None
    for method in methods or []:
        if method not in known:
            raise UsageError(f"--method {method}: unknown objective; known: {', '.join(known)}")
    forget = tuple(dict.fromkeys(args.forget.split(","))) if args.forget else (
        DEFAULT_FORGET.get(data.dataset.name) or data.classes[0],)
    for concept in forget:
        if concept not in data.dataset.hierarchy:
            raise UsageError(f"--forget {concept}: unknown concept in {data.dataset.name!r}; known: "
                             f"{', '.join(data.dataset.hierarchy.concepts())}")
    if args.seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {args.seeds}")
    if args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps must be at least 1, got {args.steps}")
    if args.ablation and (args.method or args.scaling or args.checkpoint):
        raise UsageError("--ablation runs its own methods on both default models; drop --method, --scaling "
                         "and --checkpoint")
    specs = []
    for seed in range(args.seeds):
        if args.ablation:
            specs += ablation_specs(forget, seed)
            continue
        forget_sets = [forget]
        if args.scaling:
            try:
                counts = list(dict.fromkeys(int(c) for c in args.scaling.split(",")))
            except ValueError:
                raise UsageError(f"--scaling expects comma-separated counts such as 1,2,4,8, got {args.scaling!r}") from None
            forget_sets = [draw_concepts(data.classes, k, seed=1234) for k in counts]
        for geometry in geometries:
            for method in methods or [DEFAULT_METHODS[geometry]]:
                for concepts in forget_sets:
                    specs.append(RunSpec(geometry, method, concepts, seed))
    for spec in specs:
        objective = unlearning.create_objective(spec.method, **dict(spec.options))
        if objective.requires_hyperbolic and spec.geometry != "lorentz":
            raise UsageError(f"--method {spec.method} needs the Lorentz geometry (MERU); "
                             f"use ac for CLIP or --geometry lorentz")
    return specs


def experiment_config(args, data: EncodedDataset, specs: list) -> dict:
    """What identifies the contents of an output folder (a rerun must match it)."""
    return {
        "dataset": data.dataset.name,
        "checkpoint": str(Path(args.checkpoint).resolve()) if args.checkpoint else None,
        "runs": sorted(spec.key for spec in specs),
        "steps": args.steps,
        "early_stop": not args.no_early_stop,
    }


def default_out(args, data: EncodedDataset) -> Path:
    mode = "ablation" if args.ablation else f"scaling-{args.scaling.replace(',', '_')}" if args.scaling else None
    parts = [data.dataset.name, "ablation" if args.ablation else args.geometry]
    if args.method:
        parts.append(args.method.replace(",", "+"))
    if args.forget:
        parts.append(args.forget.replace(",", "+"))
    if mode and not args.ablation:
        parts.append(mode)
    if args.seeds > 1:
        parts.append(f"{args.seeds}seeds")
    return Path("runs") / "-".join(parts)


def prepare_out(out: Path, config: dict) -> None:
    config_path = out / "config.json"
    if config_path.exists():
        existing = json.loads(config_path.read_text())
        if existing != config:
            raise UsageError(
                f"--out {out} holds results of a different configuration ({config_path}); "
                "choose another --out or delete that folder"
            )
    out.mkdir(parents=True, exist_ok=True)
    write_json(config_path, config)


def list_concepts(dataset) -> None:
    hierarchy = dataset.hierarchy
    for concept in hierarchy.concepts():
        print(f"{concept}\t{hierarchy.parent_of(concept) or '-'}")


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return _main(args)
    except (UsageError, DatasetError, models.CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished runs are saved; rerun the same command to resume", file=sys.stderr)
        return 130


def _main(args) -> int:
    from .audits import AuditContext, run_audits
    from .figures import scaling_figure, write_figures
    from .report import write_report

    try:
        device = resolve_device(args.device)
    except ValueError as error:
        raise UsageError(str(error)) from None
    base_models = {}  # geometry -> the model to unlearn from
    if args.checkpoint:
        if args.geometry == "both":
            raise UsageError("--checkpoint holds one model; use --geometry lorentz or euclidean with it")
        model, metadata = models.load_model_file(args.checkpoint, args.model)
        if model.config.geometry != args.geometry:
            raise UsageError(f"--checkpoint {args.checkpoint} holds a {model.config.geometry} model "
                             f"({model.config.name}), but --geometry is {args.geometry}")
        base_models[args.geometry] = model
    elif args.model:
        raise UsageError("--model names the config of a released --checkpoint file; pass --checkpoint too")
    image_size = model.image_size if args.checkpoint else 32
    dataset = load_dataset(args.dataset, image_size=image_size)
    if args.list_concepts:
        list_concepts(dataset)
        return 0
    # The default MERU and CLIP configs share their text tower's context length.
    context_length = model.context_length if args.checkpoint else \
        models.model_config(DEFAULT_MODELS["lorentz"]).text.context_length
    data = EncodedDataset.build(dataset, context_length)
    if args.checkpoint:
        check_classes(args.checkpoint, metadata, data)
        base_models[args.geometry] = model.to(device).eval()
    specs = plan(args, data)
    out = Path(args.out) if args.out else default_out(args, data)
    prepare_out(out, experiment_config(args, data, specs))
    results = ResultsFile.open(out / "results.jsonl")
    todo = [s for s in specs if s.key not in results.keys()]
    print(f"{len(specs)} run(s), {len(specs) - len(todo)} already done; results in {out}", file=sys.stderr)

    progress = not args.no_progress
    contexts, before_cache = {}, {}
    for number, spec in enumerate(todo, 1):
        if spec.geometry not in base_models:
            base_models[spec.geometry] = pretrained_model(spec.geometry, data, cache_dir=Path(args.cache),
                                                          device=device, progress=progress)
        base = base_models[spec.geometry]
        if (spec.forget, spec.seed) not in contexts:
            contexts[(spec.forget, spec.seed)] = AuditContext.build(data, list(spec.forget), seed=spec.seed)
        context = contexts[(spec.forget, spec.seed)]
        before_key = (spec.geometry, spec.forget, spec.seed)
        if before_key not in before_cache:
            before_cache[before_key] = run_audits(base, context)
        print(f"[{number}/{len(todo)}] {spec.label}: forgetting {', '.join(spec.forget)} (seed {spec.seed})",
              file=sys.stderr)
        settings = {"steps": args.steps} if args.steps is not None else {}
        if args.no_early_stop:
            settings["target_forget_accuracy"] = None
        record, after_model = run_one(spec, base, data, context, before_cache[before_key], device=device,
                                      progress=progress, settings=settings)
        if not args.no_figures and spec.seed == 0:  # before the record: a rerun redoes both
            write_figures(out, spec, base, after_model, context, record)
        results.append(record)
        print(f"    forget accuracy {record['before']['forget_accuracy']:.1%} -> {record['after']['forget_accuracy']:.1%}, "
              f"retain accuracy {record['before']['retain_accuracy']:.1%} -> {record['after']['retain_accuracy']:.1%} "
              f"({record['seconds']:.0f} s)", file=sys.stderr)

    records = [r for r in ResultsFile.open(out / "results.jsonl").records if r["key"] in {s.key for s in specs}]
    if args.scaling and not args.no_figures:
        scaling_figure(out / "scaling.png", records)
    report = write_report(out, records, scaling=bool(args.scaling), figures=not args.no_figures)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
