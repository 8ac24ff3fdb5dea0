"""Reliability of the `benchmarks.run` harness: results keyed by input content, one-line errors for
every input a user can fix, strict JSON, self-repair of its files, locks, file permissions.

The runs here use small folder datasets and a two-step pretraining (``default_settings`` is
patched), so each command takes seconds."""

import errno
import functools
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

import models
from benchmarks import run
from benchmarks.common import EncodedDataset, write_json
from benchmarks.datasets import load_dataset
from benchmarks.experiment import ResultsFile
from benchmarks.report import write_report
from models.checkpoint import atomic_write
from folder_data import run_harness, use_tiny_pretraining

REPO = Path(__file__).resolve().parents[1]
HIERARCHY = {"circle": "shape", "square": "shape", "shape": None}
COLOURS = {"circle": (200, 30, 30), "square": (30, 30, 200)}


@pytest.fixture(autouse=True)
def quick_models(monkeypatch):
    """Pretraining a cache entry takes two steps instead of 1600, and the two training audits one
    step each: these tests are about the harness around them."""
    from benchmarks.audits import AUDIT_FAMILIES, audit_probe, audit_relearn

    use_tiny_pretraining(monkeypatch)
    monkeypatch.setitem(AUDIT_FAMILIES, "probe", functools.partial(audit_probe, epochs=1))
    monkeypatch.setitem(AUDIT_FAMILIES, "relearn", functools.partial(audit_relearn, steps=1))


def pairs(train: int = 8, test: int = 4, leaves=("circle", "square")) -> list:
    """``(caption, leaf, split)`` of a small dataset: ``train`` and ``test`` pairs per leaf."""
    return [(f"a {size} {leaf}.", leaf, split)
            for leaf in leaves
            for split, count in (("train", train), ("test", test))
            for size in itertools.islice(itertools.cycle(["small", "large", "red", "blue"]), count)]


def write_dataset(root: Path, rows: list, hierarchy: dict = HIERARCHY) -> Path:
    """A dataset in the folder format at ``root``, one small PNG per pair."""
    (root / "imgs").mkdir(parents=True)
    with open(root / "pairs.jsonl", "w") as file:
        for number, (caption, leaf, split) in enumerate(rows):
            Image.new("RGB", (8, 8), COLOURS.get(leaf, (0, 160, 0))).save(root / "imgs" / f"{number}.png")
            file.write(json.dumps({"image": f"imgs/{number}.png", "caption": caption, "concepts": [leaf],
                                   "split": split}) + "\n")
    (root / "hierarchy.json").write_text(json.dumps(hierarchy))
    return root


def untrained_checkpoint(path: Path, dataset_path: Path, seed: int) -> Path:
    """A MERU checkpoint (untrained, seeded weights) whose metadata names ``dataset_path``'s classes."""
    data = EncodedDataset.build(load_dataset(dataset_path), 20)
    torch.manual_seed(seed)
    model = models.create_model("meru-tiny")
    model.build_vocabulary(torch.cat([data.tokens, *data.prompt_tokens]))
    models.save_checkpoint(path, model, {"classes": data.classes})
    return path


def _run(args, capsys):
    return run_harness(args, capsys)


def _strict_json(text: str):
    """Parse ``text`` as standard JSON: NaN and Infinity are not JSON."""
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")
    return json.loads(text, parse_constant=refuse)


# ------------------------------------------------------------------------------------ input identity
def test_dataset_fingerprint_follows_content_not_name(tmp_path):
    from benchmarks.common import dataset_fingerprint

    first = write_dataset(tmp_path / "a" / "gsmall", pairs())
    same = dataset_fingerprint(load_dataset(first))
    assert dataset_fingerprint(load_dataset(first)) == same
    other = write_dataset(tmp_path / "b" / "gsmall", [("another caption.", leaf, split) for _, leaf, split in pairs()])
    assert dataset_fingerprint(load_dataset(other)) != same
    os.utime(first / "imgs" / "0.png", ns=(0, 0))  # an image file replaced in place
    assert dataset_fingerprint(load_dataset(first)) != same
    shapes = dataset_fingerprint(load_dataset("shapes"))
    assert shapes == dataset_fingerprint(load_dataset("shapes")) != dataset_fingerprint(load_dataset("shapes", seed=1))


def test_same_named_datasets_get_their_own_cache_entry_and_output_folder(tmp_path, capsys):
    from benchmarks.common import dataset_fingerprint

    first = write_dataset(tmp_path / "a" / "gsmall", pairs())
    second = write_dataset(tmp_path / "b" / "gsmall", pairs(train=6, test=3))
    cache, out = tmp_path / "cache", tmp_path / "out"
    common = ["--cache", str(cache), "--steps", "1", "--no-figures"]
    code, _, err = _run(["--dataset", str(first), "--out", str(out), *common], capsys)
    assert code == 0, err
    code, _, err = _run(["--dataset", str(second), "--out", str(out), *common], capsys)
    assert code == 2 and "Traceback" not in err
    assert err.startswith("error: ") and "dataset content differs (fingerprint " in err and err.count("\n") == 1
    code, _, err = _run(["--dataset", str(second), "--out", str(tmp_path / "out-b"), *common], capsys)
    assert code == 0, err
    entries = sorted(cache.glob("meru-tiny-gsmall-*-seed0.pt"))
    assert len(entries) == 2
    recorded = {torch.load(e, weights_only=False)["metadata"]["dataset_fingerprint"] for e in entries}
    assert recorded == {dataset_fingerprint(load_dataset(p)) for p in (first, second)}


def test_a_checkpoint_file_replaced_in_place_is_another_input(tmp_path, capsys):
    dataset = write_dataset(tmp_path / "data", pairs())
    checkpoint = untrained_checkpoint(tmp_path / "model.pt", dataset, seed=0)
    args = ["--dataset", str(dataset), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"),
            "--steps", "1", "--no-figures"]
    code, _, err = _run(args, capsys)
    assert code == 0, err
    untrained_checkpoint(checkpoint, dataset, seed=1)  # same path, other weights
    code, _, err = _run(args, capsys)
    assert code == 2 and "the models differ" in err and err.count("\n") == 1


# ------------------------------------------------------------------------------- one-line errors
def _vocabulary_overflow(tmp_path):
    from open_clip.tokenizer import SimpleTokenizer

    # Whole words of the BPE vocabulary, twelve new ones per caption: about 1500 distinct tokens.
    words = iter([w[:-4] for w in list(SimpleTokenizer().encoder)[2000:] if w.endswith("</w>")
                  and w[:-4].isascii() and w[:-4].isalpha()])
    rows = [(" ".join(itertools.islice(words, 12)) + ".", leaf, split) for _, leaf, split in pairs(train=40, test=25)]
    return ["--dataset", str(write_dataset(tmp_path / "wordy", rows))]


def _damaged_config_of_other_runs(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "config.json").write_text("{")
    (out / "results.jsonl").write_text(json.dumps({"key": "0123456789abcdef", "label": "x"}) + "\n")
    return ["--dataset", str(write_dataset(tmp_path / "data", pairs()))]


def _damaged_results_line(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "results.jsonl").write_text('{"key": "a", "label": \n' + json.dumps({"key": "b"}) + "\n")
    return ["--dataset", str(write_dataset(tmp_path / "data", pairs()))]


def _undecodable_image(tmp_path):
    root = write_dataset(tmp_path / "data", pairs())
    (root / "imgs" / "3.png").write_bytes(b"not a png")
    return ["--dataset", str(root)]


def _with_dataset(rows, *extra, hierarchy=HIERARCHY):
    return lambda tmp_path: ["--dataset", str(write_dataset(tmp_path / "data", rows, hierarchy)), *extra]


def _file_at(name, text, option):
    def setup(tmp_path):
        (tmp_path / name).write_text(text)
        return ["--dataset", str(write_dataset(tmp_path / "data", pairs())), option, str(tmp_path / name)]
    return setup


STAR = {**HIERARCHY, "star": "shape"}


@pytest.mark.parametrize("setup,message", [
    pytest.param(_file_at("taken", "a file", "--out"), "is a file; expected a folder", id="out-is-a-file"),
    pytest.param(_file_at("taken", "a file", "--cache"), "is a file; expected a folder", id="cache-is-a-file"),
    pytest.param(_file_at("notes.txt", "hello\n", "--checkpoint"), "not a checkpoint", id="text-checkpoint"),
    pytest.param(lambda tmp_path: ["--checkpoint", str(tmp_path), "--dataset", "shapes"], "is a folder",
                 id="folder-checkpoint"),
    pytest.param(_vocabulary_overflow, "does not fit the default meru-tiny model", id="vocabulary"),
    pytest.param(_with_dataset(pairs(), "--forget", ""), "--forget is empty", id="empty-forget"),
    pytest.param(_with_dataset(pairs(), "--method", ""), "--method is empty", id="empty-method"),
    pytest.param(_with_dataset(pairs(), "--forget", "circle,,square"), "empty item", id="empty-list-item"),
    pytest.param(_with_dataset(pairs(), "--lock-timeout", "-1"), "--lock-timeout must be", id="negative-lock-timeout"),
    pytest.param(_with_dataset(pairs(), "--scaling", "1", "--forget", "circle"), "drop --forget",
                 id="scaling-with-forget"),
    pytest.param(_with_dataset(pairs() + [("a green star.", "star", "test")], "--forget", "star", hierarchy=STAR),
                 "concept 'star' has no train pairs", id="no-train-pairs"),
    pytest.param(_with_dataset(pairs() + [("a green star.", "star", "train")], "--forget", "star", hierarchy=STAR),
                 "concept 'star' has no test pairs", id="no-test-pairs"),
    pytest.param(_with_dataset([r for r in pairs() if r[2] == "test"]), "has no train pairs", id="only-test-split"),
    pytest.param(_with_dataset([r for r in pairs() if r[2] == "train"]), "has no test pairs", id="only-train-split"),
    pytest.param(_with_dataset(pairs(leaves=("circle",))), "has one leaf class (circle)", id="one-leaf-class"),
    pytest.param(_damaged_config_of_other_runs, "config.json is damaged and", id="damaged-config"),
    pytest.param(_damaged_results_line, "results.jsonl line 1: not a JSON record", id="damaged-results-line"),
    pytest.param(_undecodable_image, "3.png", id="undecodable-image"),
])
def test_user_errors_are_one_line_with_exit_status_2(setup, message, tmp_path, capsys):
    args = setup(tmp_path)
    out = [] if "--out" in args else ["--out", str(tmp_path / "o")]
    cache = [] if "--cache" in args else ["--cache", str(tmp_path / "cache")]
    code, _, err = _run([*args, *out, *cache, "--steps", "1", "--no-figures"], capsys)
    assert code == 2, err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert "Traceback" not in err


def test_an_out_folder_without_write_permission_is_one_line(tmp_path, capsys, monkeypatch):
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    (read_only / "out").mkdir()
    read_only.chmod(0o555)
    (read_only / "out").chmod(0o555)
    real_mkstemp = tempfile.mkstemp

    def refuse_in_read_only(*args, dir=None, **kwargs):
        # What the kernel does for a user without write permission (root would be let through).
        if dir is not None and Path(dir).is_relative_to(read_only):
            raise PermissionError(errno.EACCES, "Permission denied", os.path.join(dir, "file.tmp"))
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", refuse_in_read_only)
    try:
        dataset = write_dataset(tmp_path / "data", pairs())
        code, _, err = _run(["--dataset", str(dataset), "--out", str(read_only / "out"),
                             "--cache", str(tmp_path / "cache"), "--no-figures"], capsys)
    finally:
        read_only.chmod(0o755)
        (read_only / "out").chmod(0o755)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert str(read_only / "out") in err and "Permission denied" in err


# ------------------------------------------------------------------------------------ strict JSON
def test_non_finite_numbers_are_written_as_null_with_a_reason_and_reported_as_na(tmp_path):
    record = {"key": "k", "label": "hac (lorentz)", "forget": ["circle"], "dataset": "d",
              "before": {"forget_accuracy": float("nan"), "retain_accuracy": 0.5},
              "after": {"forget_accuracy": float("inf"), "retain_accuracy": 0.25},
              "unlearning": {"steps": 1, "seconds": 0.1, "samples_per_second": 10.0, "stopped_early": False}}
    results = ResultsFile.open(tmp_path / "results.jsonl")
    results.append(record)
    written = _strict_json((tmp_path / "results.jsonl").read_text())
    assert written["before"]["forget_accuracy"] is None and written["after"]["forget_accuracy"] is None
    assert "not a finite number" in written["before"]["forget_accuracy_reason"]
    write_json(tmp_path / "config.json", {"value": float("nan")})
    assert _strict_json((tmp_path / "config.json").read_text())["value"] is None
    report = write_report(tmp_path, [written], figures=False)
    row = next(line for line in report.splitlines() if line.startswith("| hac (lorentz)"))
    assert row.split(" | ")[3] == "n/a" and "nan" not in report.lower()


# ------------------------------------------------------------------------------------ self-repair
def test_a_rerun_repairs_its_files(tmp_path, capsys):
    dataset = write_dataset(tmp_path / "data", pairs())
    out = tmp_path / "out"
    args = ["--dataset", str(dataset), "--out", str(out), "--cache", str(tmp_path / "cache"), "--steps", "1"]
    code, _, err = _run(args, capsys)
    assert code == 0, err
    records = (out / "results.jsonl").read_text()
    _strict_json(records)
    figures = sorted(p.name for p in out.glob("*.png"))
    assert len(figures) == 3
    # Deleted figures and report, an emptied config: rebuilt, the record kept as it was.
    for name in [*figures, "report.md"]:
        (out / name).unlink()
    (out / "config.json").write_text("")
    code, report, err = _run(args, capsys)
    assert code == 0, err
    assert "config.json is damaged: rebuilt" in err and "1 already done" in err
    assert sorted(p.name for p in out.glob("*.png")) == figures
    assert (out / "report.md").read_text().strip() == report.strip()
    assert (out / "results.jsonl").read_text() == records
    assert _strict_json((out / "config.json").read_text())["dataset"] == "data"
    # A last record cut short by a crash: dropped with a warning, its run redone.
    (out / "results.jsonl").write_text(records[: len(records) // 2])
    code, _, err = _run(args, capsys)
    assert code == 0, err
    assert "line 1 is cut short" in err and "0 already done" in err
    assert len((out / "results.jsonl").read_text().splitlines()) == 1


def test_a_lost_config_adopts_only_runs_made_with_the_same_settings(tmp_path, capsys):
    dataset = write_dataset(tmp_path / "data", pairs())
    out = tmp_path / "out"
    args = ["--dataset", str(dataset), "--out", str(out), "--cache", str(tmp_path / "cache"), "--no-figures"]
    code, _, err = _run([*args, "--steps", "1"], capsys)
    assert code == 0, err
    stated = json.loads((out / "results.jsonl").read_text())["inputs"]
    assert stated["steps"] == 1 and stated["early_stop"] == {"forget_accuracy": 0.05, "retain_kept": 0.9}
    records = (out / "results.jsonl").read_text()
    (out / "config.json").unlink()
    for other in (["--steps", "2"], ["--steps", "1", "--no-early-stop"], ["--steps", "1", "--retain-kept", "0"]):
        code, _, err = _run([*args, *other], capsys)
        assert code == 2 and "made from other inputs or settings" in err, (other, err)
        assert (out / "results.jsonl").read_text() == records
    code, _, err = _run([*args, "--steps", "1"], capsys)  # the command that made it: config.json rebuilt
    assert code == 0 and "config.json is missing: rebuilt" in err and "1 already done" in err, err


# ------------------------------------------------------------------------------------------ locks
HOLD_LOCK = """
import sys, time
from benchmarks.locks import hold_lock
with hold_lock(sys.argv[1], "the test lock"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _hold_lock_elsewhere(path: Path, seconds: float) -> subprocess.Popen:
    """Another process holding the lock ``path`` for ``seconds`` (returned once it holds it)."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path), str(seconds)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_command_on_the_same_out_names_the_holder(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    holder = _hold_lock_elsewhere(out / run.OUT_LOCK, 60)
    try:
        code, _, err = _run(["--dataset", str(write_dataset(tmp_path / "data", pairs())), "--out", str(out),
                             "--cache", str(tmp_path / "cache"), "--lock-timeout", "0.5"], capsys)
    finally:
        holder.kill()
        holder.wait()
    waiting, error = err.splitlines()  # a note while it waits, then the error
    assert code == 2 and f"waiting for --out {out} (at most 0.5 s): in use by pid {holder.pid} on " in waiting
    assert error.startswith(f"error: --out {out} is still in use by pid {holder.pid} on ")


def test_a_waiting_command_says_whom_it_waits_for_and_then_proceeds(tmp_path):
    from benchmarks.locks import hold_lock

    holder = _hold_lock_elsewhere(tmp_path / "lock", 1.5)
    messages = []
    began = time.monotonic()
    with hold_lock(tmp_path / "lock", "the test lock", notify=messages.append):
        waited = time.monotonic() - began
    holder.wait()
    assert waited > 0.5 and len(messages) == 1
    assert messages[0].startswith("waiting for the test lock: in use by pid ") and str(holder.pid) in messages[0]


PRETRAIN_ENTRY = """
import sys, time
from pathlib import Path
import benchmarks.experiment as experiment
from benchmarks.common import EncodedDataset
from benchmarks.datasets import load_dataset

dataset, cache, ready, other = sys.argv[1:5]
experiment.default_settings = lambda name: {"steps": 2, "batch_size": 8, "lr": 1e-3, "warmup": 1}
pretrain = experiment.pretrain

def slow_pretrain(*args, **kwargs):
    print("pretraining", flush=True)
    time.sleep(2)  # the other process arrives while this one trains
    return pretrain(*args, **kwargs)

experiment.pretrain = slow_pretrain
data = EncodedDataset.build(load_dataset(dataset), 20)
Path(ready).touch()
while not Path(other).exists():  # start together
    time.sleep(0.05)
experiment.pretrained_model("lorentz", data, cache_dir=cache, device="cpu", progress=False)
print("done", flush=True)
"""


def test_two_commands_pretrain_a_cache_entry_once(tmp_path):
    dataset = write_dataset(tmp_path / "data", pairs())
    ready = [tmp_path / "ready-0", tmp_path / "ready-1"]
    processes = [subprocess.Popen([sys.executable, "-c", PRETRAIN_ENTRY, str(dataset), str(tmp_path / "cache"),
                                   str(ready[i]), str(ready[1 - i])], cwd=REPO, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=300) for p in processes]
    assert all(p.returncode == 0 for p in processes), outputs
    assert sum(out.count("pretraining") for out, _ in outputs) == 1
    assert sum("waiting for the pretrained-model cache entry" in err for _, err in outputs) == 1
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1


# ------------------------------------------------------------------------------------ permissions
@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_atomic_writes_respect_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        atomic_write(tmp_path / "file", lambda file: file.write(b"x"))
    finally:
        os.umask(previous)
    assert (tmp_path / "file").stat().st_mode & 0o777 == mode
