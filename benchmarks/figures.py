"""PNG figures: embeddings on the Poincaré disk, distance-to-origin histograms, alignment heatmaps,
scaling curves. Written atomically (temporary file + rename) like every other output."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from models.checkpoint import atomic_write  # noqa: E402
from models.evaluation import class_embeddings, embed_images  # noqa: E402

from .common import bounded_name  # noqa: E402


def slug(text: str) -> str:
    """``text`` as a file-name part: lower case, runs of other characters as one ``-``, bounded
    like every name the tools write (:func:`benchmarks.common.bounded_name`)."""
    return bounded_name(re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-"))


def _save(fig, path: Path) -> None:
    try:
        atomic_write(path, lambda file: fig.savefig(file, format="png", dpi=120, bbox_inches="tight"))
    finally:
        plt.close(fig)


def disk_coordinates(geometry, points: torch.Tensor, basis: torch.Tensor) -> np.ndarray:
    """2-D display of embeddings on the unit (Poincaré) disk, the same code for every geometry:
    the direction of each point's space part projected on a 2-D ``basis`` (principal directions),
    at the geometry's :meth:`~manifolds.Geometry.poincare_radius` (``tanh(sqrt(c) d / 2)`` for its
    distance ``d`` to the origin; ``tanh(d / 2)`` when flat)."""
    space = geometry.to_space(points)
    direction = torch.nn.functional.normalize(space, dim=-1) @ basis.T
    direction = torch.nn.functional.normalize(direction, dim=-1)
    radius = geometry.poincare_radius(points)
    return (direction * radius[:, None]).detach().cpu().numpy()


def _principal_basis(geometry, points: torch.Tensor) -> torch.Tensor:
    directions = torch.nn.functional.normalize(geometry.to_space(points), dim=-1)
    centred = directions - directions.mean(0, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    return vh[:2]


@torch.no_grad()
def _embedding_groups(model, context, limit: int = 150) -> dict:
    data = context.data
    hierarchy = data.dataset.hierarchy
    rng = np.random.default_rng(0)
    retain = rng.choice(context.retain_test, min(limit, len(context.retain_test)), replace=False)
    forget = context.forget_test[:limit]
    forget_names = [data.classes[k] for k in context.forget_classes]
    parents = sorted({hierarchy.parent_of(c) for c in forget_names if hierarchy.parent_of(c)})
    others = [c for c in data.classes if c not in forget_names]
    prompts = lambda names: class_embeddings(model, [data.concept_prompt_tokens(n) for n in names])  # noqa: E731
    return {
        "retain images": embed_images(model, data.image_source(retain)),
        "forget images": embed_images(model, data.image_source(forget)),
        "other concepts": prompts(others),
        "forgotten concepts": prompts(forget_names),
        "their parents": prompts(parents) if parents else None,
    }


STYLE = {
    "retain images": dict(s=8, c="#9aa5b1", alpha=0.5),
    "forget images": dict(s=10, c="#d62728", alpha=0.7),
    "other concepts": dict(s=50, c="#1f77b4", marker="x"),
    "forgotten concepts": dict(s=160, c="#d62728", marker="*", edgecolors="black"),
    "their parents": dict(s=110, c="black", marker="^"),
}


def embedding_figure(path: Path, title: str, before_model, after_model, context) -> None:
    groups = {"before": _embedding_groups(before_model, context), "after": _embedding_groups(after_model, context)}
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.5))
    for ax, (phase, group) in zip(axes, groups.items()):
        model = before_model if phase == "before" else after_model
        basis = _principal_basis(model.geometry, torch.cat([v for v in group.values() if v is not None]))
        coordinates = {name: disk_coordinates(model.geometry, points, basis)
                       for name, points in group.items() if points is not None}
        # Zoom in on the occupied part of the disk (small models stay close to the origin).
        extent = min(1.05, max(0.05, 1.15 * max(np.abs(xy).max() for xy in coordinates.values())))
        ax.add_patch(plt.Circle((0, 0), 1.0, fill=False, color="black", lw=1))
        for name, xy in coordinates.items():
            ax.scatter(xy[:, 0], xy[:, 1], label=name, **STYLE[name])
        ax.set_xlim(-extent, extent), ax.set_ylim(-extent, extent), ax.set_aspect("equal")
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_title(f"{phase} (curvature {model.geometry.c.item():.2f}, view ±{extent:.2f} of the unit disk)")
    axes[1].legend(loc="lower right", fontsize=8, framealpha=0.8)
    fig.suptitle(f"{title}: embeddings on the Poincaré disk (radius tanh(√c·d₀/2), direction: 2-D PCA)")
    _save(fig, path)


@torch.no_grad()
def distance_histogram(path: Path, title: str, before_model, after_model, context) -> None:
    data = context.data
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, (group, rows) in zip(axes, (("forget", context.forget_test), ("retain", context.retain_test[:600]))):
        distances = {phase: model.geometry.dist0(embed_images(model, data.image_source(rows))).cpu().numpy()
                     for phase, model in (("before", before_model), ("after", after_model))}
        low = min(d.min() for d in distances.values())
        high = max(d.max() for d in distances.values())
        span = max(high - low, 0.02)  # unit-normalised CLIP embeddings all sit at d0 = 1
        bins = np.linspace(low - 0.05 * span, high + 0.05 * span, 31)
        for (phase, d0), color in zip(distances.items(), ("#1f77b4", "#d62728")):
            ax.hist(d0, bins=bins, alpha=0.55, color=color, label=f"{phase} (mean {d0.mean():.3f})")
        ax.set_title(f"{group} test images"), ax.set_xlabel("distance to origin d₀"), ax.legend()
    fig.suptitle(f"{title}: distance to the origin")
    _save(fig, path)


def alignment_figure(path: Path, title: str, record: dict) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    groups = record["after"].get("alignment_groups")
    for ax, phase in zip(axes, ("before", "after")):
        rows = record[phase]["alignment_matrix"]  # {image group: {caption group: mean similarity}}
        matrix = np.array([[rows[image][caption] for caption in groups] for image in groups], dtype=float)
        image = ax.imshow(matrix, cmap="viridis")
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="white", fontsize=8)
        ax.set_xticks(range(len(groups)), groups, rotation=30, ha="right")
        ax.set_yticks(range(len(groups)), groups)
        ax.set_xlabel("captions"), ax.set_ylabel("images"), ax.set_title(phase)
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.suptitle(f"{title}: alignment audit (mean similarity)")
    _save(fig, path)


def scaling_figure(path: Path, records: list) -> None:
    """Forgetting and retention against the number of concepts removed at once (± std over seeds)."""
    series = defaultdict(lambda: defaultdict(list))
    for record in records:
        series[record["label"]][len(record["forget"])].append(record["after"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, name in ((axes[0], "forget_accuracy", "forget accuracy ↓"),
                          (axes[1], "retain_accuracy", "retain accuracy ↑")):
        for label, by_count in series.items():
            counts = sorted(by_count)
            # A metric recorded as null (nothing to measure) is a gap in the curve, not an error.
            values = [[np.nan if m.get(key) is None else m[key] for m in by_count[k]] for k in counts]
            ax.errorbar(counts, [np.mean(v) for v in values], yerr=[np.std(v) for v in values],
                        marker="o", capsize=4, label=label)
        ax.set_xscale("log", base=2), ax.set_xticks(sorted({len(r["forget"]) for r in records}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("concepts forgotten at once"), ax.set_ylabel(name), ax.set_ylim(0, 1), ax.legend()
    fig.suptitle("Scaling: forgetting several concepts at once")
    _save(fig, path)


# The per-run figures, by kind: those drawn from the two models, and those drawn from the record.
MODEL_FIGURES = {"embeddings": embedding_figure, "dist0": distance_histogram}
RECORD_FIGURES = {"alignment": alignment_figure}


def figure_paths(out: Path, spec, record: dict) -> dict:
    """``{kind: file}`` of the per-run figures of ``spec`` (the alignment figure only when its
    record holds the alignment matrix)."""
    name = slug(f"{spec.label}-{'-'.join(spec.forget)}")
    kinds = [*MODEL_FIGURES, *(kind for kind in RECORD_FIGURES if "alignment_matrix" in record["after"])]
    return {kind: Path(out) / f"{kind}-{name}.png" for kind in kinds}


def write_figures(out: Path, spec, before_model, after_model, context, record: dict, kinds=None) -> None:
    """Per-run figures for the first seed of each run group: every kind, or only ``kinds`` (the
    record figures need no models: pass ``None`` for them when only those are asked for)."""
    title = f"{spec.label}, forgetting {', '.join(spec.forget)}"
    for kind, path in figure_paths(out, spec, record).items():
        if kinds is not None and kind not in kinds:
            continue
        if kind in RECORD_FIGURES:
            RECORD_FIGURES[kind](path, title, record)
        else:
            MODEL_FIGURES[kind](path, title, before_model, after_model, context)
