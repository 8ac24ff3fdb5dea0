"""The real-size path: the whole ``benchmarks.run`` harness on released-layout ``meru_vit_s.pth`` and
``clip_vit_s.pth`` files (timm ViT-S/16 at 224 px, MERU's 12-layer 512-wide text tower with a
77-token context) and a folder dataset of PNG files, on CPU.

The files hold the weights of a randomly initialised ``meru-vit-s`` written back in MERU's released
key layout (the inverse of ``models/meru_weights.py``, by hand from its docstring); the CLIP file is
the same towers without MERU's curvature and feature scales (``clip-vit-s`` has exactly that layout,
checked on the meta device). No ``--model`` is passed: the harness tells the size from the weights.

Cost. On one CPU thread an image-text pair costs about 0.5 s forward and 1.5 s forward + backward
through both towers, and one optimiser step over the 85 M parameters about 4 s. The unlearning
batch (128 pairs by default, about 4 minutes a step here) is set to 2 pairs (1 forget, 1 retain)
with ``--batch-size``; the relearning attack (25 full-batch steps on up to 16 + 16 pairs, before and
after unlearning, about 20 minutes a call here), which has no command-line option, is bounded as
tests/test_harness_reliability.py bounds it: 1 step on 1 + 1 pairs.

Everything else is the harness as a user runs it, with ``--steps 1`` and a dataset of 8 pairs.
"""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import models
from benchmarks import run
from benchmarks.audits import AUDIT_FAMILIES, audit_relearn, headline_columns

IMAGE_SIZE = 224  # the released ViTs' input size: the loader resizes the 64 px files to it
FILE_SIZE = 64
UNLEARNING_BATCH = 2  # pairs per unlearning step (the default 128 takes minutes a step on CPU)
# A 2-level hierarchy: leaves -> parents -> root.
HIERARCHY = {"circle": "shape", "square": "shape", "apple": "fruit", "shape": "thing", "fruit": "thing",
             "thing": None}
LEAVES = ("circle", "square", "apple")
COLOURS = {"circle": (200, 30, 30), "square": (30, 30, 200), "apple": (40, 170, 40)}
# (train, test) pairs per leaf: the forgotten leaf has 2 test pairs, so that its test group has
# mismatched captions (the alignment audit's gap) and two-sided membership scores.
PAIRS_PER_LEAF = {"circle": (2, 2), "square": (1, 1), "apple": (1, 1)}
FORGET = "circle"

# What each audit family adds to the record (benchmarks/audits/__init__.py); families registered
# later are checked through their headline columns only.
FAMILY_KEYS = {
    "zero_shot": ("forget_accuracy", "retain_accuracy", "parent_accuracy", "retain_parent_accuracy"),
    "retrieval": ("recall",),
    "alignment": ("alignment_matrix", "alignment_groups", "alignment_gap", "retain_alignment_gap",
                  "alignment_gaps", "alignment_matched", "alignment_mismatched"),
    "membership": ("mia_auc", "retain_mia_auc", "mia_scores"),
    "probe": ("probe_forget_accuracy", "probe_retain_accuracy", "probe_train_accuracy"),
    "relearn": ("relearn_forget_accuracy", "relearn_retain_accuracy", "relearn_loss"),
    "geometry": ("forget_image_dist0", "retain_image_dist0", "forget_text_dist0", "retain_text_dist0",
                 "forget_in_cone", "retain_in_cone", "forget_in_parent_cone", "retain_in_parent_cone",
                 "curvature"),
}


# ------------------------------------------------------------------ released-layout files
# Our key -> MERU's, for keys renamed whole; our prefix -> MERU's (models/meru_weights.py, inverted).
OURS_TO_MERU = {
    "geometry.log_c": "curv",
    "visual_proj": "visual_proj.weight",
    "textual_proj": "textual_proj.weight",
    "textual.token_embedding.weight": "textual.token_embed.weight",
    "textual.positional_embedding": "textual.posit_embed",
}
OUR_PREFIXES_TO_MERU = (("visual.trunk.", "visual."), ("textual.transformer.resblocks.", "textual.resblocks."))
MERU_ONLY = ("curv", "visual_alpha", "textual_alpha")  # MERU's CLIPBaseline has none of these


def meru_key(key: str) -> str:
    if key in OURS_TO_MERU:
        return OURS_TO_MERU[key]
    for ours, theirs in OUR_PREFIXES_TO_MERU:
        if key.startswith(ours):
            return theirs + key[len(ours):]
    return key


def released_layout(state_dict: dict, *, context_length: int, meru: bool) -> dict:
    """Our model's ``state_dict`` in MERU's released layout: MERU's key names, colour statistics
    ``(3, 1, 1)``, ``curv`` = log c in float32, and MERU's boolean causal-mask buffer; a CLIP
    baseline without ``curv`` and the alphas."""
    released = {}
    for key, value in state_dict.items():
        if key in ("pixel_mean", "pixel_std"):
            value = value.reshape(3, 1, 1)
        if key == "geometry.log_c":
            value = value.float()  # MERU's curv is a float32 parameter
        released[meru_key(key)] = value
    released["textual.attn_mask"] = torch.ones(context_length, context_length, dtype=torch.bool).triu(1)
    if not meru:
        released = {key: value for key, value in released.items() if key not in MERU_ONLY}
    return released


@pytest.fixture(scope="module")
def released_files(tmp_path_factory):
    """``{geometry: (path, curvature of the weights or None)}``: ``meru_vit_s.pth`` and
    ``clip_vit_s.pth``, random weights in the released layout (``{"model": state_dict}``)."""
    folder = tmp_path_factory.mktemp("released")
    torch.manual_seed(0)
    meru = models.create_model("meru-vit-s")
    with torch.device("meta"):  # the CLIP file may share MERU's towers: the same layout but log c
        clip_keys = {k: tuple(v.shape) for k, v in models.create_model("clip-vit-s").state_dict().items()}
    ours = meru.state_dict()
    assert clip_keys == {k: tuple(v.shape) for k, v in ours.items() if k != "geometry.log_c"}
    context = meru.config.text.context_length
    files = {}
    for geometry, name, is_meru in (("lorentz", "meru_vit_s.pth", True), ("euclidean", "clip_vit_s.pth", False)):
        state = released_layout(ours, context_length=context, meru=is_meru)
        assert "visual.cls_token" in state and "textual.resblocks.11.attn.in_proj_weight" in state
        torch.save({"model": state}, folder / name)
        files[geometry] = (folder / name, meru.geometry.c.item() if is_meru else None)
    del meru, ours
    yield files
    for path, _ in files.values():  # 340 MB each: not kept in pytest's last three temporary folders
        path.unlink()


# ------------------------------------------------------------------------- the dataset
def draw(leaf: str, variant: int) -> Image.Image:
    """A ``FILE_SIZE`` px picture of ``leaf``: a coloured shape on a light background."""
    image = Image.new("RGB", (FILE_SIZE, FILE_SIZE), (235, 235, 225 - 20 * variant))
    pen = ImageDraw.Draw(image)
    box = (12 + 4 * variant, 12, 52, 52 - 4 * variant)
    if leaf == "square":
        pen.rectangle(box, fill=COLOURS[leaf])
    else:
        pen.ellipse(box, fill=COLOURS[leaf])
    if leaf == "apple":
        pen.line((32, 14, 36, 4), fill=(90, 60, 20), width=3)
    return image


@pytest.fixture(scope="module")
def dataset_folder(tmp_path_factory):
    """The folder format (pairs.jsonl, hierarchy.json, prompts.json with one template) with real
    PNG files (:data:`PAIRS_PER_LEAF`)."""
    root = tmp_path_factory.mktemp("data")
    (root / "imgs").mkdir()
    lines = []
    for leaf in LEAVES:
        for split, count in zip(("train", "test"), PAIRS_PER_LEAF[leaf]):
            for variant in range(count):
                name = f"imgs/{leaf}-{split}-{variant}.png"
                draw(leaf, variant + (split == "test")).save(root / name)
                caption = f"a {('small', 'large')[variant]} {leaf} on a light background."
                lines.append(json.dumps({"image": name, "caption": caption, "concepts": [leaf], "split": split}))
    (root / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    (root / "hierarchy.json").write_text(json.dumps(HIERARCHY))
    # One prompt per concept: every prompt is a pass through the 12-layer text tower.
    (root / "prompts.json").write_text(json.dumps({"templates": ["a photo of a {}."]}))
    return root


@pytest.fixture
def bounded_costs(monkeypatch):
    """The relearning attack's length, which has no command-line option, made small (the
    unlearning batch is set with --batch-size)."""
    monkeypatch.setitem(AUDIT_FAMILIES, "relearn", functools.partial(audit_relearn, steps=1, n_forget=1))


@pytest.fixture
def loaded_datasets(monkeypatch):
    """``[(options, dataset)]`` of every ``load_dataset`` call the harness makes."""
    loaded = []

    def load_dataset(*args, **options):
        dataset = load_dataset_as_run_does(*args, **options)
        loaded.append((options, dataset))
        return dataset

    load_dataset_as_run_does = run.load_dataset
    monkeypatch.setattr(run, "load_dataset", load_dataset)
    return loaded


# --------------------------------------------------------------------------- checks
def measured(value) -> bool:
    """A number, or every number in a nested dict/list, finite."""
    if isinstance(value, dict):
        return all(measured(v) for v in value.values())
    if isinstance(value, list):
        return all(measured(v) for v in value) if value and not isinstance(value[0], str) else True
    return isinstance(value, (int, float)) and math.isfinite(value)


def check_audits(metrics: dict, geometry: str) -> None:
    """Every family's keys are there, and every number is finite: each group has the pairs its
    audits need (the record would hold ``null`` and a ``<key>_reason`` otherwise)."""
    for family in AUDIT_FAMILIES:
        for key in FAMILY_KEYS.get(family, ()):
            assert key in metrics, f"{family}: {key} missing"
    for column in headline_columns():
        assert measured(metrics.get(column.key)), f"{column.key} = {metrics.get(column.key)}"
    for key in (k for keys in FAMILY_KEYS.values() for k in keys):
        assert measured(metrics[key]), f"{key} = {metrics[key]}"
    assert "_reason" not in json.dumps(metrics)  # no family recorded a number as not measured
    if geometry == "lorentz":
        assert metrics["curvature"] > 0 and metrics["forget_image_dist0"] > 0


def run_harness(path, dataset, out, geometry: str, *extra) -> int:
    return run.main(["--geometry", geometry, "--checkpoint", str(path), "--dataset", str(dataset),
                     "--forget", FORGET, "--steps", "1", "--batch-size", str(UNLEARNING_BATCH), "--no-early-stop",
                     "--device", "cpu",
                     "--out", str(out), "--no-progress", *extra])


@pytest.mark.parametrize("geometry,model_name,figures", [("lorentz", "meru-vit-s", True),
                                                        ("euclidean", "clip-vit-s", False)])
def test_harness_unlearns_a_released_vit_s_file_at_224_px(released_files, dataset_folder, bounded_costs,
                                                          loaded_datasets, tmp_path, capsys, geometry,
                                                          model_name, figures):
    path, curvature = released_files[geometry]
    out = tmp_path / "out"
    code = run_harness(path, dataset_folder, out, geometry, *(() if figures else ("--no-figures",)))
    assert code == 0, capsys.readouterr().err

    ((options, dataset),) = loaded_datasets  # the images the models were given
    assert options["image_size"] == IMAGE_SIZE
    assert tuple(dataset.images(np.arange(2)).shape) == (2, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert models.model_config(model_name).vision.image_size == IMAGE_SIZE

    (record,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert record["model"] == model_name and record["geometry"] == geometry and record["forget"] == [FORGET]
    assert record["method"] == {"lorentz": "hac", "euclidean": "ac"}[geometry]
    assert record["settings"]["batch_size"] == UNLEARNING_BATCH and record["unlearning"]["steps"] == 1
    for phase in ("before", "after"):
        check_audits(record[phase], geometry)
    if curvature is not None:  # the file's curvature was read, then trained on
        assert record["before"]["curvature"] == pytest.approx(curvature, rel=1e-5)
        assert record["after"]["curvature"] != record["before"]["curvature"]

    report = (out / "report.md").read_text()
    assert f"| {record['label']} | {FORGET} | 1 |" in report and "## Before unlearning" in report
    pictures = sorted(p.name for p in out.glob("*.png"))
    if figures:
        assert {name.split("-")[0] for name in pictures} == {"embeddings", "dist0", "alignment"}
        assert all((out / name).stat().st_size > 1000 for name in pictures)
        assert all(f"]({name})" in report for name in pictures)
    else:
        assert pictures == [] and "## Figures" not in report

