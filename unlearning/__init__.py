"""Concept unlearning for image–text models: a registry of objectives and one trainer.

>>> import unlearning
>>> unlearning.list_objectives()
['ac', 'ft', 'ga', 'hac', 'hac-parent', 'neggrad+', 'relabel']
>>> objective = unlearning.create_objective("hac", norm_weight=0.0)
"""

import manifolds  # noqa: F401  (first: it imports geoopt without its torch.jit.script notice)
from . import objectives  # noqa: F401  (registers the objectives)
from .data import Batch, Embeddings, UnlearningData, ZeroShotProbe
from .mismatch import STRATEGIES, mismatched_targets
from .registry import (TrainerDefaults, create_objective, list_objectives, objective_options, register_objective,
                       trainer_defaults)
from .trainer import UnlearningResult, unlearn

__all__ = [
    "Batch", "Embeddings", "STRATEGIES", "UnlearningData", "UnlearningResult", "ZeroShotProbe",
    "create_objective", "list_objectives", "mismatched_targets", "objective_options",
    "register_objective", "unlearn", "TrainerDefaults", "trainer_defaults",
]
