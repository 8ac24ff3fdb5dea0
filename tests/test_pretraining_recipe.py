"""The pretraining recipe's parts: augmentation, weight decay, training length, quality summary."""

import math

import geoopt
import pytest
import torch
from hypothesis import given, strategies as st

import models
from benchmarks.augmentation import Augmentation
from benchmarks.pretrain import DEFAULT_RECIPE, default_settings
from models.distributed import World
from models.training import TrainingLoop, decays


def _images(count=6, size=16, seed=0):
    return torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_identity_augmentation_returns_the_images():
    images = _images()
    augmentation = Augmentation(min_area=1.0, max_aspect=1.0, brightness=0.0, contrast=0.0)
    out = augmentation.apply(images, augmentation.draw(len(images), seed=3, step=5))
    torch.testing.assert_close(out, images, atol=1e-6, rtol=0)


@given(seed=st.integers(0, 2**31), step=st.integers(0, 10**6), count=st.integers(1, 64))
def test_augmentation_parameters_stay_in_their_ranges(seed, step, count):
    augmentation = Augmentation()
    width, height, x_offset, y_offset, brightness, contrast = augmentation.draw(count, seed=seed, step=step).unbind(1)
    assert ((width > 0) & (width <= 1) & (height > 0) & (height <= 1)).all()
    # The crop stays inside the image: |centre| + half side <= 1 in [-1, 1] coordinates.
    assert (x_offset.abs() + width <= 1 + 1e-6).all() and (y_offset.abs() + height <= 1 + 1e-6).all()
    assert (width * height >= augmentation.min_area / augmentation.max_aspect - 1e-6).all()
    assert ((brightness - 1).abs() <= augmentation.brightness + 1e-6).all()
    assert ((contrast - 1).abs() <= augmentation.contrast + 1e-6).all()


def test_augmentation_depends_on_seed_and_step_only_and_shards_like_the_batch():
    augmentation = Augmentation()
    drawn = augmentation.draw(8, seed=1, step=7)
    assert torch.equal(drawn, augmentation.draw(8, seed=1, step=7))
    assert not torch.equal(drawn, augmentation.draw(8, seed=1, step=8))
    assert not torch.equal(drawn, augmentation.draw(8, seed=2, step=7))
    images = _images(8)
    whole = augmentation.apply(images, drawn)
    # Two processes each augment their slice of the global batch: together, the one-process batch.
    halves = [augmentation.apply(World(rank, 2).shard(images), World(rank, 2).shard(drawn)) for rank in (0, 1)]
    torch.testing.assert_close(torch.cat(halves), whole)


def test_augmented_images_stay_in_the_pixel_range_and_change():
    images = _images(16)
    augmentation = Augmentation(brightness=0.5, contrast=0.5)
    out = augmentation.apply(images, augmentation.draw(16, seed=0, step=0))
    assert out.min() >= 0 and out.max() <= 1 and out.shape == images.shape
    assert (out - images).abs().mean() > 0.05


@pytest.mark.parametrize("options", [{"min_area": 0.0}, {"min_area": 1.5}, {"max_aspect": 0.5},
                                     {"brightness": 1.0}, {"contrast": -0.1}])
def test_bad_augmentation_options_are_refused(options):
    with pytest.raises(ValueError, match=next(iter(options))):
        Augmentation(**options)


def test_weight_decay_shrinks_matrices_only():
    model = models.create_model("meru-tiny")
    named = dict(model.named_parameters())
    assert decays(named["visual_proj"]) and decays(named["visual.stages.0.0.weight"])
    assert not any(decays(named[name]) for name in ("logit_scale", "visual_alpha", "geometry.log_c"))
    assert not any(decays(p) for n, p in named.items() if n.endswith("bias"))
    point = geoopt.ManifoldParameter(torch.zeros(2, 3), manifold=geoopt.Sphere())
    assert not decays(point)


def test_decoupled_weight_decay_is_a_shrink_by_lr_times_decay():
    """With a zero gradient Adam moves nothing: what is left is the decay, ``w ← (1 − lr·λ) w``."""
    matrix = torch.nn.Parameter(torch.full((3, 4), 2.0))
    gain = torch.nn.Parameter(torch.full((4,), 2.0))
    loop = TrainingLoop([matrix, gain], lr=0.01, weight_decay=0.5, progress=False)
    with loop:
        loop.step(lambda: {"loss": 0.0 * (matrix.sum() + gain.sum())})
    torch.testing.assert_close(matrix.detach(), torch.full((3, 4), 2.0 * (1 - 0.01 * 0.5)))
    torch.testing.assert_close(gain.detach(), torch.full((4,), 2.0))
    with pytest.raises(ValueError, match="weight decay"):
        TrainingLoop([matrix], lr=0.01, weight_decay=-1.0)


@pytest.mark.parametrize("train_pairs", [1, 500, 7200, 100_000])
def test_default_length_is_epochs_with_a_floor(train_pairs):
    settings = default_settings(train_pairs)
    epochs_steps = math.ceil(DEFAULT_RECIPE["epochs"] * train_pairs / DEFAULT_RECIPE["batch_size"])
    assert settings["steps"] == max(DEFAULT_RECIPE["min_steps"], epochs_steps)
    assert default_settings(train_pairs, epochs=100)["steps"] == max(
        DEFAULT_RECIPE["min_steps"], math.ceil(100 * train_pairs / DEFAULT_RECIPE["batch_size"]))
    with pytest.raises(ValueError, match="epochs"):
        default_settings(train_pairs, epochs=0)
    with pytest.raises(ValueError, match="train pair"):
        default_settings(0)


def test_report_shows_each_pretrained_model_once():
    from benchmarks.report import pretraining_table

    summary = {"steps": 400, "epochs": 7.11, "zero_shot_accuracy": 0.8, "linear_probe_accuracy": 0.875,
               "zero_shot_to_probe": 0.9142857, "membership_auc": 0.55, "curvature": 0.63, "seconds": 60.24}
    records = [{"model": "meru-tiny", "pretraining": summary}, {"model": "meru-tiny", "pretraining": summary},
               {"model": "released", "pretraining": None}]
    assert pretraining_table(records).splitlines()[2] == \
        "| meru-tiny | 400 | 7.110 | 80.0% | 87.5% | 0.914 | 0.550 | 0.630 | 60.2 |"
    assert pretraining_table(records[2:]) is None
