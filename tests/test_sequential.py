"""Sequential unlearning (`benchmarks.run --sequential a,b`): one model forgets concepts one request
after another, audited after each, resumable stage by stage.

The runs use a small folder dataset of three leaves, a two-step pretraining (``default_settings``
is patched), one unlearning step and only the zero-shot and membership audits, so each command
takes seconds."""

import shutil

import pytest
import torch

import benchmarks.experiment as experiment
import benchmarks.sequential as sequential
from benchmarks.datasets import load_dataset
from folder_data import (HIERARCHY, QUICK_RUN, only_audit_families, pairs, read_records, run_harness,
                         use_tiny_pretraining, write_dataset)

KEPT_AUDITS = ("zero_shot", "membership")
THREE_LEAVES = {**HIERARCHY, "star": "shape"}


@pytest.fixture(autouse=True)
def quick_models(monkeypatch):
    """Two pretraining steps per cache entry, and only the audits the stage tables read."""
    use_tiny_pretraining(monkeypatch)
    with only_audit_families(KEPT_AUDITS):
        yield


@pytest.fixture
def dataset(tmp_path):
    return write_dataset(tmp_path / "data", pairs(leaves=("circle", "square", "star")), THREE_LEAVES)


@pytest.fixture
def stages_run(monkeypatch):
    """The stages each command runs, as ``(method, stage, start model weights)``."""
    calls = []
    real = sequential.run_stage

    def recording(bench, spec, start_model):
        calls.append((spec.method, spec.stage, {k: v.clone() for k, v in start_model.state_dict().items()}))
        return real(bench, spec, start_model)

    monkeypatch.setattr(sequential, "run_stage", recording)
    return calls


def interrupt_at_stage(monkeypatch, stage: int):
    """Make the command stop (as Ctrl-C would) when it starts ``stage``, wrapping the current
    ``run_stage`` (the recording one of :func:`stages_run`); returns that one, to put back."""
    real = sequential.run_stage

    def interrupted(bench, spec, start_model):
        if spec.stage == stage:
            raise KeyboardInterrupt
        return real(bench, spec, start_model)

    monkeypatch.setattr(sequential, "run_stage", interrupted)
    return real


def _run(args, capsys):
    return run_harness(args, capsys, options=QUICK_RUN)


def _interrupted_before_stage_2(tmp_path, dataset, capsys, monkeypatch) -> tuple:
    """Run the sequence circle, square into ``tmp_path / "out"`` and interrupt it when stage 2 starts:
    ``(out, args, the real run_stage)``."""
    out = tmp_path / "out"
    args = ["--dataset", str(dataset), "--cache", str(tmp_path / "cache"), "--out", str(out), "--steps", "1",
            "--sequential", "circle,square"]
    real = interrupt_at_stage(monkeypatch, 2)
    code, _, err = _run(args, capsys)
    assert code == 130, err
    return out, args, real


def test_two_stages_are_audited_and_a_rerun_continues_after_the_last_finished_stage(tmp_path, dataset, capsys,
                                                                                     monkeypatch, stages_run):
    out, args, real = _interrupted_before_stage_2(tmp_path, dataset, capsys, monkeypatch)
    [first] = read_records(out)
    assert (first["stage"], first["request"], first["forget"], first["sequence"]) == (1, "circle", ["circle"],
                                                                                      ["circle", "square"])
    [checkpoint] = (out / "sequential").glob("*.pt")
    stage_1 = torch.load(checkpoint, weights_only=False)
    assert stage_1["metadata"]["stage"] == 1 and stage_1["metadata"]["record"]["key"] == first["key"]
    written = (out / "results.jsonl").read_text()

    monkeypatch.setattr(sequential, "run_stage", real)
    stages_run.clear()
    code, report, err = _run(args, capsys)
    assert code == 0, err
    assert [(method, stage) for method, stage, _ in stages_run] == [("hac", 2)]  # stage 1 is not redone
    start_weights = stages_run[0][2]
    assert all(torch.equal(start_weights[name], value) for name, value in stage_1["state_dict"].items())
    assert (out / "results.jsonl").read_text().startswith(written)
    records = read_records(out)
    assert [(r["stage"], r["request"], r["forget"]) for r in records] == [(1, "circle", ["circle"]),
                                                                         (2, "square", ["circle", "square"])]
    assert records[1]["label"] == "hac (lorentz), sequential" and records[1]["method"] == "hac"
    for record in records:  # audited: forget accuracy of everything so far, retain on the rest, the request alone
        for phase in ("before", "after"):
            assert {"forget_accuracy", "retain_accuracy", "mia_auc", "request_forget_accuracy"} <= set(record[phase])
    assert records[0]["after"]["request_forget_accuracy"] == records[0]["after"]["forget_accuracy"]
    assert "## Sequential unlearning" in report and "### hac (lorentz), sequential: circle → square" in report
    assert "| 2 | square | circle, square | 1 |" in report

    # A record lost between the stage checkpoint and results.jsonl is restored from the checkpoint.
    (out / "results.jsonl").write_text(written)
    stages_run.clear()
    code, _, err = _run(args, capsys)
    assert code == 0, err
    assert stages_run == [] and read_records(out) == records

    # Another sequence in the same folder is refused.
    code, _, err = _run([*args[:-1], "square,circle"], capsys)
    assert code == 2 and "the planned runs differ" in err and "--sequential" in err


def test_a_lost_stage_checkpoint_redoes_the_stages_before_without_recording_them_again(tmp_path, dataset, capsys,
                                                                                         monkeypatch, stages_run):
    out, args, real = _interrupted_before_stage_2(tmp_path, dataset, capsys, monkeypatch)
    stage_1 = (out / "results.jsonl").read_text()
    shutil.rmtree(out / "sequential")  # stage 1 is recorded, but there is no model to continue from
    monkeypatch.setattr(sequential, "run_stage", real)
    stages_run.clear()
    code, _, err = _run(args, capsys)
    assert code == 0, err
    assert [(method, stage) for method, stage, _ in stages_run] == [("hac", 1), ("hac", 2)]
    assert "stage 1/2: forgetting circle again, to rebuild its model" in err
    assert (out / "results.jsonl").read_text().startswith(stage_1)
    assert [r["stage"] for r in read_records(out)] == [1, 2]


def test_the_oracle_of_each_stage_is_retrained_without_every_concept_so_far(tmp_path, dataset, capsys, monkeypatch):
    calls = []
    real = experiment.pretrain
    monkeypatch.setattr(experiment, "pretrain", lambda model, data, **options: calls.append(options["train_rows"])
                        or real(model, data, **options))
    out = tmp_path / "out"
    code, _, err = _run(["--dataset", str(dataset), "--cache", str(tmp_path / "cache"), "--out", str(out),
                         "--method", "retrain", "--sequential", "circle,square"], capsys)
    assert code == 0, err
    records = read_records(out)
    assert [r["objective"]["trained_without"] for r in records] == [["circle"], ["circle", "square"]]
    concepts = load_dataset(dataset)
    full, without_circle, without_both = calls
    assert full is None
    assert not concepts.concept_mask(["circle"])[without_circle].any() and len(without_circle) == 16
    assert not concepts.concept_mask(["circle", "square"])[without_both].any() and len(without_both) == 8


@pytest.mark.parametrize("extra,message", [
    (["--sequential", "circle"], "a sequence needs at least two concepts"),
    (["--sequential", "circle,square", "--forget", "star"], "drop --forget"),
    (["--sequential", "circle,square", "--scaling", "1"], "drop --scaling"),
    (["--sequential", "circle,square", "--ablation"], "--ablation runs its own methods"),
    (["--sequential", "shape,circle"], "circle (stage 2) lies under shape, forgotten before it"),
    (["--sequential", "circle,hexagon"], "--sequential hexagon: unknown concept"),
    (["--sequential", "circle,square,star"], "leaves no train pairs to retain"),
])
def test_sequences_that_cannot_be_meant_are_refused_in_one_line(tmp_path, dataset, capsys, extra, message):
    code, _, err = _run(["--dataset", str(dataset), "--cache", str(tmp_path / "cache"),
                         "--out", str(tmp_path / "out"), *extra], capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
