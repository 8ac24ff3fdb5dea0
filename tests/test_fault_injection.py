"""Fault injection: `benchmarks.pretrain` and `benchmarks.run` killed with SIGKILL at random points.

Each command is killed several times — at a point drawn from a seeded RNG and counted in the
command's own progress output (pretraining steps, harness lines), so the points do not depend on
the machine's speed — and rerun until it finishes. Its outputs must equal those of one uninterrupted
run: the checkpoint's weights bit for bit, and every record of ``results.jsonl`` except wall-clock
fields. Everything runs on a tiny generated folder dataset, in subprocesses with one thread each (the
same in every run, so the arithmetic is the same), two at a time."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import models
from benchmarks.common import EncodedDataset
from benchmarks.datasets import load_dataset
from benchmarks.experiment import pretrained_entry

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
STEPS = 20  # pretraining steps; a checkpoint every 5
TIMING_FIELDS = {"seconds", "samples_per_second", "peak_memory_mb", "data_wait_seconds_per_step"}  # wall-clock: differ between runs


def write_dataset(root: Path) -> Path:
    """Four colour leaves under two parents, 12 train and 4 test images each (folder format)."""
    colours = {"red": (220, 40, 40), "yellow": (230, 220, 40), "green": (40, 200, 60), "blue": (40, 60, 220)}
    parents = {"red": "warm", "yellow": "warm", "green": "cool", "blue": "cool"}
    rng = np.random.default_rng(0)
    (root / "imgs").mkdir(parents=True)
    lines = []
    for name, rgb in colours.items():
        for i in range(16):
            pixels = np.clip(np.array(rgb) + rng.normal(0, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"imgs/{name}{i}.png")
            lines.append(json.dumps({"image": f"imgs/{name}{i}.png", "caption": f"a {name} square",
                                     "concepts": [name], "split": "train" if i < 12 else "test"}))
    (root / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    (root / "hierarchy.json").write_text(json.dumps({**parents, "warm": "colour", "cool": "colour", "colour": None}))
    return root


def execute(args: list, trigger=None, delay: float = 0.0) -> tuple:
    """Run ``python -m <args>``; with ``trigger``, SIGKILL it ``delay`` seconds after the first
    stderr segment (a line, or a progress-bar redraw) for which ``trigger(segment)`` is true.
    Returns ``(return code, stderr segments)``; the code is -9 when the kill came before the end."""
    seen, pending = [], b""
    with subprocess.Popen([sys.executable, "-m", *args], cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE) as process:
        for chunk in iter(lambda: os.read(process.stderr.fileno(), 65536), b""):
            *parts, pending = re.split(rb"[\r\n]", pending + chunk)
            segments = [part.decode(errors="replace") for part in parts if part.strip()]
            seen += segments
            if trigger is not None and any(trigger(s) for s in segments):
                time.sleep(delay)
                process.send_signal(signal.SIGKILL)
                break
        process.stderr.read()
    return process.returncode, seen


def interrupted(args: list, kills: list) -> list:
    """Run ``args`` once per ``(trigger, delay)`` of ``kills`` (see :func:`execute`), then until it
    succeeds. Returns every attempt's ``(return code, stderr segments)``."""
    attempts = []
    for trigger, delay in kills + [(None, 0.0)]:
        code, log = execute(args, trigger, delay)
        attempts.append((code, log))
        assert code in (0, -signal.SIGKILL), f"{' '.join(args)} failed with {code}:\n" + "\n".join(log[-20:])
    assert code == 0, f"{' '.join(args)} did not finish: {[c for c, _ in attempts]}"
    return attempts


STEP_PATTERN = re.compile(r"pretrain .*?(\d+)/\d+")  # the progress bar: steps done/total


def step_reached(step: int):
    """A trigger: the pretraining progress bar shows ``step`` or more steps done."""
    def trigger(segment: str) -> bool:
        found = STEP_PATTERN.search(segment)
        return found is not None and int(found.group(1)) >= step
    return trigger


def after_lines(*patterns: str):
    """A trigger: the stderr lines matched ``patterns`` in this order (one line each)."""
    remaining = list(patterns)

    def trigger(segment: str) -> bool:
        if remaining and re.search(remaining[0], segment):
            remaining.pop(0)
        return not remaining
    return trigger


def first_step(log: list) -> int:
    """The step of an attempt's first pretraining progress bar: where it resumed."""
    found = next(filter(None, map(STEP_PATTERN.search, log)), None)
    return int(found.group(1)) if found else 0


def pretrain_args(checkpoint: Path, dataset: Path, progress: bool) -> list:
    return ["benchmarks.pretrain", "--dataset", str(dataset), "--steps", str(STEPS), "--batch-size", "16",
            "--checkpoint-every", "5", "--device", "cpu", "--out", str(checkpoint),
            *([] if progress else ["--no-progress"])]


def run_args(cache: Path, out: Path, dataset: Path) -> list:
    return ["benchmarks.run", "--dataset", str(dataset), "--forget", "red", "--cache", str(cache), "--steps", "3",
            "--seeds", "2", "--device", "cpu", "--no-figures", "--no-progress", "--out", str(out)]


def without_timing(value):
    """``value`` (a JSON record) without its wall-clock fields, at any depth."""
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING_FIELDS}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def test_killed_pretraining_and_harness_resume_to_the_uninterrupted_outputs(tmp_path):
    dataset = write_dataset(tmp_path / "colours")
    data = EncodedDataset.build(load_dataset(dataset), models.model_config("meru-tiny").text.context_length)
    entry = pretrained_entry("lorentz", data, tmp_path)[0].name  # where `benchmarks.run --cache` looks
    rng = random.Random(20240601)
    pretrain_kills = [(step_reached(step), rng.uniform(0, 0.5))
                      for step in sorted(rng.sample(range(1, STEPS - 2), 3))]
    run_kills = [
        (after_lines(r"^\[1/"), rng.uniform(0, 1.0)),  # while unlearning or auditing the first run
        (after_lines(r"forget accuracy"), rng.uniform(0, 0.2)),  # between records
        (after_lines(r"^\[(\d+)/\1\]", r"forget accuracy"), rng.uniform(0, 0.05)),  # after the last: the report
    ]

    cache, killed_cache = tmp_path / "cache", tmp_path / "killed-cache"
    reference_out, out = tmp_path / "straight-out", tmp_path / "killed-out"
    with ThreadPoolExecutor(2) as pool:  # two cores, one thread per command: jobs side by side
        straight = pool.submit(interrupted, pretrain_args(cache / entry, dataset, progress=False), [])
        killed = pool.submit(interrupted, pretrain_args(killed_cache / entry, dataset, progress=True), pretrain_kills)
        straight.result()  # the cache entry both harness sequences start from
        harness = pool.submit(interrupted, run_args(cache, out, dataset), run_kills)
        pool.submit(interrupted, run_args(cache, reference_out, dataset), []).result()
        pretraining, harness = killed.result(), harness.result()

    # Not vacuous: the kills landed, and reruns resumed from what the killed ones had saved.
    for name, attempts in (("pretraining", pretraining), ("the harness", harness)):
        codes = [code for code, _ in attempts]
        assert codes.count(-signal.SIGKILL) >= 2, f"{name} was not killed: {codes}"
    resumed_at = [first_step(log) for _, log in pretraining[1:]]
    assert max(resumed_at, default=0) > 0, f"pretraining never resumed from a checkpoint: {resumed_at}"
    assert any(re.search(r"[1-9]\d* already done", line) for _, log in harness for line in log)

    expected, got = (torch.load(path / entry, weights_only=False) for path in (cache, killed_cache))
    assert expected["state_dict"].keys() == got["state_dict"].keys()
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(tensor, got["state_dict"][name]), f"pretrained weight {name} differs after kills"
    assert without_timing(got["metadata"]["pretraining"]) == without_timing(expected["metadata"]["pretraining"])

    expected, got = ([without_timing(json.loads(line)) for line in (folder / "results.jsonl").read_text().splitlines()]
                     for folder in (reference_out, out))
    assert len(got) == 2 and got == expected
    assert (out / "report.md").is_file()
