"""Data parallelism: ``torchrun`` with 2 CPU processes (gloo) gives the single-process run.

The global batch and the seed fix a run; the number of processes must not change it beyond float
rounding. These tests launch the real commands (``torchrun -m benchmarks.pretrain`` and ``torchrun
-m benchmarks.run``) and compare their outputs with the same commands in one process, with the
tolerance the issue sets (relative 1e-5 on every loss)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from models.distributed import World, check_divisible, shard_range

from test_fault_injection import write_dataset  # four colours, 64 PNG files: images stream from disk

STEPS, BATCH = 20, 32


def _pretrain_args(dataset: Path) -> list:
    return ["-m", "benchmarks.pretrain", "--geometry", "lorentz", "--dataset", str(dataset), "--steps", str(STEPS),
            "--batch-size", str(BATCH), "--no-progress"]


def _environment() -> dict:
    environment = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        environment.pop(name, None)  # a test run under torchrun must not leak its world into ours
    return environment


def _command(arguments: list, processes: int) -> list:
    if processes == 1:
        return [sys.executable, *arguments]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
            *arguments]


def _run(arguments: list, processes: int, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(_command(arguments, processes), cwd=cwd, env=_environment(), capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"{processes} process(es) failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _history(path: Path) -> list:
    return torch.load(path, map_location="cpu", weights_only=False)["train_state"]["history"]


def _assert_close(single: list, distributed: list, *, rtol: float = 1e-5) -> None:
    assert len(single) == len(distributed) > 0
    for step, (a, b) in enumerate(zip(single, distributed)):
        assert math.isclose(a, b, rel_tol=rtol, abs_tol=1e-7), f"step {step}: {a} vs {b}"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A folder dataset of image files: the data loaders' worker processes decode them (one per
    process under torchrun here, two in the single process: the results must not care)."""
    return write_dataset(tmp_path_factory.mktemp("colours") / "colours")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, dataset):
    """The same 20-step pretraining with 1 and with 2 processes: ``{processes: checkpoint}``."""
    root = tmp_path_factory.mktemp("distributed")
    files = {}
    for processes in (1, 2):
        files[processes] = root / f"meru-{processes}.pt"
        _run([*_pretrain_args(dataset), "--out", str(files[processes])], processes, cwd=root)
    return files


def test_two_process_pretraining_is_the_single_process_run(pretrained):
    _assert_close(_history(pretrained[1]), _history(pretrained[2]))
    summaries = [torch.load(pretrained[n], map_location="cpu", weights_only=False)["metadata"]["pretraining"]
                 for n in (1, 2)]
    assert [s["world_size"] for s in summaries] == [1, 2]
    assert summaries[0]["zero_shot_accuracy"] == pytest.approx(summaries[1]["zero_shot_accuracy"], abs=1e-9)
    # (The weights themselves are not compared element by element: Adam divides each gradient by
    # its running RMS, so a rounding difference in a near-zero gradient becomes a difference of up
    # to the step size in that weight; the losses above are what the run computes from them.)


def test_two_process_hac_unlearning_gives_the_same_losses_and_audit(pretrained, dataset, tmp_path):
    records = {}
    for processes in (1, 2):
        out = tmp_path / f"run-{processes}"
        _run(["-m", "benchmarks.run", "--geometry", "lorentz", "--checkpoint", str(pretrained[1]),
              "--dataset", str(dataset), "--forget", "red", "--steps", str(STEPS), "--no-early-stop", "--no-figures", "--no-progress",
              "--out", str(out)], processes, cwd=tmp_path)
        lines = (out / "results.jsonl").read_text().splitlines()
        assert len(lines) == 1
        records[processes] = json.loads(lines[0])
    single, distributed = records[1], records[2]
    assert (single["world_size"], distributed["world_size"]) == (1, 2)
    assert single["settings"] == distributed["settings"]
    assert single["unlearning"]["steps"] == distributed["unlearning"]["steps"] == STEPS
    _assert_close([step["loss"] for step in single["unlearning"]["losses"]],
                  [step["loss"] for step in distributed["unlearning"]["losses"]])
    for phase in ("before", "after"):
        for name, value in single[phase].items():
            other = distributed[phase][name]
            # The linear probe is refitted on the unlearned embeddings; on this 20-step model they are
            # nearly degenerate and the fit amplifies rounding differences of 1e-6 into whole
            # percentage points (on the default pretrained model it moved by 0.5 points: README, Scaling up).
            if isinstance(value, float) and not (phase == "after" and name.startswith("probe_")):
                assert other == pytest.approx(value, rel=1e-4, abs=1e-5), f"{phase} {name}"


def test_a_killed_two_process_pretraining_resumes_to_the_same_run(pretrained, dataset, tmp_path):
    out = tmp_path / "killed.pt"
    arguments = [*_pretrain_args(dataset), "--checkpoint-every", "5", "--out", str(out)]
    command = _command(arguments, 2)
    process = subprocess.Popen(command, cwd=tmp_path, env=_environment(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not out.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # torchrun and both workers, mid-run
    process.wait()
    assert out.exists(), "no checkpoint was written before the kill"
    interrupted_at = torch.load(out, map_location="cpu", weights_only=False)["train_state"]["step"]
    _run(arguments, 2, cwd=tmp_path)
    state = torch.load(out, map_location="cpu", weights_only=False)["train_state"]
    assert state["finished"] and 0 < interrupted_at <= STEPS
    _assert_close(_history(pretrained[1]), state["history"])


@pytest.mark.parametrize("count,size", [(10, 1), (10, 2), (10, 3), (2, 4), (0, 2)])
def test_evaluation_shards_cover_every_row_once_in_order(count, size):
    parts = [shard_range(count, World(rank=rank, size=size)) for rank in range(size)]
    rows = [row for part in parts for row in range(count)[part]]
    assert rows == list(range(count))
    assert max(len(range(count)[p]) for p in parts) - min(len(range(count)[p]) for p in parts) <= 1


def test_a_global_batch_that_does_not_split_evenly_is_refused():
    with pytest.raises(ValueError, match=r"global batch size 30 must be divisible by the number of processes \(4\)"):
        check_divisible(30, 4)
    assert World(rank=1, size=4).shard(list(range(8))) == [2, 3]
