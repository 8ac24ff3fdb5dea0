"""A check that every image file of a dataset decodes, run once before any training.

File-based datasets (and datasets with an image source, such as tar shards) decode their images
lazily, so without this check a corrupt file would stop a run hours in. This module imports only
torch, PIL and tqdm.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from tqdm.auto import tqdm

from .base import ConceptDataset
from .errors import DatasetError

#: How many bad files a :class:`DatasetError` lists (the count covers all of them).
LISTED_BAD_FILES = 5


def _decode_problem(dataset: ConceptDataset, index: int) -> str | None:
    """Why the image of pair ``index`` cannot be decoded (the :class:`DatasetError` message, which
    names the file or archive member), or ``None`` when it can."""
    try:
        dataset.load_pixels(index)  # decoded and dropped: the check keeps no pixels
    except DatasetError as exc:
        return str(exc)
    return None


def _first_pair_of_each_image(dataset: ConceptDataset) -> list[int]:
    """The index of the first pair of every distinct image (COCO pairs share files); empty for
    in-memory data, which has nothing to decode."""
    if len(dataset) == 0 or dataset.image_path(0) is None:
        return []
    first = {}
    for index in range(len(dataset)):
        first.setdefault(dataset.image_path(index), index)
    return list(first.values())


def validate_images(dataset: ConceptDataset, *, progress: bool = True, workers: int | None = None) -> None:
    """Decode every image file (or archive member) of ``dataset`` once; raise :class:`DatasetError` if any fails.

    The message says how many files are bad and names the first :data:`LISTED_BAD_FILES` of them
    (path and reason), in dataset order. Decoded pixels are dropped, never kept. In-memory datasets (``shapes``, ``digits``,
    CIFAR pickles) have no files and return at once. ``workers`` threads decode in parallel (PIL
    releases the GIL while decoding); the default is the number of CPUs, at most 8.
    """
    unique = _first_pair_of_each_image(dataset)
    if not unique:
        return
    workers = workers or min(8, os.cpu_count() or 1)
    if workers < 1:
        raise DatasetError(f"validate_images needs at least one worker, got {workers}")
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(_decode_problem, [dataset] * len(unique), unique)
        bar = tqdm(results, total=len(unique), desc=f"checking {dataset.name} images",
                   unit="file", disable=not progress)
        problems = [p for p in bar if p is not None]
    if problems:
        listed = "; ".join(problems[:LISTED_BAD_FILES])
        more = f"; ... ({len(problems) - LISTED_BAD_FILES} more)" if len(problems) > LISTED_BAD_FILES else ""
        raise DatasetError(
            f"{dataset.name}: {len(problems)} of {len(unique)} image files cannot be decoded; fix or "
            f"remove them before training: {listed}{more}"
        )
