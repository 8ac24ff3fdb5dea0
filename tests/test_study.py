"""The pre-registered study (``python -m benchmarks.study``): its statistics with exact values, the
claim rules on hand-made rows, the grid, and one miniature grid end to end on a small folder
dataset (two-step pretraining, one unlearning step, the audit families the study reads)."""

import json
import math

import numpy as np
import pytest
from scipy import stats

import benchmarks.experiment as experiment
import models.streaming as streaming
from benchmarks import study
from benchmarks.run import draw_concepts
from benchmarks.study import (AC_CLIP, AC_MERU, CONTRADICTED, HAC_MERU, SUPPORTED, UNDECIDED, Estimate, Experiment,
                              Grid)
from folder_data import (HIERARCHY, TINY_STUDY_AUDITS, only_audit_families, pairs, read_records, tiny_study_worker,
                         use_tiny_pretraining, write_dataset)

# The families the study reads, less the linear probe (150 epochs per audit; its column shows n/a).
STUDY_AUDITS = TINY_STUDY_AUDITS


# ------------------------------------------------------------------------------------------- statistics
def test_mean_ci_is_the_student_t_interval():
    estimate = study.mean_ci([0.1, 0.2, 0.3, None, float("nan")])  # not measured: left out
    assert estimate.n == 3 and estimate.mean == pytest.approx(0.2, abs=1e-15)
    assert estimate.half_width == pytest.approx(4.302652729749464 * 0.1 / math.sqrt(3), rel=1e-12)
    assert estimate.half_width == pytest.approx(0.248413771175033, rel=1e-10)
    assert (estimate.low, estimate.high) == pytest.approx((0.2 - 0.248413771175033, 0.2 + 0.248413771175033), rel=1e-10)
    assert study.mean_ci([0.5]) == Estimate(0.5, None, 1)
    assert study.mean_ci([None]) == Estimate(None, None, 0)
    assert study.mean_ci([0.25, 0.25]).half_width == 0.0


def test_sign_test_is_the_two_sided_binomial_test_without_ties():
    assert study.sign_test([0.1, 0.2, -0.1, 0.0, 0.3]) == pytest.approx(0.625)  # 3 up, 1 down, one tie
    assert study.sign_test([0.1, 0.2, -0.1, 0.0, 0.3]) == pytest.approx(stats.binomtest(3, 4, 0.5).pvalue)
    assert study.sign_test([1.0] * 5) == pytest.approx(0.0625)  # five seeds cannot reach 0.05
    assert study.sign_test([1.0] * 6) == pytest.approx(0.03125)
    assert study.sign_test([0.0, 0.0, None]) is None


def test_bootstrap_interval_is_deterministic_and_exact_where_it_can_be():
    values = [0.3, -0.1, 0.2, 0.4, 0.0]
    first, again = study.bootstrap_ci(values), study.bootstrap_ci(values)
    assert first == again  # the same fixed seed, the same interval
    assert first[0] < np.mean(values) < first[1]
    assert study.bootstrap_ci(values, seed=1) != first
    assert study.bootstrap_ci([0.5, 0.5, 0.5]) == (0.5, 0.5)
    assert study.bootstrap_ci([0.5]) is None
    # Two values: the resampled means are 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4.
    assert study.bootstrap_ci([0.0, 1.0]) == (0.0, 1.0)


def test_slope_against_log2_count():
    assert study.slope([(1, 0.0), (2, 1.0), (4, 2.0), (8, 3.0)]) == pytest.approx(1.0)
    assert study.slope([(1, 0.5), (4, 0.1)]) == pytest.approx(-0.2)
    assert math.isnan(study.slope([(4, 0.0), (4, 1.0)]))


# ------------------------------------------------------------------------------------------- hand-made rows
def row(arm, count, seed, *, dataset="d", before=None, **after):
    """A study row (what :func:`benchmarks.study.row_of` makes of a record)."""
    forget = tuple(f"c{i}" for i in range(count))
    return {"dataset": dataset, "arm": arm.name, "count": count, "seed": seed, "forget": forget, "sequential": False,
            "after": after, "before": before or {}}


def test_paired_comparison_matches_dataset_count_seed_and_forget_set():
    rows = [row(HAC_MERU, 1, 0, forget_accuracy=0.0), row(AC_CLIP, 1, 0, forget_accuracy=0.25),
            row(HAC_MERU, 1, 1, forget_accuracy=0.5), row(AC_CLIP, 1, 1, forget_accuracy=0.25),
            row(HAC_MERU, 2, 0, forget_accuracy=0.0), row(AC_CLIP, 2, 0, forget_accuracy=0.5),
            row(HAC_MERU, 2, 1, forget_accuracy=None), row(AC_CLIP, 2, 1, forget_accuracy=0.5),  # not measured
            row(HAC_MERU, 4, 0, forget_accuracy=0.0)]  # no partner
    assert study.paired_differences(rows, HAC_MERU.name, AC_CLIP.name, "forget_accuracy") == \
        [(1, -0.25), (1, 0.25), (2, -0.5)]
    comparison = study.compare(rows, HAC_MERU.name, AC_CLIP.name, "forget_accuracy")
    assert comparison.differences == (-0.25, 0.25, -0.5) and comparison.mean == pytest.approx(-0.5 / 3)
    assert (comparison.n, comparison.above, comparison.below) == (3, 1, 2)
    assert comparison.sign_p == pytest.approx(1.0)
    # The advantage b − a: +0.25, −0.25 at k=1 and +0.5 at k=2: it grows by 0.5 per doubling.
    value, interval, n = study.growth(rows, HAC_MERU.name, AC_CLIP.name, "forget_accuracy")
    assert value == pytest.approx(0.5) and n == 3 and interval is not None


def test_verdict_rules():
    assert study.direction_verdict((-0.3, -0.1), -1, n=6) == SUPPORTED
    assert study.direction_verdict((0.1, 0.3), -1, n=6) == CONTRADICTED
    assert study.direction_verdict((-0.1, 0.3), -1, n=6) == UNDECIDED
    assert study.direction_verdict((0.0, 0.3), +1, n=6) == UNDECIDED  # touching 0 does not exclude it
    assert study.direction_verdict(None, +1, n=6) == UNDECIDED
    assert study.direction_verdict((-0.3, -0.1), -1, n=5) == UNDECIDED  # too few pairs to decide
    at_most = 0.05
    assert study.threshold_verdict([Estimate(0.0, 0.0, 3), Estimate(0.02, 0.03, 3)], at_most, -1) == SUPPORTED
    assert study.threshold_verdict([Estimate(0.0, 0.0, 3), Estimate(0.3, 0.1, 3)], at_most, -1) == CONTRADICTED
    assert study.threshold_verdict([Estimate(0.0, 0.0, 3), Estimate(0.04, 0.03, 3)], at_most, -1) == UNDECIDED
    assert study.threshold_verdict([Estimate(0.0, None, 1)], at_most, -1) == UNDECIDED  # one seed: no interval
    assert study.threshold_verdict([Estimate(0.9, 0.05, 3)], 0.85, +1) == SUPPORTED
    assert study.threshold_verdict([Estimate(0.7, 0.1, 3)], 0.85, +1) == CONTRADICTED
    assert study.combine([SUPPORTED, SUPPORTED]) == SUPPORTED
    assert study.combine([SUPPORTED, UNDECIDED]) == UNDECIDED
    assert study.combine([SUPPORTED, CONTRADICTED, UNDECIDED]) == CONTRADICTED
    assert study.combine([]) == UNDECIDED


def claim_rows():
    """Three seeds at k = 1, 2, 4: HAC forgets everything and keeps 90% of retain; AC on CLIP
    forgets less the more concepts go (10%, 20%, 40%), AC on MERU as well as HAC but one seed;
    HAC's forget images land nearer in the tree, and the probe finds the concept after AC on CLIP."""
    rows = []
    for count, clip_forget in ((1, 0.1), (2, 0.2), (4, 0.4)):
        for seed in range(3):
            jitter = 0.01 * seed
            rows += [
                row(HAC_MERU, count, seed, before={"retain_accuracy": 1.0}, forget_accuracy=0.0,
                    retain_accuracy=0.9 + jitter, retain_kept=0.9 + jitter, forget_tree_error=1.0 + jitter,
                    forget_lca_depth=2.0, parent_accuracy=0.8 + jitter, probe_forget_accuracy=0.5),
                row(AC_CLIP, count, seed, forget_accuracy=clip_forget + jitter, forget_tree_error=3.0,
                    forget_lca_depth=1.0 - jitter, parent_accuracy=0.8 + jitter, probe_forget_accuracy=0.9 + jitter),
                row(AC_MERU, count, seed, forget_accuracy=0.3 if seed == 0 else 0.0),
            ]
    return rows


def test_claims_are_decided_by_the_rules():
    rows = claim_rows()
    v1 = study.claim_v1(rows)
    assert [part.verdict for part in v1] == [SUPPORTED, SUPPORTED, UNDECIDED]
    assert v1[0].evidence == "k=1: 0.0 ± 0.0%; k=2: 0.0 ± 0.0%; k=4: 0.0 ± 0.0%"
    v2 = study.claim_v2(rows)
    assert [part.verdict for part in v2] == [SUPPORTED, UNDECIDED, SUPPORTED]
    assert v2[0].evidence.startswith("mean difference -24.3 pts, 95% CI [")
    assert v2[0].evidence.endswith("(0 above, 9 below, n=9)")
    ours = study.claim_ours(rows)
    # TIE lower and LCA deeper for HAC; parent accuracy equal in every pair (no decision); probe ≥ 50%.
    assert [part.verdict for part in ours] == [SUPPORTED, SUPPORTED, UNDECIDED, SUPPORTED]
    grid = Grid("t", (Experiment("Scaling", "d", study.CORE, (1, 2, 4), (0, 1, 2), "scaling"),))
    verdicts = study.decide_claims(grid, rows)
    assert [(v.claim, v.verdict) for v in verdicts] == [("v1", UNDECIDED), ("v2", UNDECIDED), ("ours", UNDECIDED)]
    assert study.claim_sentence(verdicts[0]).startswith(
        "On d, the data cannot decide claim v1 (near-perfect forgetting with HAC, and an advantage that grows")
    # The same claim made worse for HAC: contradicted.
    worse = [{**r, "after": {**r["after"], "forget_accuracy": 0.5}} if r["arm"] == HAC_MERU.name else r for r in rows]
    assert study.decide_claims(grid, worse)[0].verdict == CONTRADICTED


def test_how_the_runs_ended_and_the_pretrained_hyperbolicity_are_computed_from_the_rows():
    experiment = Experiment("Scaling", "d", study.CORE, (1, 4), (0, 1), "scaling")
    scaled = {"5": 1.0, "25": 1.1, "50": 1.2, "75": 1.3, "95": 1.4}
    before = {"curvature": 0.5, "image_scaled_dist0": scaled, "text_scaled_dist0": {q: v / 2 for q, v in scaled.items()},
              "tangent_rank_agreement": 0.9, "tangent_relative_gap": 0.1, "gromov_delta_relative": 0.4}
    rows = [row(HAC_MERU, 1, 0, before=before, stopped_early=1.0, unlearning_steps=5, forget_accuracy=0.0,
                retain_kept=0.6),
            row(HAC_MERU, 1, 1, before=before, stopped_early=1.0, unlearning_steps=15, forget_accuracy=0.02,
                retain_kept=0.8),
            row(AC_CLIP, 4, 0, stopped_early=0.0, unlearning_steps=150, forget_accuracy=0.2, retain_kept=0.95),
            row(study.RETRAIN_MERU, 4, 0, stopped_early=None, forget_accuracy=0.2)]  # an oracle: not counted
    assert study.stopping_sentence(rows, experiment) == (
        "Of 3 unlearning runs, 2 met both targets and stopped (k = 1; mean 10 steps, forget 1.0%, retain kept "
        "70.0%); 1 never met both and trained every step (k = 4; mean 150 steps, forget 20.0%, retain kept 95.0%). "
        "The targets, checked every 5 steps on training images: forget accuracy ≤ 5% and retain accuracy ≥ 90% of "
        "its value before unlearning (`--retain-kept 0.9`). A run that meets the forget target while its retain "
        "accuracy is still down goes on until it recovers (the first run of this grid, on 2026-12-03, stopped at the "
        "forget target alone).")
    # A yes/no per run is counted, not given an interval; the oracle's is not measured.
    assert study.metric_cells(rows, {"stopped_early": ("stopped early", "share")}) == ["2/3"]
    assert study.metric_cells(rows[3:], {"stopped_early": ("stopped early", "share")}) == ["n/a"]
    table = study.pretrained_hyperbolicity_table(rows, experiment)
    assert "| image √c·d₀ | 1.000 | 1.100 | 1.200 | 1.300 | 1.400 |" in table
    assert "| text √c·d₀ | 0.500 | 0.550 | 0.600 | 0.650 | 0.700 |" in table
    assert table.endswith("Before unlearning (2 before-audits): curvature c 0.500, rank agreement of geodesic and "
                          "tangent-space distances (Spearman) 0.900, their mean relative gap 0.100, 2δ/diam 0.400.")
    # A record's unlearning summary becomes the row's steps and stop; the retrain oracle's is its pretraining.
    cell = study.Cell("d", HAC_MERU, 1, 0)
    record = {"after": {"retain_accuracy": 0.5}, "before": {"retain_accuracy": 1.0}, "forget": ["c0"], "seed": 0,
              "unlearning": {"steps": 5, "stopped_early": True}}
    assert {k: study.row_of(record, cell)["after"][k] for k in ("unlearning_steps", "stopped_early", "retain_kept")} == \
        {"unlearning_steps": 5, "stopped_early": 1.0, "retain_kept": 0.5}
    oracle = study.row_of({**record, "method": "retrain", "unlearning": {"steps": 825, "stopped_early": False}},
                          cell)["after"]
    assert oracle["unlearning_steps"] is None and oracle["stopped_early"] is None


# ------------------------------------------------------------------------------------------- the grid
def test_the_grids_are_data_and_quick_is_a_subset_of_the_default():
    default, quick = study.grid_cells(study.GRIDS["default"]), study.grid_cells(study.GRIDS["quick"])
    assert len(set(default)) == len(default)
    assert set(quick) <= set(default)  # a quick run is never redone by the default grid
    scaling = study.GRIDS["default"].experiments[0]
    assert (scaling.dataset, scaling.counts, scaling.kind) == ("taxonomy", (1, 2, 4, 8, 16), "scaling")
    assert study.HAC_MERU in study.SWEEP and len(study.SWEEP) == 13  # 3 weights x 5 values, the defaults once
    names = [arm.name for arm in study.SWEEP]
    assert len(set(names)) == len(names) and len({arm.folder for arm in study.SWEEP}) == len(names)


def test_plan_lists_the_grid_without_running(capsys):
    assert study.main(["--plan", "--quick"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("Scaling on shapes: 12 cells, 12 new") and "total: 13 cells" in text


def test_sequences_follow_the_nested_draws():
    classes = [f"leaf{i}" for i in range(12)]
    sequence = study.draw_sequence(classes, 4, seed=3)
    for stage in range(1, 5):
        assert set(sequence[:stage]) == set(draw_concepts(classes, stage, seed=3))


# ------------------------------------------------------------------------------------------- end to end
@pytest.fixture
def quick_models(monkeypatch):
    """Two pretraining steps per cache entry, the audit families the study reads, and a record of
    every pretraining."""
    calls = []
    real = experiment.pretrain

    def recording(model, data, **options):
        calls.append(options)
        return real(model, data, **options)

    use_tiny_pretraining(monkeypatch)
    monkeypatch.setattr(streaming, "default_workers", lambda: 0)  # the audits decode the few images in-process
    monkeypatch.setattr(experiment, "pretrain", recording)
    with only_audit_families(STUDY_AUDITS):
        yield calls


def test_a_miniature_study_writes_results_and_resumes(tmp_path, quick_models, capsys):
    leaves = ("circle", "square", "star")
    dataset = str(write_dataset(tmp_path / "data", pairs(leaves=leaves), {**HIERARCHY, "star": "shape"}))
    grid = Grid("mini", (
        Experiment("Scaling on data", dataset, (*study.CORE, study.RETRAIN_MERU), (1, 2), (0, 1), "scaling"),
        Experiment("Sequential unlearning on data", dataset, (HAC_MERU, AC_CLIP), (2,), (0,), "sequential"),
    ), trimmed=("a miniature",))
    options = dict(work=tmp_path / "work", out=tmp_path / "docs" / "RESULTS.md", cache=tmp_path / "cache", device="cpu",
                   steps=1, workers=0)
    outcome = study.run_study(grid, **options)
    # 3 arms x 2 counts x 2 seeds, 4 oracles, 2 sequences of 2 stages.
    assert (outcome["cells"], outcome["runs_made"]) == (18, 20)
    assert len(quick_models) == 2 + 4  # MERU and CLIP, then one oracle per forget set and seed
    text = options["out"].read_text()
    for heading in ("# Results of the pre-registered study (mini grid)", "## The grid", "## Claims",
                    "## Scaling on data", "### Paired comparisons (data)", "### Hyperbolicity before and after (data)",
                    "### How the runs ended (data)", "| pretrained MERU | 5% |",
                    "## Sequential unlearning on data", "## Figures", "## How the numbers are made"):
        assert heading in text
    assert "18 of 18 cells finished" in text and "Trimmed from the grid of issue 13" in text
    assert "**Not the pre-registered settings:** every unlearning method ran 1 step(s)" in text
    assert "| 1 | HAC on MERU | 2 |" in text and "| HAC on MERU − AC on MERU | forget acc ↓ | 4 |" in text
    assert [v.dataset for v in outcome["verdicts"]] == ["data"] * 3
    assert (tmp_path / "docs" / "results-forget-retain.png").stat().st_size > 0
    assert (tmp_path / "docs" / "results-hierarchy.png").stat().st_size > 0
    cell = study.Cell(dataset, HAC_MERU, 2, 1)
    assert (cell.folder(options["work"]) / "results.jsonl").exists()
    assert cell.folder(options["work"]) == tmp_path / "work" / "data" / "k2-seed1" / "hac-lorentz"
    timing = json.loads((tmp_path / "work" / "timing.json").read_text())
    assert timing["commands"] == 1 and timing["seconds"] > 0
    # Again: nothing new runs, nothing is pretrained, the same tables come back.
    quick_models.clear()
    capsys.readouterr()
    again = study.run_study(grid, **options)
    assert again["runs_made"] == 0 and quick_models == []
    assert json.loads((tmp_path / "work" / "timing.json").read_text()) == timing  # no runs: not counted
    assert capsys.readouterr().err.count("already done") == 18
    assert options["out"].read_text().split("## Claims")[1] == text.split("## Claims")[1]
    minutes = f"{timing['seconds'] / 60:.1f} min over 1 command(s) that ran cells"
    assert f"Wall time: {minutes} (this one:" in text
    assert "budget on a 2-core CPU (met): a miniature." in text
    assert study.budget_verdict({"earlier": 3000.0, "this_command": 700.0, "runs_made": 1}, True) == \
        "not met: see the wall time above"
    assert study.budget_verdict({"earlier": 3000.0, "this_command": 700.0, "runs_made": 0}, False) == \
        "not yet known: the grid is not finished"
    assert f"Wall time: {minutes}, pretraining included where a model was not cached; this file was rewritten by a " \
           "command that ran none" in options["out"].read_text()


def test_cells_run_in_worker_processes_as_in_one(tmp_path, quick_models):
    """``--jobs 2``: two spawned workers pretrain the models (one task each) and run the cells, the
    records come back to this process, and they are the records one process writes (both with one
    intra-op thread, so the same kernels run). The workers are set up like this process
    (``worker_setup``): fixtures do not reach them."""
    import torch

    leaves = ("circle", "square", "star")
    dataset = str(write_dataset(tmp_path / "data", pairs(leaves=leaves), {**HIERARCHY, "star": "shape"}))
    grid = Grid("mini", (
        Experiment("Scaling on data", dataset, (*study.CORE, study.RETRAIN_MERU), (1, 2), (0,), "scaling"),
        Experiment("Sequential unlearning on data", dataset, (HAC_MERU,), (2,), (0,), "sequential"),
    ))
    parallel = dict(work=tmp_path / "parallel", out=tmp_path / "parallel.md", cache=tmp_path / "cache-parallel")
    outcome = study.run_study(grid, device="cpu", steps=1, workers=0, jobs=2, worker_setup=tiny_study_worker,
                              **parallel)
    assert (outcome["cells"], outcome["runs_made"]) == (9, 10)
    assert quick_models == []  # every model was trained in a worker
    assert len(list((tmp_path / "cache-parallel").glob("*.pt"))) == 2 + 2  # MERU, CLIP, one oracle per forget set
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        serial = dict(work=tmp_path / "serial", out=tmp_path / "serial.md", cache=tmp_path / "cache-serial")
        assert study.run_study(grid, device="cpu", steps=1, workers=0, **serial)["runs_made"] == 10
    finally:
        torch.set_num_threads(threads)
    for cell in study.grid_cells(grid):
        got, expected = (read_records(cell.folder(options["work"])) for options in (parallel, serial))
        assert [r["key"] for r in got] == [r["key"] for r in expected] and got
        for mine, theirs in zip(got, expected):
            assert mine["forget"] == theirs["forget"]
            for audit in ("before", "after"):
                assert mine[audit].keys() == theirs[audit].keys()
                for name, value in theirs[audit].items():
                    if isinstance(value, float):
                        assert mine[audit][name] == pytest.approx(value, rel=1e-5, abs=1e-6, nan_ok=True), name
    assert parallel["out"].read_text().split("## Claims")[1] == serial["out"].read_text().split("## Claims")[1]


def test_jobs_must_be_positive(tmp_path):
    with pytest.raises(study.InputError, match=r"^--jobs must be at least 1, got 0$"):
        study.run_study(Grid("none", ()), work=tmp_path, out=tmp_path / "R.md", cache=tmp_path, jobs=0)
    assert not (tmp_path / "R.md").exists()


def test_a_grid_the_dataset_cannot_take_is_refused_before_anything_runs(tmp_path, quick_models):
    dataset = str(write_dataset(tmp_path / "data", pairs()))  # two leaves: forgetting both leaves nothing
    grid = Grid("bad", (Experiment("Scaling", dataset, (HAC_MERU,), (1, 2), (0,), "scaling"),))
    with pytest.raises(study.InputError, match=r"^study cell data k=2 seed 0: HAC on MERU: --scaling 2: the dataset "
                                               r"has only 2 leaf concepts"):
        study.run_study(grid, work=tmp_path / "work", out=tmp_path / "RESULTS.md", cache=tmp_path / "cache",
                        device="cpu", workers=0)
    assert quick_models == [] and not (tmp_path / "work").exists() and not (tmp_path / "RESULTS.md").exists()


def test_the_study_runs_its_cells_with_its_own_stopping_rule(tmp_path, monkeypatch):
    """The study names its stopping rule to the harness (the forget target and retain accuracy
    recovered to 90%), so a later change of the harness's default cannot change the grid's cells."""
    from benchmarks import run

    monkeypatch.setattr(run, "TARGET_RETAIN_KEPT", 0.5)  # another harness default

    args = study.Study(work=tmp_path, cache=str(tmp_path / "cache")).harness_args("shapes")
    assert run.early_stopping_rule(args) == {"forget_accuracy": 0.05, "retain_kept": 0.9}
