"""MERU and CLIP: one image–text model whose only difference is its geometry object."""

from __future__ import annotations

import math
from typing import Sequence

import geoopt
import torch
from torch import nn

from manifolds import Geometry, geometry_spec
from manifolds.precision import autocast_off, upcast

from .config import ModelConfig
from .distributed import World, gather_with_grad
from .losses import entailment_rows, info_nce_rows
from .towers import build_text_tower, build_vision_tower

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_LOGIT_SCALE = math.log(100.0)
BPE_VOCAB_SIZE = 49408  # open_clip's (and MERU's) tokenizer
BPE_START, BPE_END = 49406, 49407


def build_geometry(config: ModelConfig) -> Geometry:
    """The geometry object of a config, built by its registered geometry (MERU's learnable-curvature
    hyperboloid, CLIP's sphere, ...) with the config's curvature and cone radius."""
    return geometry_spec(config.geometry).build(
        curvature=config.curvature, learnable=config.learn_curvature, min_radius=config.min_radius)


class ImageTextModel(nn.Module):
    """Image tower + text tower + bias-free projections + feature scales + a geometry.

    ``encode_image`` / ``encode_text`` return points of ``self.geometry`` (for MERU: full Lorentz
    coordinates ``(n, embed_dim + 1)``, time first; for CLIP: unit vectors ``(n, embed_dim)``).

    Parameters follow MERU: ``visual_alpha``/``textual_alpha`` (log feature scales, initialised to
    ``log(embed_dim ** -0.5)``, clamped to <= 0 when read), ``logit_scale`` (initialised to
    ``log(1/0.07)``, clamped to <= ``log 100`` when read). The projections are
    ``geoopt.ManifoldParameter`` on the Euclidean manifold, so one ``RiemannianAdam`` drives all
    parameters. Images enter as ``[0, 1]`` pixels and are normalised with ImageNet statistics inside.
    """

    # The geometry a subclass is bound to, declared as ``class MERU(ImageTextModel, geometry="lorentz")``;
    # create_model builds that subclass for its geometry's configs and ImageTextModel for the others.
    bound_geometry: str | None = None
    _bound_classes: dict = {}

    def __init_subclass__(cls, geometry: str | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.bound_geometry = geometry
        if geometry is not None:
            ImageTextModel._bound_classes[geometry] = cls

    @staticmethod
    def class_for(geometry: str) -> type:
        """The model class that :func:`models.create_model` builds for a config of ``geometry``."""
        return ImageTextModel._bound_classes.get(geometry, ImageTextModel)

    def __init__(self, config: ModelConfig):
        if self.bound_geometry is not None and config.geometry != self.bound_geometry:
            raise ValueError(f"{type(self).__name__} needs a {self.bound_geometry!r} config, "
                             f"got {config.name!r} ({config.geometry})")
        super().__init__()
        self.config = config
        self.geometry = build_geometry(config)
        self.visual = build_vision_tower(config.vision, config.embed_dim)
        self.textual = build_text_tower(config.text, config.embed_dim)
        self.visual_proj = _projection(self.visual.output_dim, config.embed_dim)
        self.textual_proj = _projection(self.textual.output_dim, config.embed_dim)
        initial_alpha = math.log(config.embed_dim**-0.5)
        self.visual_alpha = nn.Parameter(torch.tensor(initial_alpha))
        self.textual_alpha = nn.Parameter(torch.tensor(initial_alpha))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        if config.text.compact_vocabulary:
            self.register_buffer("token_map", torch.zeros(BPE_VOCAB_SIZE, dtype=torch.long))
            self.build_vocabulary(torch.empty(0, dtype=torch.long))

    def train_with_frozen_statistics(self) -> "ImageTextModel":
        """Training mode, except that BatchNorm statistics stay frozen: updated on small or skewed
        batches (unlearning's retain/forget mixes, a relearning attack on a few pairs) they would
        drift and make accuracy swing between evaluations (docs/SPEC.md section 4)."""
        self.train()
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self

    # ------------------------------------------------------------------------ compact vocabulary
    def build_vocabulary(self, tokens: torch.Tensor) -> None:
        """Give a compact-vocabulary model its vocabulary: the BPE ids occurring in ``tokens``.

        Row 0 stays padding, the end-of-text id takes the last row (open_clip pools the text at the
        argmax token id, which must remain the end of text), start-of-text the one before it, and
        every id outside the vocabulary shares an "unknown" row. The map is a buffer, so it travels
        with the weights in every checkpoint."""
        size = self.config.text.vocab_size
        end, start, unknown = size - 1, size - 2, size - 3
        seen = [t for t in torch.unique(tokens).tolist() if t not in (0, BPE_START, BPE_END)]
        if len(seen) > size - 4:
            raise ValueError(
                f"{len(seen)} distinct tokens do not fit the compact vocabulary of {self.config.name!r} "
                f"({size - 4} free rows); use a config with a larger text.vocab_size"
            )
        token_map = torch.full((BPE_VOCAB_SIZE,), unknown, dtype=torch.long)
        token_map[0], token_map[BPE_START], token_map[BPE_END] = 0, start, end
        token_map[torch.tensor(seen, dtype=torch.long)] = torch.arange(1, len(seen) + 1)
        self.token_map.copy_(token_map.to(self.token_map.device))

    # ------------------------------------------------------------------------------ encoders
    @property
    def image_size(self) -> int:
        return self.config.vision.image_size

    @property
    def context_length(self) -> int:
        return self.config.text.context_length

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    def scale(self) -> torch.Tensor:
        """Contrastive temperature ``exp(logit_scale)``, at most 100."""
        return self.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Projected image features before scaling and lifting. ``(n, 3, H, W) -> (n, embed_dim)``."""
        pixels = (images - self.pixel_mean) / self.pixel_std
        return self.visual(pixels) @ self.visual_proj.t()

    def text_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """Projected text features before scaling and lifting. ``(n, context) -> (n, embed_dim)``."""
        if self.config.text.compact_vocabulary:
            tokens = self.token_map[tokens]
        return self.textual(tokens) @ self.textual_proj.t()

    def embed_image_features(self, features: torch.Tensor) -> torch.Tensor:
        """Scale and lift projected image features; float32 (or float64) even under autocast."""
        with autocast_off(features.device.type):
            return self.geometry.lift(upcast(features) * self.visual_alpha.clamp(max=0.0).exp())

    def embed_text_features(self, features: torch.Tensor) -> torch.Tensor:
        """Scale and lift projected text features; float32 (or float64) even under autocast."""
        with autocast_off(features.device.type):
            return self.geometry.lift(upcast(features) * self.textual_alpha.clamp(max=0.0).exp())

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Images in ``[0, 1]`` ``(n, 3, H, W)`` -> points of the geometry."""
        return self.embed_image_features(self.image_features(images))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids ``(n, context_length)`` -> points of the geometry."""
        return self.embed_text_features(self.text_features(tokens))

    def logits(self, image_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        """``s · sim(u_i, v_j)``: images as rows. ``(n, D), (m, D) -> (n, m)``; float32 (or float64)
        even under autocast (docs/SPEC.md section 2: the geometry and the loss run in full precision)."""
        with autocast_off(image_embeddings.device.type):
            similarity = self.geometry.csimilarity(upcast(image_embeddings), upcast(text_embeddings))
            return self.scale() * similarity

    def class_embeddings(self, prompt_tokens: Sequence[torch.Tensor]) -> torch.Tensor:
        """Zero-shot class embeddings from each class's prompt tokens ``(n_prompts, context)``.

        The geometry decides how prompts are averaged (docs/SPEC.md section 2): MERU averages projected
        features in the tangent space and lifts the mean; CLIP normalises, averages, normalises.
        ``-> (n_classes, D)``"""
        counts = [len(tokens) for tokens in prompt_tokens]
        features = self.text_features(torch.cat(list(prompt_tokens)))
        with autocast_off(features.device.type):
            features = upcast(features)
            prototypes = torch.stack([self.geometry.mean_features(f) for f in features.split(counts)])
            return self.embed_text_features(prototypes)

    # -------------------------------------------------------------------------------- losses
    def contrastive_loss(self, image_embeddings, text_embeddings) -> torch.Tensor:
        """Symmetric InfoNCE over the batch (pair ``i`` is the positive of row ``i``)."""
        return info_nce_rows(self.logits(image_embeddings, text_embeddings)).mean()

    def entailment_loss(self, image_embeddings, text_embeddings) -> torch.Tensor:
        """MERU's entailment loss: each caption's cone should contain its image."""
        return entailment_rows(
            self.geometry, text_embeddings, image_embeddings
        ).mean()

    def pretraining_loss(self, images: torch.Tensor, tokens: torch.Tensor, *,
                         entailment_weight: float | None = None, world: World | None = None) -> dict:
        """MERU: contrastive + 0.2 × entailment; CLIP: contrastive (``entailment_weight = 0``).

        ``entailment_weight`` overrides the config's weight for this call (pretraining warms it up
        from 0, see ``benchmarks.pretrain.entailment_weight_at``). With ``world``, ``images`` and
        ``tokens`` are this process's slice of the global batch: the embeddings of all processes
        are gathered (with gradients) and the loss is the global batch's (:mod:`models.distributed`).
        Returns a dict with ``loss`` (to minimise), ``contrastive`` and, when its weight is not 0,
        ``entailment``."""
        weight = self.config.entailment_weight if entailment_weight is None else entailment_weight
        image_embeddings = gather_with_grad(self.encode_image(images), world)
        text_embeddings = gather_with_grad(self.encode_text(tokens), world)
        contrastive = self.contrastive_loss(image_embeddings, text_embeddings)
        losses = {"contrastive": contrastive}
        loss = contrastive
        if weight:
            entailment = self.entailment_loss(image_embeddings, text_embeddings)
            losses["entailment"] = entailment
            loss = loss + weight * entailment
        losses["loss"] = loss
        return losses


def _projection(in_features: int, out_features: int) -> geoopt.ManifoldParameter:
    """A bias-free linear map ``(out, in)`` (``nn.Linear`` weight layout) as a Euclidean
    ``ManifoldParameter``, initialised like MERU (normal, std ``in_features ** -0.5``)."""
    weight = torch.randn(out_features, in_features) * in_features**-0.5
    return geoopt.ManifoldParameter(weight, manifold=geoopt.Euclidean(ndim=2))


class MERU(ImageTextModel, geometry="lorentz"):
    """MERU (Desai et al., 2023): the image–text model on the Lorentz hyperboloid."""


class CLIP(ImageTextModel, geometry="euclidean"):
    """CLIP (Radford et al., 2021) with the same towers: L2-normalised embeddings, cosine logits."""
