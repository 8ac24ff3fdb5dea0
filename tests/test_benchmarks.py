"""End-to-end: pretraining, the unlearning trainer on real models, and the `benchmarks.run` command."""

import copy

import numpy as np
import pytest
import torch

import models
import unlearning
from benchmarks import run
from benchmarks.audits import AuditContext
from benchmarks.common import zero_shot_accuracy
from benchmarks.experiment import (EVAL_EVERY, MAX_FORGET_FRACTION, TARGET_FORGET_ACCURACY, TARGET_RETAIN_KEPT, RunSpec,
                                   pretrained_entry, trainer_settings, unlearning_data)
from folder_data import read_records, run_harness

REQUIRED_KEYS = {"forget_accuracy", "retain_accuracy", "parent_accuracy", "mia_auc", "probe_forget_accuracy",
                 "relearn_forget_accuracy", "alignment_gap", "forget_image_dist0", "retain_image_dist0",
                 "forget_in_cone", "recall"}


def _load(cache, data, geometry):
    model, metadata = models.load_checkpoint(pretrained_entry(geometry, data, cache)[0])
    return model, metadata


@pytest.mark.parametrize("geometry", ["lorentz", "euclidean"])
def test_pretraining_reduces_the_loss_and_learns_concepts(pretrained_cache, geometry):
    cache, data, summaries = pretrained_cache
    summary = summaries[geometry]
    assert summary["final_loss"] < 0.85 * summary["initial_loss"]
    assert summary["zero_shot_accuracy"] > 2 / len(data.classes)  # well above chance (1/12)
    model, metadata = _load(cache, data, geometry)
    assert metadata["classes"] == data.classes and metadata["pretraining"] == summary


def _perturbed(model, scale: float, seed: int):
    """``model`` with every parameter multiplied by ``1 + scale * N(0, 1)`` (a seeded draw)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(1 + scale * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    return model


@pytest.mark.parametrize("seed,perturbation", [(3, 0.0), (0, 0.02)], ids=["seed3", "seed0-perturbed"])
def test_meru_pretraining_learns_on_every_seed_and_perturbation(pretrained_cache, seed, perturbation):
    """MERU learns whatever the seed or the rounding: on top of the fixture's seed 0, seed 3 and
    seed 0 with its initial weights perturbed by 2% both end well above chance (1/12). Before the
    entailment warm-up and the step size of 1e-3, seed 0 stayed at 9% on some CPUs and seed 3 at
    8% (docs/SPEC.md section 2). (Seed 1, 74.9% when measured, is left out to keep CI's budget:
    each case is 600 steps; at 300 steps seed 3 is still at chance, so the runs cannot be shorter.)"""
    import benchmarks.pretrain as pretrain_module

    _, data, _ = pretrained_cache
    torch.manual_seed(seed)
    model = _perturbed(models.create_model("meru-tiny"), perturbation, seed=99) if perturbation else \
        models.create_model("meru-tiny")
    summary = pretrain_module.pretrain(model, data, steps=600, batch_size=128, lr=1e-3, warmup=50, seed=seed,
                                       progress=False)
    assert summary["zero_shot_accuracy"] > 0.4, summary  # chance is 1/12
    assert summary["final_loss"] < 0.6 * summary["initial_loss"], summary


def test_pretraining_resumes_from_an_interrupted_checkpoint(tmp_path, pretrained_cache, monkeypatch):
    import shutil

    import benchmarks.pretrain as pretrain_module

    _, data, _ = pretrained_cache

    def train(checkpoint):
        torch.manual_seed(0)
        model = models.create_model("clip-tiny")
        pretrain_module.pretrain(model, data, steps=6, batch_size=32, lr=1e-3, warmup=2, seed=0,
                                 checkpoint=checkpoint, checkpoint_every=3, progress=False)
        return model

    straight = train(None)
    # Keep the intermediate checkpoint written at step 3, as if the run had been killed right after it.
    save = pretrain_module.save_checkpoint

    def keep_intermediate(path, model, metadata, **extra):
        save(path, model, metadata, **extra)
        if not extra["train_state"]["finished"]:
            shutil.copy(path, tmp_path / "interrupted.pt")

    monkeypatch.setattr(pretrain_module, "save_checkpoint", keep_intermediate)
    train(tmp_path / "first.pt")
    monkeypatch.undo()
    assert torch.load(tmp_path / "interrupted.pt", weights_only=False)["train_state"]["step"] == 3
    resumed = train(tmp_path / "interrupted.pt")  # the rerun continues from step 3
    state = torch.load(tmp_path / "interrupted.pt", weights_only=False)["train_state"]
    assert state["finished"] and state["step"] == 6 and len(state["history"]) == 6
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name  # bit for bit
    # The finished checkpoint is not reused for another schedule or another model.
    with pytest.raises(models.CheckpointError, match=r"interrupted\.pt.*other settings \(lr 0\.001 -> 0\.002\)"):
        pretrain_module.pretrain(models.create_model("clip-tiny"), data, steps=6, batch_size=32, lr=2e-3, warmup=2,
                                 seed=0, checkpoint=tmp_path / "interrupted.pt", progress=False)
    with pytest.raises(models.CheckpointError, match=r"interrupted\.pt.*'clip-tiny', not of 'meru-tiny'"):
        pretrain_module.pretrain(models.create_model("meru-tiny"), data, steps=6, batch_size=32, lr=1e-3, warmup=2,
                                 seed=0, checkpoint=tmp_path / "interrupted.pt", progress=False)


@pytest.mark.parametrize("geometry,method", [("lorentz", "hac"), ("euclidean", "ac"), ("lorentz", "hac-parent")])
def test_short_unlearning_run_lowers_forget_accuracy(pretrained_cache, geometry, method):
    cache, data, _ = pretrained_cache
    base, _ = _load(cache, data, geometry)
    test = data.dataset.indices("test")
    # Forget the concept the briefly trained fixture model knows best.
    known = [zero_shot_accuracy(base, data, test[data.targets[test] == k], classes=[k]) for k in range(len(data.classes))]
    concept = data.classes[int(np.argmax(known))]
    context = AuditContext.build(data, [concept])
    train = unlearning_data(context, seed=0)
    before = zero_shot_accuracy(base, data, context.forget_test, classes=context.forget_classes)
    model = copy.deepcopy(base)
    result = unlearning.unlearn(model, train, method, steps=25, lr=5e-4, seed=0, progress=False, eval_every=5)
    after = zero_shot_accuracy(model, data, context.forget_test, classes=context.forget_classes)
    assert before > 0.3, f"the fixture model should know {concept} before unlearning"
    assert after < before - 0.2
    assert result.evaluations[0]["step"] == 0 and np.isfinite([h["loss"] for h in result.history]).all()


def test_unlearning_data_uses_the_audit_parents_when_an_inner_concept_is_forgotten(pretrained_cache):
    _, data, _ = pretrained_cache
    context = AuditContext.build(data, ["polygon"])
    train = unlearning_data(context, seed=0)
    assert context.parent_concepts == ["curved", "shape", "symbol"]  # a forgotten triangle is still a shape
    triangle, circle = data.classes.index("triangle"), data.classes.index("circle")
    assert int(train.class_parents[triangle]) == 1 and int(train.class_parents[circle]) == 0
    assert torch.equal(train.parent_prompt_tokens[1], data.concept_prompt_tokens("shape"))


def test_unlearning_is_deterministic_given_the_seed(pretrained_cache):
    cache, data, _ = pretrained_cache
    base, _ = _load(cache, data, "lorentz")
    context = AuditContext.build(data, ["star", "ring"])
    train = unlearning_data(context, seed=0)
    states = []
    for _ in range(2):
        model = copy.deepcopy(base)
        unlearning.unlearn(model, train, "hac", steps=3, lr=1e-4, seed=7, progress=False)
        states.append(model.state_dict())
    for name, value in states[0].items():
        assert torch.equal(value, states[1][name]), name


def test_hac_refuses_clip_and_trainer_validates_arguments(pretrained_cache):
    cache, data, _ = pretrained_cache
    clip, _ = _load(cache, data, "euclidean")
    context = AuditContext.build(data, ["star"])
    train = unlearning_data(context, seed=0)
    with pytest.raises(ValueError, match="needs a hyperbolic"):
        unlearning.unlearn(clip, train, "hac", steps=1, progress=False)
    with pytest.raises(ValueError, match="exactly one of steps= and epochs="):
        unlearning.unlearn(clip, train, "ac", progress=False)
    result = unlearning.unlearn(copy.deepcopy(clip), train, "ac", epochs=0.5, batch_size=64, progress=False)
    assert result.steps == int(np.ceil(0.5 * len(context.forget_train) / 16))


def _run(args, capsys):
    return run_harness(args, capsys)


def test_run_both_geometries_writes_every_output_and_resumes(pretrained_cache, tmp_path, capsys):
    cache, _, _ = pretrained_cache
    out = tmp_path / "out"
    args = ["--geometry", "both", "--forget", "heart", "--steps", "3", "--cache", str(cache), "--out", str(out)]
    code, report, err = _run(args, capsys)
    assert code == 0, err
    records = read_records(out)
    assert [(r["geometry"], r["method"]) for r in records] == [("lorentz", "hac"), ("euclidean", "ac")]
    for record in records:
        assert REQUIRED_KEYS <= set(record["before"]) and REQUIRED_KEYS <= set(record["after"])
        assert record["seconds"] > 0 and record["forget"] == ["heart"]
    assert "hac (lorentz)" in report and (out / "report.md").read_text().strip() == report.strip()
    pngs = {p.name.split("-")[0] for p in out.glob("*.png")}
    assert pngs == {"embeddings", "dist0", "alignment"}
    # A rerun skips finished records and leaves them byte-identical.
    before = (out / "results.jsonl").read_text()
    code, _, err = _run(args, capsys)
    assert code == 0 and "2 already done" in err
    assert (out / "results.jsonl").read_text() == before


def test_run_scaling_and_ablation(pretrained_cache, tmp_path, capsys):
    cache, _, _ = pretrained_cache
    out = tmp_path / "scaling"
    code, _, err = _run(["--geometry", "lorentz", "--scaling", "1,2", "--steps", "2", "--cache", str(cache),
                         "--out", str(out)], capsys)
    assert code == 0, err
    records = read_records(out)
    assert [len(r["forget"]) for r in records] == [1, 2] and (out / "scaling.png").exists()
    assert set(records[0]["forget"]) < set(records[1]["forget"])  # nested draws
    assert [r["settings"]["forget_fraction"] for r in records] == [0.125, 0.25]  # per concept
    out = tmp_path / "ablation"
    code, report, err = _run(["--ablation", "--steps", "1", "--cache", str(cache), "--out", str(out), "--no-figures"],
                             capsys)
    assert code == 0, err
    labels = [record["label"] for record in read_records(out)]
    assert labels[0] == "HAC" and "AC on MERU (λ_E=λ_N=0)" in labels and labels[-1] == "AC on CLIP"
    assert len(labels) == 7


def test_plan_drops_repeated_concepts_methods_and_counts(pretrained_cache):
    _, data, _ = pretrained_cache
    specs = run.plan(run.parse_args(["--method", "hac,hac,ac", "--forget", "heart,heart"]), data)
    assert [(s.method, s.forget) for s in specs] == [("hac", ("heart",)), ("ac", ("heart",))]
    assert [len(s.forget) for s in run.plan(run.parse_args(["--scaling", "1,1,2"]), data)] == [1, 2]


def test_trainer_settings_scale_the_forget_share_per_concept_up_to_the_cap():
    hac, ac, ga = (unlearning.trainer_defaults(name).as_dict() for name in ("hac", "ac", "ga"))
    assert hac == {"lr": 1e-4, "steps": 150, "batch_size": 128, "forget_fraction": 0.125}
    assert ga["lr"] == 1e-5 and unlearning.trainer_defaults("neggrad+").lr == 5e-5
    assert trainer_settings("hac", 1) == {**hac, "eval_every": EVAL_EVERY, "target_forget_accuracy": TARGET_FORGET_ACCURACY,
                                          "target_retain_kept": TARGET_RETAIN_KEPT}
    assert trainer_settings("ac", 3)["forget_fraction"] == pytest.approx(3 * ac["forget_fraction"])
    assert trainer_settings("ga", 3)["lr"] == ga["lr"]
    assert trainer_settings("ac", 12)["forget_fraction"] == MAX_FORGET_FRACTION
    with pytest.raises(ValueError, match="forget_count"):
        trainer_settings("ac", 0)


@pytest.mark.parametrize("args,message", [
    (["--forget", "dodecahedron"], "unknown concept"),
    (["--method", "magic"], "unknown objective"),
    (["--geometry", "euclidean", "--method", "hac"], "needs a hyperbolic geometry (lorentz, poincare), not euclidean"),
    (["--dataset", "/nonexistent/folder"], "/nonexistent/folder"),
    (["--scaling", "1,x"], "--scaling"),
    (["--scaling", "12"], "only 12 leaf concepts"),
    (["--scaling", "0"], "at least 1"),
    (["--steps", "0"], "--steps must be at least 1"),
    (["--retain-kept", "1.5"], "--retain-kept must be a share in [0, 1] (0: no retain condition), got 1.5"),
    (["--ablation", "--method", "ga"], "drop --method"),
])
def test_run_reports_user_errors_in_one_line(args, message, tmp_path, capsys):
    code, _, err = _run([*args, "--out", str(tmp_path / "o"), "--cache", str(tmp_path / "c")], capsys)
    assert code == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert "Traceback" not in err


def test_the_early_stopping_rule_reaches_the_trainer_and_identifies_an_output_folder():
    def rule(argv):
        return run.early_stopping_rule(run.parse_args(argv))

    assert rule([]) == {"forget_accuracy": TARGET_FORGET_ACCURACY, "retain_kept": TARGET_RETAIN_KEPT}
    assert rule(["--retain-kept", "0"]) == {"forget_accuracy": TARGET_FORGET_ACCURACY, "retain_kept": None}
    assert rule(["--no-early-stop"]) is False
    # A folder of the rule that stopped at the forget target alone (``"early_stop": true``) is not
    # resumed; one that ran every step (``false``) is, as before.
    written = {key: None for key in run.CONFIG_FIELDS} | {"early_stop": True}
    assert run.config_differences(written, {**written, "early_stop": rule([])})[0].startswith(
        "the early-stopping rule differs")
    every_step = {**written, "early_stop": False}
    assert run.config_differences(every_step, {**every_step, "early_stop": rule(["--no-early-stop"])}) == []

    def overrides(argv):
        return run.Workbench.trainer_overrides(type("Bench", (), {"args": run.parse_args(argv)})())

    assert overrides([]) == {"target_retain_kept": TARGET_RETAIN_KEPT}
    assert overrides(["--retain-kept", "0"]) == {"target_retain_kept": None}
    assert overrides(["--retain-kept", "0.8", "--no-early-stop"]) == {"target_forget_accuracy": None,
                                                                       "target_retain_kept": 0.8}


def test_run_rejects_wrong_geometry_checkpoint_and_foreign_output_folder(pretrained_cache, tmp_path, capsys):
    cache, data, _ = pretrained_cache
    clip = pretrained_entry("euclidean", data, cache)[0]
    code, _, err = _run(["--geometry", "lorentz", "--checkpoint", str(clip), "--out", str(tmp_path / "a")], capsys)
    assert code == 2 and "holds a euclidean model" in err
    out = tmp_path / "b"
    code, _, err = _run(["--geometry", "lorentz", "--forget", "star", "--steps", "1", "--cache", str(cache),
                         "--out", str(out), "--no-figures"], capsys)
    assert code == 0, err
    code, _, err = _run(["--geometry", "lorentz", "--forget", "cross", "--steps", "1", "--cache", str(cache),
                         "--out", str(out), "--no-figures"], capsys)
    assert code == 2 and "different configuration" in err


def test_list_concepts_prints_each_concept_with_its_parent(capsys):
    code, out, _ = _run(["--list-concepts"], capsys)
    lines = dict(line.split("\t") for line in out.strip().splitlines())
    assert code == 0 and lines["triangle"] == "polygon" and lines["polygon"] == "shape" and lines["shape"] == "-"


def test_forgetting_a_concept_the_model_does_not_know_is_warned_about(capsys):
    spec = RunSpec("lorentz", "hac", ("heart", "ring"), 0)
    run.warn_if_not_known(spec, {"forget_accuracy": 0.3})
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and "heart, ring on only 30.0%" in err and err.count("\n") == 1
    for known in ({"forget_accuracy": 0.5}, {"forget_accuracy": float("nan")}, {}):
        run.warn_if_not_known(spec, known)
        assert capsys.readouterr().err == ""
