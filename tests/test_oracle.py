"""The retrain oracle (`benchmarks.run --method retrain`) and the gap to it in ``report.md``.

The runs use a small folder dataset, a two-step pretraining (``default_settings`` is patched) and
only the zero-shot and membership audits (the metrics the gap compares), so each command takes
seconds."""


import numpy as np
import pytest
import torch

import benchmarks.experiment as experiment
from benchmarks.common import EncodedDataset
from benchmarks.datasets import load_dataset
from benchmarks.report import oracle_gaps, oracle_table
from folder_data import (HIERARCHY, QUICK_RUN, TINY_PRETRAINING, only_audit_families, pairs, read_records,
                         run_harness, use_tiny_pretraining, write_dataset)

KEPT_AUDITS = ("zero_shot", "membership")


@pytest.fixture(autouse=True)
def quick_models(monkeypatch):
    """Two pretraining steps per cache entry, and only the audits the oracle gap reads."""
    use_tiny_pretraining(monkeypatch)
    with only_audit_families(KEPT_AUDITS):
        yield


@pytest.fixture
def pretraining_calls(monkeypatch):
    """Every call of ``pretrain`` made by the pretrained-model cache, with its keyword arguments."""
    calls = []
    real = experiment.pretrain

    def recording(model, data, **options):
        calls.append(options)
        return real(model, data, **options)

    monkeypatch.setattr(experiment, "pretrain", recording)
    return calls


def _run(args, capsys):
    return run_harness(args, capsys, options=QUICK_RUN)


def test_the_oracle_is_pretrained_without_the_forget_pairs_and_reused_from_the_cache(tmp_path, capsys,
                                                                                     pretraining_calls):
    dataset = write_dataset(tmp_path / "data", pairs())
    cache = tmp_path / "cache"
    common = ["--dataset", str(dataset), "--cache", str(cache), "--forget", "circle", "--steps", "1"]
    code, report, err = _run([*common, "--method", "hac,retrain", "--out", str(tmp_path / "out")], capsys)
    assert code == 0, err
    hac, oracle = read_records(tmp_path / "out")
    assert (hac["method"], oracle["method"]) == ("hac", "retrain")
    # Two pretrainings: the full model (every train pair), then the oracle on the retain pairs only.
    assert [call["train_rows"] is None for call in pretraining_calls] == [True, False]
    concepts = load_dataset(dataset)
    seen = pretraining_calls[1]["train_rows"]
    _, retain = concepts.split_forget_retain(["circle"], "train")
    assert sorted(seen) == sorted(retain) and len(seen) == 8
    assert not concepts.concept_mask(["circle"])[seen].any()
    # The record: the same audits, before = the full model's, steps = the pretraining steps.
    assert oracle["before"] == hac["before"]
    assert oracle["unlearning"]["steps"] == TINY_PRETRAINING["steps"]
    assert oracle["settings"] == {**TINY_PRETRAINING, "seed": 0}
    assert oracle["objective"]["trained_without"] == ["circle"] and oracle["objective"]["train_pairs"] == 8
    entry = cache / oracle["objective"]["cache_entry"]
    assert torch.load(entry, weights_only=False)["metadata"]["trained_without"] == ["circle"]
    assert "## Gap to the retrain oracle" in report and "| hac (lorentz) | circle | 1 |" in report
    # Another output folder on the same cache: the oracle is read, not trained again.
    pretraining_calls.clear()
    code, _, err = _run([*common, "--method", "retrain", "--out", str(tmp_path / "again")], capsys)
    assert code == 0, err
    assert pretraining_calls == []
    assert read_records(tmp_path / "again")[0]["after"] == oracle["after"]


def test_the_oracle_cache_entry_depends_on_the_forget_set_not_its_order(tmp_path):
    rows, hierarchy = pairs(leaves=("circle", "square", "star")), {**HIERARCHY, "star": "shape"}
    data = EncodedDataset.build(load_dataset(write_dataset(tmp_path / "data", rows, hierarchy)), 20)
    full = experiment.pretrained_entry("lorentz", data, tmp_path)
    one = experiment.pretrained_entry("lorentz", data, tmp_path, forget=("circle",))
    two = experiment.pretrained_entry("lorentz", data, tmp_path, forget=("square", "circle"))
    assert two == experiment.pretrained_entry("lorentz", data, tmp_path, forget=("circle", "square"))
    assert len({full.path, one.path, two.path}) == 3 and len({full.fingerprint, one.fingerprint, two.fingerprint}) == 3
    assert full.train_rows(data) is None and "-retrain-" in one.path.name and "-retrain-" not in full.path.name
    assert np.array_equal(two.train_rows(data), data.dataset.split_forget_retain(["circle", "square"], "train")[1])


def test_retrain_refuses_a_checkpoint_model_in_one_line(tmp_path, capsys):
    import models

    dataset = write_dataset(tmp_path / "data", pairs())
    data = EncodedDataset.build(load_dataset(dataset), 20)
    torch.manual_seed(0)
    model = models.create_model("meru-tiny")
    model.build_vocabulary(torch.cat([data.tokens, *data.prompt_tokens]))
    models.save_checkpoint(tmp_path / "model.pt", model, {"classes": data.classes})
    code, _, err = _run(["--dataset", str(dataset), "--checkpoint", str(tmp_path / "model.pt"), "--method", "retrain",
                         "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")], capsys)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: --method retrain pretrains the default lorentz model from scratch")


def _record(method, forget, seed, after, geometry="lorentz"):
    return {"key": f"{method}-{'-'.join(forget)}-{seed}", "label": f"{method} ({geometry})", "method": method,
            "geometry": geometry, "forget": list(forget), "seed": seed, "after": after}


def after(forget, retain, mia, parent) -> dict:
    """The ``after`` audit of a record, reduced to the four metrics the oracle gap compares."""
    return {"forget_accuracy": forget, "retain_accuracy": retain, "mia_auc": mia, "parent_accuracy": parent}


def test_oracle_gaps_exact_values():
    records = [
        _record("hac", ["a", "b"], 0, after(0.25, 0.75, 0.5, 0.5)),
        _record("retrain", ["b", "a"], 0, after(0.0, 0.875, 0.5, 1.0)),  # the oracle, named in another order
        _record("hac", ["a", "b"], 1, after(0.5, 0.5, 0.625, 0.75)),  # seed 1 has no oracle
        _record("ac", ["a", "b"], 0, after(0.125, 0.875, 0.25, None)),  # parent accuracy not measured
        _record("ac", ["a", "b"], 0, after(0.5, 0.5, 0.5, 0.5), geometry="euclidean"),  # no oracle for CLIP
    ]
    gaps = oracle_gaps(records)
    assert [record["method"] for record, _ in gaps] == ["hac", "ac"]
    assert gaps[0][1] == {"forget_accuracy": 0.25, "retain_accuracy": 0.125, "mia_auc": 0.0, "parent_accuracy": 0.5,
                          "average_gap": 0.21875}
    assert gaps[1][1] == {"forget_accuracy": 0.125, "retain_accuracy": 0.0, "mia_auc": 0.25, "parent_accuracy": None,
                          "average_gap": None}
    table = oracle_table(records).splitlines()
    assert table[2] == "| hac (lorentz) | a, b | 1 | 25.0 | 12.5 | 0.0 | 50.0 | 21.9 |"
    assert table[3] == "| ac (lorentz) | a, b | 1 | 12.5 | 0.0 | 25.0 | n/a | n/a |"
    assert oracle_table(records[:1]) is None


@pytest.mark.parametrize("rows", ["none", "test split"])
def test_pretraining_refuses_train_rows_outside_the_train_split(tmp_path, rows):
    import models
    from benchmarks.pretrain import pretrain

    data = EncodedDataset.build(load_dataset(write_dataset(tmp_path / "data", pairs())), 20)
    chosen = np.array([], dtype=np.int64) if rows == "none" else data.dataset.indices("test")
    with pytest.raises(ValueError, match=r"train_rows must be a non-empty subset of the train split of 'data', "
                                         rf"got {len(chosen)} row\(s\)"):
        pretrain(models.create_model("clip-tiny"), data, steps=1, batch_size=4, lr=1e-3, warmup=1, progress=False,
                 train_rows=chosen)
