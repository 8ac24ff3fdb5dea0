"""``report.md``: mean ± standard deviation over seeds of every run group in ``results.jsonl``."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np

from .audits import headline_columns
from .common import atomic_write_text
from .methods import ORACLE

NOT_MEASURED = "n/a"  # a metric recorded as null (or non-finite): nothing to measure it on


def _format(values, kind: str) -> str:
    """Mean (± standard deviation over seeds) of the measured ``values`` in the style ``kind``."""
    values = [v for v in values if v is not None and np.isfinite(v)]
    if not values:
        return NOT_MEASURED
    scale, suffix, digits = {"pct": (100.0, "%", 1), "pts": (100.0, "", 1), "num": (1.0, "", 3),
                             "int": (1.0, "", 0), "sec": (1.0, "", 1)}[kind]
    mean = np.mean(values) * scale
    if len(values) == 1:
        return f"{mean:.{digits}f}{suffix}"
    return f"{mean:.{digits}f} ± {np.std(values, ddof=1) * scale:.{digits}f}{suffix}"


def percent(value) -> str:
    return f"{value:.1%}" if value is not None and np.isfinite(value) else NOT_MEASURED


def outcome_line(record: dict) -> str:
    """One line on what a finished run did to forget and retain accuracy, for the progress log."""
    before, after = record["before"], record["after"]
    return (f"    forget accuracy {percent(before['forget_accuracy'])} -> {percent(after['forget_accuracy'])}, "
            f"retain accuracy {percent(before['retain_accuracy'])} -> {percent(after['retain_accuracy'])} "
            f"({record['seconds']:.0f} s)")


def group_records(records: list) -> "OrderedDict[tuple, list]":
    groups: OrderedDict = OrderedDict()
    for record in records:
        groups.setdefault((record["label"], tuple(record["forget"])), []).append(record)
    return groups


def table(records: list, phase: str) -> str:
    """The headline table of one ``phase`` (``before``/``after``): the columns every audit family
    declares (``benchmarks.audits.headline_columns``), mean ± standard deviation over seeds."""
    columns = headline_columns()
    header = "| run | forget | seeds | " + " | ".join(column.title for column in columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 3)]
    for (label, forget), group in group_records(records).items():
        cells = [_format([r[phase].get(column.key) for r in group], column.format) for column in columns]
        lines.append(f"| {label} | {', '.join(forget)} | {len(group)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def recall_table(records: list) -> str:
    lines = ["| run | forget | phase | retain i→t R@1/5/10 | forget i→t R@1/5/10 | retain t→i R@1 | forget t→i R@1 |",
             "|---|---|---|---|---|---|---|"]
    for (label, forget), group in group_records(records).items():
        for phase in ("before", "after"):
            recall = [r[phase].get("recall", {}) for r in group]

            def cell(part, direction, ks=("1", "5", "10")):
                return "/".join(_format([rc.get(part, {}).get(direction, {}).get(k) for rc in recall], "pct")
                                for k in ks)

            lines.append(f"| {label} | {', '.join(forget)} | {phase} | {cell('retain', 'image_to_text')} | "
                         f"{cell('forget', 'image_to_text')} | {cell('retain', 'text_to_image', ('1',))} | "
                         f"{cell('forget', 'text_to_image', ('1',))} |")
    return "\n".join(lines)


def cost_table(records: list) -> str:
    lines = ["| run | forget | steps | unlearning s | samples/s | stopped early | peak memory MB (CPU: whole process) |",
             "|---|---|---|---|---|---|---|"]
    for (label, forget), group in group_records(records).items():
        u = [r["unlearning"] for r in group]
        lines.append(
            f"| {label} | {', '.join(forget)} | {_format([x['steps'] for x in u], 'int')} | "
            f"{_format([x['seconds'] for x in u], 'sec')} | {_format([x['samples_per_second'] for x in u], 'int')} | "
            f"{sum(bool(x['stopped_early']) for x in u)}/{len(u)} | {_format([x.get('peak_memory_mb') for x in u], 'int')} |"
        )
    return "\n".join(lines)


#: The metrics compared with the retrain oracle's (record keys of ``after``), with their table titles.
ORACLE_METRICS = {"forget_accuracy": "forget acc", "retain_accuracy": "retain acc", "mia_auc": "MIA AUC",
                  "parent_accuracy": "parent acc"}


def oracle_gaps(records: list) -> list:
    """``(record, gaps)`` for every record, the oracle's own excepted, whose (geometry, forget set,
    seed) has a retrain-oracle record: ``gaps[m] = |after[m] − oracle after[m]|`` for each metric
    of :data:`ORACLE_METRICS` and ``gaps["average_gap"]`` their mean (SalUn's "average gap",
    docs/SPEC.md section 5). A gap is ``None`` where either value was not measured, and so is the
    average then (a mean over fewer metrics would not compare with the others)."""
    oracles = {_oracle_key(r): r["after"] for r in records if r.get("method") == ORACLE}
    if not oracles:  # also: records written before the oracle existed may lack the keys it reads
        return []
    pairs = []
    for record in records:
        oracle = oracles.get(_oracle_key(record))
        if record["method"] == ORACLE or oracle is None:
            continue
        gaps = {metric: _gap(record["after"].get(metric), oracle.get(metric)) for metric in ORACLE_METRICS}
        measured = [gap for gap in gaps.values() if gap is not None]
        gaps["average_gap"] = sum(measured) / len(measured) if len(measured) == len(ORACLE_METRICS) else None
        pairs.append((record, gaps))
    return pairs


def _oracle_key(record: dict) -> tuple:
    """What a record shares with its oracle: the model's geometry, the forget set (in any order:
    the oracle is trained without all of it) and the seed."""
    return record["geometry"], tuple(sorted(record["forget"])), record["seed"]


def _gap(value, oracle) -> float | None:
    if value is None or oracle is None or not (np.isfinite(value) and np.isfinite(oracle)):
        return None
    return abs(value - oracle)


def oracle_table(records: list) -> str | None:
    """The gaps to the retrain oracle, in percentage points (MIA AUC × 100), mean ± standard
    deviation over seeds; ``None`` when no record has an oracle."""
    pairs = oracle_gaps(records)
    if not pairs:
        return None
    columns = [*ORACLE_METRICS, "average_gap"]
    titles = [f"{ORACLE_METRICS[c]} gap" if c in ORACLE_METRICS else "average gap" for c in columns]
    lines = ["| run | forget | seeds | " + " | ".join(titles) + " |", "|" + "---|" * (len(columns) + 3)]
    gaps_of = {id(record): gaps for record, gaps in pairs}
    for (label, forget), group in group_records([record for record, _ in pairs]).items():
        cells = [_format([gaps_of[id(r)][c] for r in group], "pts") for c in columns]
        lines.append(f"| {label} | {', '.join(forget)} | {len(group)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sequential_tables(records: list) -> list:
    """One table per sequence of one method on one model (``--sequential``): a row per stage with
    the request's forget accuracy, the forget accuracy of everything forgotten so far, retain,
    parent accuracy and MIA AUC after the stage, mean ± standard deviation over seeds."""
    sequences: OrderedDict = OrderedDict()
    for record in records:
        if "stage" in record:
            stages = sequences.setdefault((record["label"], tuple(record["sequence"])), OrderedDict())
            stages.setdefault(record["stage"], []).append(record)
    parts = []
    for (label, sequence), stages in sequences.items():
        lines = [f"### {label}: {' → '.join(sequence)}",
                 "| stage | request | forgotten so far | seeds | request forget acc ↓ | forget acc (so far) ↓ | "
                 "retain acc ↑ | parent acc | MIA AUC |", "|---|---|---|---|---|---|---|---|---|"]
        for stage, group in sorted(stages.items()):
            cells = [_format([r["after"].get(key) for r in group], kind) for key, kind in (
                ("request_forget_accuracy", "pct"), ("forget_accuracy", "pct"), ("retain_accuracy", "pct"),
                ("parent_accuracy", "pct"), ("mia_auc", "num"))]
            lines.append(f"| {stage} | {group[0]['request']} | {', '.join(group[0]['forget'])} | {len(group)} | "
                         + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return parts


#: The pretraining summary's columns in ``report.md``: title, key, format.
PRETRAINING_COLUMNS = (("steps", "steps", "int"), ("epochs", "epochs", "num"), ("zero-shot", "zero_shot_accuracy", "pct"),
                       ("linear probe", "linear_probe_accuracy", "pct"), ("zero-shot / probe", "zero_shot_to_probe", "num"),
                       ("membership AUC", "membership_auc", "num"), ("curvature", "curvature", "num"),
                       ("training s", "seconds", "sec"))


def pretraining_table(records: list) -> str | None:
    """One row per pretrained model the runs started from (``record["pretraining"]``, the cached
    model's summary; a ``--checkpoint`` model has none): how good and how general it was before
    anything was forgotten. ``None`` when no record carries a summary."""
    summaries = {}
    for record in records:
        if record.get("pretraining"):
            summaries.setdefault(record["model"], record["pretraining"])
    if not summaries:
        return None
    lines = ["| model | " + " | ".join(title for title, _, _ in PRETRAINING_COLUMNS) + " |",
             "|---|" + "---|" * len(PRETRAINING_COLUMNS)]
    for model, summary in summaries.items():
        cells = [_format([summary.get(key)], kind) for _, key, kind in PRETRAINING_COLUMNS]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(out: Path, records: list, *, scaling: bool = False, figures: bool = True) -> str:
    """Write ``out/report.md`` (atomically) and return its text."""
    if not records:
        text = "# Forgetting report\n\nNo finished runs yet.\n"
        atomic_write_text(Path(out) / "report.md", text)
        return text
    first = records[0]
    parts = [
        "# Forgetting report",
        f"Dataset `{first['dataset']}`; {len(records)} run(s). Values are mean ± standard deviation over "
        "seeds (seeds vary batch order, mismatched captions and audit sampling; the pretrained model is "
        "the same). Accuracies are macro zero-shot top-1 on held-out images.",
        "## After unlearning", table(records, "after"),
        "## Before unlearning (the same pretrained model)", table(records, "before"),
        "## Retrieval (test pairs)", recall_table(records),
        "## Cost", cost_table(records),
    ]
    pretrained = pretraining_table(records)
    if pretrained is not None:
        parts += ["## Pretrained models",
                  "Zero-shot leaf accuracy and a linear probe on the image embeddings (test split), and a membership "
                  "attack on pair alignment, training pairs against test pairs (0.5: not memorised; "
                  "`benchmarks.pretrain.pretraining_quality`).", pretrained]
    gaps = oracle_table(records)
    if gaps is not None:
        parts += ["## Gap to the retrain oracle",
                  "The gap |metric − oracle's metric| after unlearning, in percentage points (MIA AUC × 100), for runs "
                  "whose model, forget set and seed have a `retrain` record; the average gap is the mean of the "
                  "four (SalUn's \"average gap\"; lower is closer to retraining without the forget pairs).", gaps]
    stages = sequential_tables(records)
    if stages:
        parts += ["## Sequential unlearning",
                  "After each request, on the model that forgot the requests before it (accuracies after the "
                  "stage; \"so far\": over every concept forgotten up to that stage).", *stages]
    if figures:
        figure_files = sorted(p.name for p in Path(out).glob("*.png"))
        if figure_files:
            parts.append("## Figures")
            parts += [f"![{name}]({name})" for name in figure_files]
    text = "\n\n".join(parts) + "\n"
    atomic_write_text(Path(out) / "report.md", text)
    return text
