"""Memory stays bounded as the corpus grows: peak memory of the harness on folder datasets of
growing size, and how long a pretraining step waits for its data.

    python -m benchmarks.memory                        # 5,000 and 50,000 pairs (the README's numbers)
    python -m benchmarks.memory --sizes 2000,20000     # any sizes

For each size it writes a folder dataset (our format: ``pairs.jsonl`` + ``hierarchy.json`` + PNG
files, images from the ``shapes`` generator at ``--image-size`` pixels, kept between invocations),
pretrains one small model on the smallest (``--pretrain-steps``), then runs, each in its own process
and one after the other, ``python -m benchmarks.pretrain`` and ``python -m benchmarks.run
--checkpoint`` on every dataset, and prints the peak resident memory of each command's main process
(``VmHWM``; the data-loader workers each hold a batch or two of images) with its ratio to the
smallest dataset's, and the pretraining's data-loading wait per step next to its step
time. Nothing is timed in a test: this is a measurement to read, not a pass/fail check.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from .common import atomic_write_text, write_json
from .datasets import make_shapes

#: The model every run uses: the smallest of our configs, so that the data, not the model, is measured.
MODEL_GEOMETRY = "lorentz"


def write_folder_dataset(root: Path, pairs: int, *, image_size: int, seed: int = 0) -> Path:
    """A folder dataset of about ``pairs`` image–caption pairs (``shapes`` content, 90% train) at
    ``root``; reused when it is already complete (``pairs.jsonl`` is written last)."""
    if (root / "pairs.jsonl").exists():
        return root
    from PIL import Image

    leaves = 12
    per_leaf = max(2, pairs // leaves)
    test = max(1, per_leaf // 10)
    dataset = make_shapes(seed=seed, per_leaf_train=per_leaf - test, per_leaf_test=test, image_size=image_size)
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for index in range(len(dataset)):
        name = f"images/{index:07d}.png"
        pixels = dataset.pixels[index].permute(1, 2, 0).numpy()  # built-in data: its uint8 pixels as stored
        Image.fromarray(pixels).save(root / name)
        lines.append(json.dumps({"image": name, "caption": dataset.captions[index],
                                 "concepts": [dataset.labels[index]], "split": str(dataset.splits[index])}))
    write_json(root / "hierarchy.json", dataset.hierarchy.as_dict())
    write_json(root / "prompts.json", {"prompts": {c: dataset.prompts(c) for c in dataset.hierarchy.concepts()}})
    atomic_write_text(root / "pairs.jsonl", "\n".join(lines) + "\n")
    return root


def peak_resident_mib(pid: int) -> float | None:
    """The high-water mark of ``pid``'s resident memory (``VmHWM``), in MiB; ``None`` once it is gone.

    Read from ``/proc`` rather than from ``wait4``'s ``ru_maxrss``: the latter keeps the high-water
    mark the process had before ``exec`` — this parent's size at the fork — so a child of a large
    parent would report the parent's memory."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def measured(command: list, *, log: Path, every: float = 0.2) -> dict:
    """Run ``command`` (output to ``log``); its wall time and the peak resident memory of its main
    process (MiB), polled every ``every`` seconds while it runs (the mark only grows, so the last
    reading before it exits is the peak up to then)."""
    began = time.perf_counter()
    peak = 0.0
    with open(log, "w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        while process.poll() is None:
            peak = max(peak, peak_resident_mib(process.pid) or 0.0)
            time.sleep(every)
    if process.returncode != 0:
        raise SystemExit(f"command failed: {' '.join(command)}; see {log}")
    return {"seconds": round(time.perf_counter() - began, 1), "peak_rss_mib": round(peak, 1)}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="5000,50000", help="dataset sizes in pairs (default: %(default)s)")
    parser.add_argument("--image-size", type=int, default=64, help="stored image side in pixels (default: %(default)s)")
    parser.add_argument("--pretrain-steps", type=int, default=60, help="(default: %(default)s)")
    parser.add_argument("--unlearn-steps", type=int, default=20, help="(default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="data-loader processes (default: %(default)s)")
    parser.add_argument("--workdir", default="runs/memory", help="datasets and outputs (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    sizes = sorted(int(size) for size in args.sizes.split(","))
    workdir = Path(args.workdir).resolve()
    python = [sys.executable, "-m"]
    rows = []
    checkpoint = workdir / f"meru-tiny-{sizes[0]}.pt"
    for size in sizes:
        began = time.perf_counter()
        folder = write_folder_dataset(workdir / f"folder-{size}", size, image_size=args.image_size)
        print(f"dataset of {size} pairs ready in {time.perf_counter() - began:.0f} s: {folder}", file=sys.stderr)
        pretraining = measured([*python, "benchmarks.pretrain", "--dataset", str(folder), "--steps",
                                str(args.pretrain_steps), "--workers", str(args.workers), "--no-progress",
                                "--out", str(workdir / f"meru-tiny-{size}.pt")], log=workdir / f"pretrain-{size}.log")
        import torch

        summary = torch.load(workdir / f"meru-tiny-{size}.pt", map_location="cpu",
                             weights_only=False)["metadata"]["pretraining"]
        run = measured([*python, "benchmarks.run", "--geometry", MODEL_GEOMETRY, "--checkpoint", str(checkpoint),
                        "--dataset", str(folder), "--steps", str(args.unlearn_steps), "--no-early-stop",
                        "--no-figures", "--no-progress", "--workers", str(args.workers),
                        "--out", str(workdir / f"run-{size}")], log=workdir / f"run-{size}.log")
        rows.append({"pairs": size, "run_peak_rss_mib": run["peak_rss_mib"], "run_seconds": run["seconds"],
                     "pretrain_peak_rss_mib": pretraining["peak_rss_mib"],
                     "step_seconds": summary["seconds"] / args.pretrain_steps,
                     "data_wait_seconds_per_step": summary["data_wait_seconds_per_step"]})
    smallest = rows[0]
    print(f"{'pairs':>8} {'run peak MiB':>13} {'x smallest':>11} {'pretrain peak MiB':>18} {'x smallest':>11} "
          f"{'step s':>8} {'data wait s':>12}")
    for row in rows:
        print(f"{row['pairs']:>8} {row['run_peak_rss_mib']:>13.0f} "
              f"{row['run_peak_rss_mib'] / smallest['run_peak_rss_mib']:>11.2f} {row['pretrain_peak_rss_mib']:>18.0f} "
              f"{row['pretrain_peak_rss_mib'] / smallest['pretrain_peak_rss_mib']:>11.2f} "
              f"{row['step_seconds']:>8.3f} {row['data_wait_seconds_per_step']:>12.4f}")
    write_json(workdir / "memory.json", {"rows": rows, "settings": vars(args)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
