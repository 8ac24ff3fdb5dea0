"""MERU and CLIP image–text models on open_clip towers, differing only in their geometry.

>>> import models
>>> meru = models.create_model("meru-tiny")      # Lorentz head, learnable curvature
>>> clip = models.create_model("clip-tiny")      # L2-normalised head, cosine similarity
"""

import manifolds  # noqa: F401  (first: it imports geoopt without its torch.jit.script notice)
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import ModelConfig, TextConfig, VisionConfig, register_config
from .factory import Tokenizer, create_model, get_tokenizer, list_models, model_config
from .losses import entailment_rows, info_nce_rows
from .model import CLIP, MERU, ImageTextModel
from .released import load_hycoclip_checkpoint, load_model_file, load_open_clip_state_dict, load_released_checkpoint
from .training import TrainingLoop

__all__ = [
    "CLIP", "MERU", "ImageTextModel", "ModelConfig", "TextConfig", "VisionConfig", "Tokenizer", "TrainingLoop",
    "CheckpointError", "create_model", "entailment_rows", "get_tokenizer", "info_nce_rows",
    "list_models", "load_checkpoint", "load_hycoclip_checkpoint", "load_model_file", "load_open_clip_state_dict",
    "load_released_checkpoint", "model_config", "register_config", "save_checkpoint",
]
