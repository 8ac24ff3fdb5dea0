"""Batched embedding and zero-shot classification (docs/SPEC.md section 2), for any geometry."""

from __future__ import annotations

from typing import Sequence

import torch


@torch.no_grad()
def embed_images(model, images: torch.Tensor, *, batch_size: int = 512) -> torch.Tensor:
    """Embeddings of ``images`` ``(n, 3, H, W)`` on the model's device, in batches. ``-> (n, D)``."""
    device = next(model.parameters()).device
    chunks = [model.encode_image(chunk.to(device)).float() for chunk in images.split(batch_size)]
    return torch.cat(chunks) if chunks else torch.empty(0)


@torch.no_grad()
def embed_texts(model, tokens: torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
    """Embeddings of token ids ``(n, context)``, in batches. ``-> (n, D)``."""
    device = next(model.parameters()).device
    chunks = [model.encode_text(chunk.to(device)).float() for chunk in tokens.split(batch_size)]
    return torch.cat(chunks) if chunks else torch.empty(0)


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
