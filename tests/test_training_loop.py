"""The shared training step (models.training): the same updates as a hand-written Riemannian Adam
loop, the per-step schedule, the optional clip, the non-finite guard, mixed precision, progress."""

import math

import geoopt
import pytest
import torch

import manifolds._precision
from manifolds import precision
from models.training import TrainingLoop, autocast


def _problem(seed=0):
    """A Euclidean weight and a point on a sphere, and a loss pulling both towards targets."""
    generator = torch.Generator().manual_seed(seed)
    sphere = geoopt.Sphere()
    weight = torch.nn.Parameter(torch.randn(4, 3, generator=generator))
    point = geoopt.ManifoldParameter(sphere.projx(torch.randn(5, generator=generator)), manifold=sphere)
    target = torch.randn(4, 3, generator=generator)
    direction = sphere.projx(torch.randn(5, generator=generator))

    def loss():
        fit = (weight - target).pow(2).sum()
        return {"loss": fit - 3.0 * (point * direction).sum(), "fit": fit}

    return [weight, point], loss


def test_steps_equal_a_hand_written_riemannian_adam_loop_bit_for_bit():
    parameters, loss = _problem()
    optimizer = geoopt.optim.RiemannianAdam(parameters, lr=0.05)
    expected = []
    for _ in range(6):
        parts = loss()
        optimizer.zero_grad(set_to_none=True)
        parts["loss"].backward()
        optimizer.step()
        expected.append(float(parts["loss"].detach()))
    reference = [p.detach().clone() for p in parameters]

    parameters, loss = _problem()
    with TrainingLoop(parameters, lr=0.05, progress=False) as loop:
        values = [loop.step(loss) for _ in range(6)]
    assert [v["loss"] for v in values] == expected
    assert all(set(v) == {"loss", "fit"} and isinstance(v["fit"], float) for v in values)
    assert all(torch.equal(p.detach(), r) for p, r in zip(parameters, reference))
    assert loop.steps == 6 and loop.seconds > 0


def test_schedule_sets_the_learning_rate_before_every_step_counting_from_the_start_step():
    parameters, loss = _problem()
    seen, used = [], []
    loop = TrainingLoop(parameters, lr=1.0, schedule=lambda step: seen.append(step) or 0.01 * (step + 1),
                        start_step=5, progress=False)

    def recording_loss():
        used.append(loop.optimizer.param_groups[0]["lr"])
        return loss()

    for _ in range(3):
        loop.step(recording_loss)
    assert seen == [5, 6, 7]
    assert used == pytest.approx([0.06, 0.07, 0.08])
    assert loop.steps == 8


def test_without_a_schedule_the_learning_rate_stays_put():
    parameters, loss = _problem()
    loop = TrainingLoop(parameters, lr=0.02, progress=False)
    loop.step(loss)
    assert loop.optimizer.param_groups[0]["lr"] == 0.02


def _gradient_norm(parameters):
    return float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in parameters])))


def test_gradients_are_clipped_only_when_asked():
    parameters, loss = _problem()
    TrainingLoop(parameters, lr=0.01, progress=False).step(loss)
    assert _gradient_norm(parameters) > 1.0  # the problem's gradients are large: clipping would show

    parameters, loss = _problem()
    TrainingLoop(parameters, lr=0.01, max_grad_norm=0.5, progress=False).step(loss)
    assert _gradient_norm(parameters) == pytest.approx(0.5, rel=1e-4)


def test_a_non_finite_loss_raises_naming_the_step():
    parameters, loss = _problem()
    calls = []

    def diverging():
        calls.append(1)
        parts = loss()
        return {**parts, "loss": parts["loss"] * (math.nan if len(calls) == 3 else 1.0)}

    loop = TrainingLoop(parameters, lr=0.01, name="pretraining", start_step=10, progress=False)
    loop.step(diverging)
    loop.step(diverging)
    with pytest.raises(FloatingPointError, match=r"^pretraining loss became nan at step 13$"):
        loop.step(diverging)


def test_the_guard_can_be_off_for_audits_that_report_what_they_find():
    parameters, _ = _problem()
    loop = TrainingLoop(parameters, lr=0.01, check_finite=False, progress=False)
    values = loop.step(lambda: {"loss": parameters[0].pow(2).sum() * math.inf})
    assert values["loss"] == math.inf


def test_autocast_is_a_no_op_on_cpu_and_bfloat16_when_enabled():
    a = torch.randn(3, 3)
    with autocast("cpu"):
        assert not torch.is_autocast_enabled("cpu")
        assert (a @ a).dtype == torch.float32
    with autocast(torch.device("cuda"), enabled=False):
        assert not torch.is_autocast_enabled("cuda")
    with autocast("cpu", enabled=True):  # explicit: unlearn(mixed_precision=True) on a CPU
        assert (a @ a).dtype == torch.bfloat16


def test_the_loss_runs_under_the_loops_precision():
    weight = torch.nn.Parameter(torch.randn(3, 3))
    dtypes = []

    def loss():
        product = weight @ weight
        dtypes.append(product.dtype)
        return {"loss": product.float().sum()}

    TrainingLoop([weight], lr=0.01, progress=False).step(loss)
    TrainingLoop([weight], lr=0.01, mixed_precision=True, progress=False).step(loss)
    assert dtypes == [torch.float32, torch.bfloat16]


def test_progress_can_be_off(capsys):
    parameters, loss = _problem()
    with TrainingLoop(parameters, lr=0.01, total_steps=2, progress=False, description="quiet") as loop:
        loop.step(loss)
        loop.show(forget="0.50")
    assert "quiet" not in capsys.readouterr().err

    with TrainingLoop(parameters, lr=0.01, total_steps=2, description="loud") as loop:
        loop.step(loss)
    err = capsys.readouterr().err
    assert "loud" in err and "loss=" in err


def test_the_model_and_the_geometry_share_one_precision_helper():
    import models.model

    assert manifolds._precision.full_precision is precision.full_precision
    assert models.model.upcast is precision.upcast and models.model.autocast_off is precision.autocast_off
    half = torch.ones(2, dtype=torch.bfloat16)
    assert precision.upcast(half).dtype == torch.float32 and precision.upcast(3) == 3
    with torch.autocast("cpu", dtype=torch.bfloat16), precision.autocast_off("cpu"):
        assert not torch.is_autocast_enabled("cpu")
