"""``report.md``: mean ± standard deviation over seeds of every run group in ``results.jsonl``."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np

from .audits import headline_columns
from .common import atomic_write_text

NOT_MEASURED = "n/a"  # a metric recorded as null (or non-finite): nothing to measure it on


def _format(values, kind: str) -> str:
    """Mean (± standard deviation over seeds) of the measured ``values`` in the style ``kind``."""
    values = [v for v in values if v is not None and np.isfinite(v)]
    if not values:
        return NOT_MEASURED
    scale, suffix, digits = {"pct": (100.0, "%", 1), "num": (1.0, "", 3), "int": (1.0, "", 0),
                             "sec": (1.0, "", 1)}[kind]
    mean = np.mean(values) * scale
    if len(values) == 1:
        return f"{mean:.{digits}f}{suffix}"
    return f"{mean:.{digits}f} ± {np.std(values, ddof=1) * scale:.{digits}f}{suffix}"


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
    if figures:
        figure_files = sorted(p.name for p in Path(out).glob("*.png"))
        if figure_files:
            parts.append("## Figures")
            parts += [f"![{name}]({name})" for name in figure_files]
    text = "\n\n".join(parts) + "\n"
    atomic_write_text(Path(out) / "report.md", text)
    return text
