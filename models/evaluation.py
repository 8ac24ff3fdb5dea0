"""Batched embedding and zero-shot classification (docs/SPEC.md section 2), for any geometry."""

from __future__ import annotations

from typing import Sequence

import torch

from .distributed import SINGLE, World, gather_rows, shard_range
from .streaming import chunks, image_batches


#: Rows per batch of an embedding pass, by kind: on a CPU small batches are faster, since one
#: layer's activations stay in its cache (the tiny towers, 2 threads: images 2.0x faster at 64 than
#: at 512, captions 1.8x at 256 than at 1024; ``python -m benchmarks.step_speed --embedding
#: --threads 2``); an accelerator wants large ones. The choice changes float rounding only.
CPU_EMBEDDING_BATCH = {"images": 64, "texts": 256}
ACCELERATOR_EMBEDDING_BATCH = {"images": 512, "texts": 1024}


def embedding_batch_size(device, kind: str) -> int:
    """Rows per batch when embedding ``kind`` (``"images"`` or ``"texts"``) on ``device``."""
    table = CPU_EMBEDDING_BATCH if torch.device(device).type == "cpu" else ACCELERATOR_EMBEDDING_BATCH
    return table[kind]


@torch.no_grad()
def embed_images(model, images, *, rows=None, batch_size: int | None = None, workers: int | None = None,
                 world: World | None = None) -> torch.Tensor:
    """Embeddings of an image source (a tensor ``(n, 3, H, W)`` in ``[0, 1]`` or a dataset of images,
    see :mod:`models.streaming`) on the model's device, in batches of ``batch_size`` (default:
    :func:`embedding_batch_size` of the device). ``-> (n, D)``; with ``rows`` (indices into
    ``images``), of those images only, in that order ``-> (len(rows), D)``.

    With ``world`` (several processes, all calling this with the same ``images``), each process
    embeds its own contiguous part and the parts are gathered: every process gets all the rows."""
    device = next(model.parameters()).device
    world = world or SINGLE
    batch_size = batch_size or embedding_batch_size(device, "images")
    rows = torch.arange(len(images)) if rows is None else torch.as_tensor(rows, dtype=torch.long)
    part = shard_range(len(rows), world)
    batches = [rows[chunk.start:chunk.stop] for chunk in chunks(part.stop - part.start, batch_size, start=part.start)]
    embedded = [model.encode_image(chunk).float() for chunk in image_batches(images, batches, device=device,
                                                                                  workers=workers)]
    local = torch.cat(embedded) if embedded else _no_rows(model, device)
    return gather_rows(local, world)


@torch.no_grad()
def embed_texts(model, tokens: torch.Tensor, *, batch_size: int | None = None, world: World | None = None) -> torch.Tensor:
    """Embeddings of token ids ``(n, context)``, in batches of ``batch_size`` (default:
    :func:`embedding_batch_size` of the device), sharded over ``world`` like :func:`embed_images`.
    ``-> (n, D)``."""
    device = next(model.parameters()).device
    world = world or SINGLE
    batch_size = batch_size or embedding_batch_size(device, "texts")
    tokens = tokens[shard_range(len(tokens), world)]
    chunks_ = [model.encode_text(chunk.to(device)).float() for chunk in tokens.split(batch_size)]
    local = torch.cat(chunks_) if chunks_ else _no_rows(model, device)
    return gather_rows(local, world)


def _no_rows(model, device) -> torch.Tensor:
    """No embeddings, with the model's embedding width (``embed_dim + 1`` for Lorentz points)."""
    width = model.geometry.lift(torch.zeros(1, model.embed_dim, device=device)).shape[-1]
    return torch.zeros(0, width, device=device)


@torch.no_grad()
def class_embeddings(model, prompt_tokens: Sequence[torch.Tensor]) -> torch.Tensor:
    """Zero-shot class embeddings (see :meth:`ImageTextModel.class_embeddings`). ``-> (k, D)``."""
    device = next(model.parameters()).device
    return model.class_embeddings([tokens.to(device) for tokens in prompt_tokens]).float()


@torch.no_grad()
def zero_shot_predictions(model, image_embeddings: torch.Tensor, class_embeddings: torch.Tensor) -> torch.Tensor:
    """Index of the most similar class for each image (MERU: nearest by geodesic distance, the same
    ranking as the Lorentz inner product; CLIP: highest cosine). ``-> (n,)`` on the CPU."""
    if len(image_embeddings) == 0:
        return torch.zeros(0, dtype=torch.long)
    return model.geometry.csimilarity(image_embeddings, class_embeddings).argmax(dim=1).cpu()


def macro_accuracy(predictions: torch.Tensor, targets: torch.Tensor, classes: Sequence[int] | None = None) -> float:
    """Mean over classes of the per-class top-1 accuracy (MERU reports macro accuracy).

    ``classes`` restricts the mean to those target classes (those with no image are skipped);
    returns ``nan`` when no listed class has an image."""
    predictions, targets = torch.as_tensor(predictions), torch.as_tensor(targets)
    classes = targets.unique().tolist() if classes is None else list(classes)
    per_class = [
        (predictions[targets == k] == k).float().mean().item() for k in classes if (targets == k).any()
    ]
    return float(sum(per_class) / len(per_class)) if per_class else float("nan")
