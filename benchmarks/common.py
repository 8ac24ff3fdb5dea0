"""Pieces shared by the command-line tools: devices, mixed precision, tokenised datasets."""

from __future__ import annotations

import functools
import hashlib
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import models
from models.checkpoint import atomic_write
from models.training import autocast  # noqa: F401  (the tools' mixed precision: bfloat16 on GPU only)

from .datasets.loading import image_source
from .fingerprints import dataset_fingerprint


class InputError(ValueError):
    """An input the user can fix (a command-line value, a file, a dataset): the command reports it
    in one line and exits with status 2."""


#: Longest file or folder name the tools write whole. File systems cap a name at 255 bytes and an
#: atomic write adds a temporary suffix; forgetting 16 concepts at once names them all.
MAX_NAME = 96


def bounded_name(name: str, *, limit: int = MAX_NAME) -> str:
    """``name`` if it has at most ``limit`` characters, else its start and a digest of the whole
    (``-`` and 10 hex digits), ``limit`` characters at most: distinct names stay distinct."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    return f"{name[:limit - len(digest) - 1].rstrip('-')}-{digest}"


def tell(message: str) -> None:
    """Show the user a progress note or warning (on stderr: stdout carries the command's result)."""
    print(message, file=sys.stderr)


def on_main(world, work):
    """``work()`` on rank 0 only (a check that reads every file, say); when it raises, every process
    raises the same error, so that no process waits forever for one that has stopped. Returns
    rank 0's result on every process."""
    from models.distributed import broadcast_object

    outcome = None
    if world.is_main:
        try:
            outcome = ("ok", work())
        except Exception as error:  # handed to every process, raised there
            outcome = ("error", error)
    kind, value = broadcast_object(outcome, world)
    if kind == "error":
        raise value
    return value


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine (use cpu or auto)")
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda[:N], got {name!r}")
    return torch.device(name)


@dataclass
class EncodedDataset:
    """A :class:`~benchmarks.datasets.ConceptDataset` with its captions and zero-shot prompts tokenised
    for one model, and the integer class of every pair (position in ``classes``)."""

    dataset: object
    tokens: torch.Tensor  # (n_pairs, context)
    classes: list  # leaf concepts: the zero-shot classes
    targets: np.ndarray  # (n_pairs,)
    prompt_tokens: list  # per class: (n_prompts, context)
    tokenizer: object = field(repr=False, default=None)

    @classmethod
    def build(cls, dataset, context_length: int) -> "EncodedDataset":
        tokenizer = models.get_tokenizer(context_length)
        classes = dataset.leaf_classes()
        return cls(
            dataset=dataset,
            tokens=tokenizer(dataset.captions),
            classes=classes,
            targets=dataset.targets(np.arange(len(dataset))),
            prompt_tokens=[tokenizer(dataset.prompts(c)) for c in classes],
            tokenizer=tokenizer,
        )

    @functools.cached_property
    def fingerprint(self) -> str:
        """:func:`~benchmarks.fingerprints.dataset_fingerprint` of the dataset, computed once (for
        file-backed data it looks at every image file)."""
        return dataset_fingerprint(self.dataset)

    def concept_prompt_tokens(self, concept: str) -> torch.Tensor:
        return self.tokenizer(self.dataset.prompts(concept))

    def images(self, indices) -> torch.Tensor:
        """The images of ``indices`` decoded into one tensor: for small sets only."""
        return self.dataset.images(indices)

    def image_source(self, indices):
        """The images of ``indices`` as an image source (:mod:`models.streaming`): in memory for
        built-in data, read by data-loader workers for files."""
        return image_source(self.dataset, indices)


def zero_shot_accuracy(model, data: EncodedDataset, indices, *, classes=None, world=None) -> float:
    """Macro zero-shot accuracy of ``model`` on the pairs ``indices`` (over all leaf classes); the
    images are streamed, and embedded in parts by the processes of ``world`` when given."""
    from models.evaluation import class_embeddings, embed_images, macro_accuracy, zero_shot_predictions

    indices = np.asarray(indices)
    prototypes = class_embeddings(model, data.prompt_tokens)
    embedded = embed_images(model, data.image_source(indices), world=world)
    predictions = zero_shot_predictions(model, embedded, prototypes)
    return macro_accuracy(predictions, torch.from_numpy(data.targets[indices]), classes)


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file + ``os.replace``)."""
    atomic_write(path, lambda file: file.write(text), binary=False)


def finite_json(value):
    """``value`` with every NaN or infinite float replaced by ``None``; in a dict, the entry
    ``<key>_reason`` says what the number was, so that a reader can tell "not measured" apart."""
    if isinstance(value, dict):
        cleaned = {}
        for key, item in value.items():
            cleaned[key] = finite_json(item)
            if _is_non_finite(item):
                cleaned[f"{key}_reason"] = f"not a finite number ({item})"
        return cleaned
    if isinstance(value, (list, tuple)):
        return [finite_json(item) for item in value]
    return None if _is_non_finite(value) else value


def _is_non_finite(value) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def strict_json(value, **options) -> str:
    """Standard JSON (no ``NaN``/``Infinity``, which most JSON readers reject) of ``value``, with
    non-finite floats written as ``null`` by :func:`finite_json`."""
    return json.dumps(finite_json(value), allow_nan=False, sort_keys=True, **options)


def write_json(path, data) -> None:
    """Write ``data`` to ``path`` as strict, indented JSON, atomically."""
    atomic_write_text(path, strict_json(data, indent=2) + "\n")
