"""Loading HyCoCLIP checkpoints (``PalAvik/hycoclip``), written here in its exact layout.

HyCoCLIP's state dict is MERU's (``hycoclip/models.py``: ``HyCoCLIP(MERU)`` adds no parameter), so the
tiny MERU layout of ``test_released_checkpoints`` is reused, with HyCoCLIP's colour buffers (its
constructor stores ImageNet's std in both) and the training-file wrapper of its ``CheckpointManager``
(``hycoclip/utils/checkpointing.py``: ``model``, ``optimizer``, ``scheduler``, ``scaler``, ``iteration``).
The reference outputs are computed from the raw tensors without our model code.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import models
from models import CheckpointError
from models.hycoclip_weights import has_hycoclip_pixel_statistics, infer_hycoclip_model_name
from models.released import convert_meru_state_dict
from test_released_checkpoints import (IMAGE_SIZE, close, meru_lift, reference_image_features,
                                       reference_text_features, released_state_dict, tiny_config, tokens_batch)

# HyCoCLIP's buffers: MERU.__init__ receives ImageNet's std as pixel_mean (a positional-argument shift).
HYCOCLIP_STATISTIC = torch.tensor((0.229, 0.224, 0.225)).view(-1, 1, 1)
LOG_CURVATURE = math.log(1.6)  # stored `curv`; HyCoCLIP trains it within [log 0.1, log 10]


class WarmupCosine(torch.optim.lr_scheduler.LambdaLR):
    """HyCoCLIP's ``LinearWarmupCosineDecayLR`` as far as its state dict goes: a LambdaLR subclass with
    a bound-method multiplier and two step counts."""

    def __init__(self, optimizer, total_steps: int = 10, warmup_steps: int = 2):
        self.tsteps, self.wsteps = total_steps, warmup_steps
        super().__init__(optimizer, self._lr_multiplier)

    def _lr_multiplier(self, step: int) -> float:
        return min(1.0, (step + 1) / self.wsteps)


def hycoclip_state_dict(seed: int = 11) -> dict:
    """Random weights in HyCoCLIP's layout (MERU's keys, HyCoCLIP's colour buffers)."""
    state = released_state_dict("lorentz", seed=seed)
    state["curv"] = torch.tensor(LOG_CURVATURE)
    state["visual_alpha"], state["textual_alpha"] = torch.tensor(-1.1), torch.tensor(-0.7)
    state["pixel_mean"] = HYCOCLIP_STATISTIC.clone()
    state["pixel_std"] = HYCOCLIP_STATISTIC.clone()
    return state


def write_training_file(path, state, iteration: int = 500000):
    """What HyCoCLIP's ``CheckpointManager.step`` saves (``final_step`` omits the iteration)."""
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([weight], lr=5e-4, betas=(0.9, 0.98), weight_decay=0.2)
    weight.sum().backward()
    optimizer.step()
    scheduler = WarmupCosine(optimizer)
    scaler = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
              "_growth_tracker": 0}  # torch.amp.GradScaler.state_dict() when enabled
    torch.save({"model": state, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler, "iteration": iteration}, path)
    return path


@pytest.fixture(scope="module")
def hycoclip_file(tmp_path_factory):
    state = hycoclip_state_dict()
    return write_training_file(tmp_path_factory.mktemp("hycoclip") / "hycoclip_vit_tiny.pth", state), state


@pytest.fixture(scope="module")
def hycoclip_model(hycoclip_file):
    path, _ = hycoclip_file
    model, metadata = models.load_hycoclip_checkpoint(path, tiny_config("lorentz"))
    assert metadata == {"source": "released", "format": "hycoclip", "file": str(path),
                        "model": "test-released-meru-tiny", "iteration": 500000}
    return model.eval()


def test_every_tensor_lands_and_curvature_is_exp_of_stored_log(hycoclip_file, hycoclip_model):
    _, state = hycoclip_file
    assert isinstance(hycoclip_model, models.MERU)
    # `curv` stores log c: the loaded curvature is its exponential, 1.6.
    assert float(hycoclip_model.geometry.c.detach()) == pytest.approx(1.6, rel=1e-6)
    assert float(hycoclip_model.geometry.c.detach()) == pytest.approx(math.exp(float(state["curv"])), rel=1e-6)
    own = hycoclip_model.state_dict()
    converted = convert_meru_state_dict(state)
    assert set(converted) == set(own)
    for key, value in converted.items():
        assert torch.equal(own[key].cpu(), value), key
    # HyCoCLIP's colour buffers are kept as stored: ImageNet's std in both, not ImageNet's mean.
    assert hycoclip_model.pixel_mean.flatten().tolist() == pytest.approx([0.229, 0.224, 0.225])
    assert torch.equal(hycoclip_model.pixel_mean, hycoclip_model.pixel_std)
    torch.testing.assert_close(hycoclip_model.textual.token_embedding.weight.detach(),
                               state["textual.token_embed.weight"])
    assert not hycoclip_model.visual.trunk.pos_embed.requires_grad  # fixed sin-cos, as in HyCoCLIP


def test_embeddings_match_hand_written_forward(hycoclip_file, hycoclip_model):
    _, state = hycoclip_file
    tokens = tokens_batch()
    images = torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(12))
    with torch.no_grad():
        text = hycoclip_model.encode_text(tokens)
        image = hycoclip_model.encode_image(images)
    close(text, meru_lift(reference_text_features(state, tokens), state["textual_alpha"], state["curv"]))
    close(image, meru_lift(reference_image_features(state, images), state["visual_alpha"], state["curv"]))
    # On the hyperboloid of curvature -1.6: <x, x>_L = -1/c for every embedding.
    for points in (text, image):
        lorentz_norm = points[:, 1:].pow(2).sum(-1) - points[:, 0].pow(2)
        close(lorentz_norm, torch.full_like(lorentz_norm, -1 / 1.6), tol=1e-4)


def test_load_model_file_detects_hycoclip_by_name_and_by_colour_statistics(hycoclip_file, tmp_path):
    path, state = hycoclip_file
    model, metadata = models.load_model_file(path, tiny_config("lorentz"), expected_geometry="lorentz")
    assert metadata["format"] == "hycoclip" and metadata["iteration"] == 500000
    # A renamed training file: no name to go by, HyCoCLIP's colour buffers decide.
    renamed = tmp_path / "checkpoint_final.pth"
    torch.save({"model": state}, renamed)
    again, metadata = models.load_model_file(renamed, tiny_config("lorentz"))
    assert metadata == {"source": "released", "format": "hycoclip", "file": str(renamed),
                        "model": "test-released-meru-tiny"}
    for (key, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), key
    # A MERU file (ImageNet mean, not std) under the same name stays a MERU file.
    meru = tmp_path / "checkpoint_00005000.pth"
    torch.save({"model": released_state_dict("lorentz")}, meru)
    _, metadata = models.load_model_file(meru, tiny_config("lorentz"))
    assert "format" not in metadata and metadata["source"] == "released"
    assert not has_hycoclip_pixel_statistics(released_state_dict("lorentz"))
    with pytest.raises(CheckpointError, match="expected a euclidean model"):
        models.load_model_file(path, tiny_config("lorentz"), expected_geometry="euclidean")


def test_model_name_from_width_then_file_name(tmp_path):
    def vit(width):
        return {"visual.cls_token": torch.zeros(1, 1, width), "curv": torch.zeros(())}

    assert infer_hycoclip_model_name(vit(384), tmp_path / "hycoclip_vit_s.pth") == "meru-vit-s"
    assert infer_hycoclip_model_name(vit(768)) == "meru-vit-b"
    assert infer_hycoclip_model_name(vit(64), tmp_path / "hycoclip_vit_b.pth") == "meru-vit-b"
    with pytest.warns(UserWarning, match=r"hycoclip_vit_s\.pth.*meru-vit-s.*meru-vit-l"):
        assert infer_hycoclip_model_name(vit(1024), tmp_path / "hycoclip_vit_s.pth") == "meru-vit-l"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # MERU's rule must not read "hycoclip_vit_b" as "clip_vit_b"
        assert infer_hycoclip_model_name(vit(768), tmp_path / "hycoclip_vit_b.pth") == "meru-vit-b"
    with pytest.raises(CheckpointError, match=r"hycoclip_tiny\.pth.*ViT width 64.*model_name="):
        infer_hycoclip_model_name(vit(64), tmp_path / "hycoclip_tiny.pth")


def test_damaged_or_wrong_files_are_refused_by_name(tmp_path):
    state = hycoclip_state_dict()
    del state["textual.ln_final.bias"]
    broken = write_training_file(tmp_path / "hycoclip_broken.pth", state)
    with pytest.raises(CheckpointError, match=r"hycoclip_broken\.pth.*missing keys.*textual\.ln_final\.bias"):
        models.load_model_file(broken, tiny_config("lorentz"))

    clip_state = released_state_dict("euclidean")  # a CLIP baseline under a HyCoCLIP name
    clip_path = tmp_path / "hycoclip_clip.pth"
    torch.save({"model": clip_state}, clip_path)
    with pytest.raises(CheckpointError, match=r"hycoclip_clip\.pth.*missing keys.*'curv'.*learned curvature"):
        models.load_model_file(clip_path, tiny_config("lorentz"))

    no_model = tmp_path / "hycoclip_optimizer_only.pth"
    torch.save({"optimizer": {"state": {}, "param_groups": []}, "iteration": 3}, no_model)
    with pytest.raises(CheckpointError, match=r"hycoclip_optimizer_only\.pth.*'model'.*\['iteration', 'optimizer'\]"):
        models.load_hycoclip_checkpoint(no_model)

    good = write_training_file(tmp_path / "hycoclip_good.pth", hycoclip_state_dict())
    with pytest.raises(CheckpointError, match=r"hycoclip_good\.pth.*Lorentz.*euclidean.*expected a lorentz"):
        models.load_hycoclip_checkpoint(good, tiny_config("euclidean"))
    truncated = tmp_path / "hycoclip_truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"HyCoCLIP checkpoint .*hycoclip_truncated\.pth"):
        models.load_hycoclip_checkpoint(truncated, tiny_config("lorentz"))
