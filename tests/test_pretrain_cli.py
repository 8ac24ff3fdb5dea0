"""`python -m benchmarks.pretrain` as a user meets it: one-line errors with exit status 2, the
checkpoint flags its help advertises, and a lock per checkpoint."""

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import pretrain
from benchmarks.locks import hold_lock
from folder_data import pairs, write_dataset

REPO = Path(__file__).resolve().parents[1]
QUICK = ["--steps", "3", "--batch-size", "8", "--no-progress"]


def _vocabulary_overflow(tmp_path):
    from open_clip.tokenizer import SimpleTokenizer

    # Whole words of the BPE vocabulary, twelve new ones per caption: about 1500 distinct tokens.
    words = iter([w[:-4] for w in list(SimpleTokenizer().encoder)[2000:] if w.endswith("</w>")
                  and w[:-4].isascii() and w[:-4].isalpha()])
    rows = [(" ".join(itertools.islice(words, 12)) + ".", leaf, split) for _, leaf, split in pairs(train=40, test=25)]
    return ["--dataset", str(write_dataset(tmp_path / "wordy", rows))]


def _dataset(rows, *extra):
    return lambda tmp_path: ["--dataset", str(write_dataset(tmp_path / "data", rows)), *extra]


def _bad_image(tmp_path):
    root = write_dataset(tmp_path / "data", pairs())
    (root / "imgs" / "5.png").write_bytes(b"not a png")
    return ["--dataset", str(root)]


def _not_utf8(tmp_path):
    root = write_dataset(tmp_path / "data", pairs())
    (root / "pairs.jsonl").write_bytes((root / "pairs.jsonl").read_bytes().replace(b"small", b"sm\xe9ll", 1))
    return ["--dataset", str(root)]


def _out_under_a_file(tmp_path):
    (tmp_path / "plain").write_text("a file")
    return ["--dataset", str(write_dataset(tmp_path / "data", pairs())), "--out", str(tmp_path / "plain" / "m.pt")]


@pytest.mark.parametrize("setup,message", [
    (_dataset(pairs(), "--steps", "0"), "steps must be at least 1, got 0"),
    (_dataset(pairs(), "--batch-size", "0"), "batch size must be at least 1"),
    (_dataset(pairs(), "--lr", "-1"), "learning rate must be a positive number"),
    (_dataset(pairs(), "--entailment-warmup", "-5"), "entailment warm-up must be at least 0"),
    (_dataset(pairs(), "--checkpoint-every", "0"), "--checkpoint-every must be at least 1"),
    (_dataset(pairs(), "--checkpoint-minutes", "0"), "--checkpoint-minutes must be positive"),
    (_dataset(pairs(), "--model", "meru-huge"), "unknown model 'meru-huge': expected one of"),
    (_dataset(pairs(), "--model", "clip-tiny"), "--model clip-tiny is euclidean, but --geometry is lorentz"),
    (_dataset([r for r in pairs() if r[2] == "test"]), "has no train pairs"),
    (_dataset([r for r in pairs() if r[2] == "train"]), "has no test pairs"),
    (_bad_image, "5.png"),
    (_not_utf8, "is not valid UTF-8"),
    (_vocabulary_overflow, "distinct tokens do not fit"),
    (_out_under_a_file, "plain"),
    (lambda tmp_path: ["--dataset", str(tmp_path / "absent")], "absent"),
    (lambda tmp_path: ["--out", str(tmp_path)], "is a folder"),
], ids=["steps-0", "batch-0", "negative-lr", "negative-entailment-warmup", "checkpoint-every-0",
        "checkpoint-minutes-0", "unknown-model", "model-of-other-geometry", "only-test-split", "only-train-split",
        "bad-image", "not-utf8", "vocabulary", "out-under-a-file", "missing-dataset", "out-is-a-folder"])
def test_user_errors_are_one_line_with_exit_status_2(setup, message, tmp_path, capsys):
    args = setup(tmp_path)
    out = [] if "--out" in args else ["--out", str(tmp_path / "model.pt")]
    code = pretrain.main([*QUICK, *args, *out])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err, err


def test_help_lists_exactly_the_flags_the_parser_takes():
    text = subprocess.run([sys.executable, "-m", "benchmarks.pretrain", "--help"], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout
    for flag in ("--checkpoint-every", "--checkpoint-minutes", "--entailment-warmup", "--steps", "--batch-size"):
        assert flag in text
    args = pretrain.parse_args(["--checkpoint-every", "7", "--checkpoint-minutes", "0.5"])
    assert (args.checkpoint_every, args.checkpoint_minutes) == (7, 0.5)


def test_checkpoints_follow_the_step_interval_and_the_time_interval(tmp_path, monkeypatch):
    """Every ``checkpoint_every`` steps, and after ``checkpoint_seconds`` of training whatever the step."""
    from benchmarks.common import EncodedDataset
    from benchmarks.datasets import load_dataset
    import models

    data = EncodedDataset.build(load_dataset(write_dataset(tmp_path / "data", pairs())), 20)
    saved = []
    real_save = pretrain.save_checkpoint
    monkeypatch.setattr(pretrain, "save_checkpoint", lambda path, model, meta, **extra: (
        saved.append(extra["train_state"]["step"]), real_save(path, model, meta, **extra)))

    def train(**schedule):
        saved.clear()
        torch.manual_seed(0)
        pretrain.pretrain(models.create_model("clip-tiny"), data, steps=6, batch_size=8, lr=1e-3, warmup=1,
                          checkpoint=tmp_path / f"{len(os.listdir(tmp_path))}.pt", progress=False, **schedule)
        return list(saved)

    assert train(checkpoint_every=2) == [2, 4, 6]  # 6 is the finished checkpoint
    assert train(checkpoint_every=100, checkpoint_seconds=0.0) == [1, 2, 3, 4, 5, 6]
    assert train(checkpoint_every=100) == [6]


def test_a_second_command_on_the_same_checkpoint_waits_and_reuses_it(tmp_path):
    """A command whose checkpoint is locked by another process says who holds it and waits; once it
    is free it trains; an identical command afterwards finds the finished checkpoint and returns it
    without training again. This test holds the lock itself, so no timing decides the outcome."""
    data = write_dataset(tmp_path / "data", pairs())
    command = [sys.executable, "-m", "benchmarks.pretrain", "--geometry", "euclidean", "--dataset", str(data),
               "--out", str(tmp_path / "m.pt"), "--steps", "30", "--batch-size", "8", "--no-progress"]
    with hold_lock(tmp_path / "m.pt.lock", "the test"):
        waiting = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Read until the waiting notice; end of stream (a crash) also ends the loop, so this cannot hang.
        notice = next((line for line in waiting.stderr if "waiting for checkpoint" in line), "")
        assert f"pid {os.getpid()}" in notice, notice
        assert not (tmp_path / "m.pt").exists()  # still waiting: nothing trained under our lock
    first_out, first_err = waiting.communicate()
    assert waiting.returncode == 0, first_err
    second = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert second.returncode == 0 and "waiting" not in second.stderr, second.stderr
    state = torch.load(tmp_path / "m.pt", weights_only=False)["train_state"]
    assert state["finished"] and len(state["history"]) == 30  # trained once: no second history
    assert first_out.splitlines()[-1] == second.stdout.splitlines()[-1]  # the same summary
