"""Fingerprints of the inputs a result depends on: a dataset's content, a model file, settings.

An output folder and every pretrained-model cache entry are keyed by these, not by names: two
dataset folders that share a name (``a/gsmall`` and ``b/gsmall``) get different fingerprints, so
one's results are never reported for the other. A fingerprint is a SHA-256 hex digest."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

# Bump when the recipe below changes, so old and new fingerprints of the same data never agree.
DATASET_RECIPE = "concept-dataset/1"
READ_CHUNK = 1 << 20


def json_fingerprint(value) -> str:
    """SHA-256 of ``value`` written as canonical JSON (sorted keys): for settings and configs."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, allow_nan=False).encode()).hexdigest()


def file_sha256(path) -> str:
    """SHA-256 of a file's bytes, read in chunks (model files can be gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(READ_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def dataset_fingerprint(dataset) -> str:
    """SHA-256 of everything in a :class:`~benchmarks.datasets.ConceptDataset` that training and
    the audits read: captions, splits, labels, the concepts of every pair, the hierarchy, the
    zero-shot prompts of every concept, the image size, and the images — the pixel bytes of
    in-memory data, the path, size and modification time of each file of file-backed data, and the
    path, size and modification time of each file of an image source (tar shards) with where every
    image lives in them (reading every image would cost as much as training on them). The name is
    left out: the same content under another name is the same dataset."""
    digest = hashlib.sha256(DATASET_RECIPE.encode())
    hierarchy = dataset.hierarchy
    for part in (
        {"image_size": dataset.image_size},
        list(dataset.captions),
        [str(s) for s in dataset.splits],
        list(dataset.labels),
        [sorted(concepts) for concepts in dataset.pair_concepts],
        sorted(hierarchy.as_dict().items(), key=lambda item: item[0]),
        {concept: dataset.prompts(concept) for concept in hierarchy.concepts()},
    ):
        digest.update(json.dumps(part, sort_keys=True).encode())
        digest.update(b"\0")  # parts cannot run into each other
    _update_with_images(digest, dataset)
    return digest.hexdigest()


def _update_with_images(digest, dataset) -> None:
    pixels = dataset.pixels  # in-memory data: its uint8 pixels as stored
    if pixels is not None:
        digest.update(json.dumps(list(pixels.shape)).encode())
        digest.update(np.ascontiguousarray(pixels.numpy()).data)  # a view: no copy of the pixels
        return
    source = getattr(dataset, "image_source", None)
    if source is not None:
        _update_with_source(digest, source, len(dataset))
        return
    for index in range(len(dataset)):
        path = os.path.abspath(dataset.image_path(index))
        status = os.stat(path)
        digest.update(f"{path}\0{status.st_size}\0{status.st_mtime_ns}\n".encode())


def _update_with_source(digest, source, n_images: int) -> None:
    """Hash an :class:`~benchmarks.datasets.base.ImageSource`: its files' path, size and mtime, and
    each image's place in them (``describe``: shard and member name), never the image bytes."""
    for path in source.files():
        path = os.path.abspath(path)
        status = os.stat(path)
        digest.update(f"{path}\0{status.st_size}\0{status.st_mtime_ns}\n".encode())
    digest.update(b"\0")  # the file list cannot run into the image list
    for index in range(n_images):
        digest.update(f"{source.describe(index)}\n".encode())


def short(fingerprint: str | None, length: int = 12) -> str:
    """The first ``length`` characters of a fingerprint, for file names and messages."""
    return "not recorded" if fingerprint is None else fingerprint[:length]
