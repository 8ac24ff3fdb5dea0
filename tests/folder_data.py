"""Small datasets in the project's folder format (``pairs.jsonl`` + ``hierarchy.json`` + PNGs),
written by tests that drive the command-line tools on real files."""

import contextlib
import itertools
import json
from pathlib import Path

from PIL import Image

HIERARCHY = {"circle": "shape", "square": "shape", "shape": None}
COLOURS = {"circle": (200, 30, 30), "square": (30, 30, 200)}


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


@contextlib.contextmanager
def only_audit_families(names):
    """Run only the audit families ``names`` inside the block, then restore every family in its
    registration order (``monkeypatch.delitem`` would put them back at the end: the run order)."""
    from benchmarks.audits import AUDIT_FAMILIES

    saved = dict(AUDIT_FAMILIES)
    keep_only_audit_families(names)
    try:
        yield
    finally:
        AUDIT_FAMILIES.clear()
        AUDIT_FAMILIES.update(saved)


def keep_only_audit_families(names) -> None:
    """Unregister every audit family but ``names`` (for good: :func:`only_audit_families` restores them)."""
    from benchmarks.audits import AUDIT_FAMILIES

    for family in [name for name in AUDIT_FAMILIES if name not in names]:
        del AUDIT_FAMILIES[family]


#: The pretraining of every cache entry in the harness tests: two steps, whatever the recipe says.
TINY_PRETRAINING = {"steps": 2, "batch_size": 8, "lr": 1e-3, "warmup": 1}


def tiny_settings(train_pairs: int, **_) -> dict:
    """``benchmarks.experiment.default_settings`` of the harness tests: :data:`TINY_PRETRAINING`."""
    return dict(TINY_PRETRAINING)


def use_tiny_pretraining(monkeypatch) -> None:
    """Pretrain every cache entry (the default model and the retrain oracle) with :data:`TINY_PRETRAINING`."""
    import benchmarks.experiment as experiment

    monkeypatch.setattr(experiment, "default_settings", tiny_settings)


#: Options of the quick harness runs: no progress bar, no figures, images decoded in-process.
QUICK_RUN = ("--no-progress", "--no-figures", "--workers", "0")


def run_harness(args, capsys, *, options=("--no-progress",)):
    """``benchmarks.run.main(args + options)`` in this process: ``(exit status, stdout, stderr)``."""
    from benchmarks import run

    code = run.main([*args, *options])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_records(out) -> list:
    """The records of ``out/results.jsonl``, in order."""
    return [json.loads(line) for line in (Path(out) / "results.jsonl").read_text().splitlines()]


def tiny_study_worker() -> None:
    """``benchmarks.study``'s ``worker_setup`` for tests: in a worker process (which no pytest
    fixture reaches), pretrain with :data:`TINY_PRETRAINING` and run only the study's cheap audit
    families, as ``quick_models`` does in the test's own process."""
    import benchmarks.experiment as experiment

    experiment.default_settings = tiny_settings
    keep_only_audit_families(TINY_STUDY_AUDITS)


#: The audit families the study reads, less the linear probe (150 epochs per audit).
TINY_STUDY_AUDITS = ("zero_shot", "hierarchical", "membership", "hyperbolicity")
