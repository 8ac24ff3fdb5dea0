"""The geometry contract and registry: what a geometry must implement, what its registration
carries, and that models, objectives and audits read one cone radius."""

import math

import pytest
import torch

import models
from manifolds import Euclidean, Geometry, Lorentz, geometry_names, geometry_spec, register_geometry
from manifolds import geometry as geometry_module
from manifolds import lorentz_math as lm
from models.losses import entailment_rows


@pytest.fixture
def registry_snapshot():
    """Registrations made by a test are undone after it."""
    saved = dict(geometry_module._GEOMETRIES)
    yield
    geometry_module._GEOMETRIES.clear()
    geometry_module._GEOMETRIES.update(saved)


def test_the_built_in_geometries_are_registered_with_their_models():
    assert geometry_names()[:2] == ["lorentz", "euclidean"]
    lorentz, euclidean = geometry_spec("lorentz"), geometry_spec("euclidean")
    assert (lorentz.family, lorentz.display_name, lorentz.default_method, lorentz.hyperbolic) == ("meru", "MERU", "hac", True)
    assert (euclidean.family, euclidean.display_name, euclidean.default_method, euclidean.hyperbolic) == ("clip", "CLIP", "ac", False)
    assert lorentz.default_model == "meru-tiny" and euclidean.default_model == "clip-tiny"
    assert isinstance(models.create_model("meru-tiny"), models.MERU)
    assert isinstance(models.create_model("clip-vit-s").geometry, Euclidean)
    with pytest.raises(ValueError, match="unknown geometry 'spherical'; expected one of"):
        geometry_spec("spherical")


def test_registration_refuses_an_incomplete_or_foreign_class(registry_snapshot):
    class Incomplete(Euclidean):
        pass

    # Everything of the contract but one method: the class can be declared, not registered.
    NoCones = type("NoCones", (Geometry,), {name: (lambda self, *args, **kwargs: None)
                                            for name in Geometry.__abstractmethods__ - {"oxy_angle"}})
    with pytest.raises(TypeError, match=r"NoCones does not implement \['oxy_angle'\]"):
        register_geometry("nocones", geometry_class=NoCones, build=NoCones, family="nocones",
                          display_name="X", default_method="ac")
    with pytest.raises(TypeError, match="not a subclass of manifolds.Geometry"):
        register_geometry("plain", geometry_class=torch.nn.Module, build=torch.nn.Module, family="plain",
                          display_name="X", default_method="ac")
    with pytest.raises(ValueError, match="'lorentz' is already registered"):
        register_geometry("lorentz", geometry_class=Incomplete, build=Incomplete, family="other",
                          display_name="X", default_method="ac")
    with pytest.raises(ValueError, match="model family 'meru' is already taken"):
        register_geometry("other", geometry_class=Incomplete, build=Incomplete, family="meru",
                          display_name="X", default_method="ac")


def test_one_registration_gives_named_configs_and_models(registry_snapshot):
    """A geometry registered after `models` was imported still gets its model family."""

    class Scaled(Euclidean):
        pass

    register_geometry("scaled", geometry_class=Scaled, family="scaledclip", display_name="Scaled",
                      default_method="ac",
                      build=lambda *, curvature, learnable, min_radius: Scaled(normalize=True, min_radius=min_radius))
    assert {"scaledclip-tiny", "scaledclip-vit-b"} <= set(models.list_models())
    config = models.model_config("scaledclip-tiny")
    assert config.geometry == "scaled" and config.entailment_weight == 0.0 and not config.learn_curvature
    model = models.create_model("scaledclip-tiny", min_radius=0.25)
    assert type(model) is models.ImageTextModel and type(model.geometry) is Scaled
    assert model.geometry.min_radius == 0.25
    with pytest.raises(ValueError, match="MERU needs a 'lorentz' config"):
        models.MERU(config)


@pytest.mark.parametrize("min_radius", [0.05, 0.1, 0.4])
def test_the_cone_radius_of_the_config_is_the_one_everybody_reads(min_radius):
    model = models.create_model("meru-tiny", min_radius=min_radius)
    geometry = model.geometry
    assert geometry.min_radius == min_radius
    torch.manual_seed(0)
    texts = geometry.lift(torch.randn(6, 64) * 0.3)
    images = geometry.lift(torch.randn(6, 64) * 0.8)
    expected = lm.half_aperture(texts, c=geometry.c, min_radius=min_radius)
    torch.testing.assert_close(geometry.half_aperture(texts), expected)
    # The entailment loss (pretraining and HAC's terms) and the audit's cone test use that aperture.
    violation = torch.relu(geometry.oxy_angle(texts, images) - expected)
    torch.testing.assert_close(entailment_rows(geometry, texts, images), violation)
    from benchmarks.audits.geometry import in_cone

    assert in_cone(geometry, texts, images).tolist() == (geometry.oxy_angle(texts, images) <= expected).tolist()


def test_a_checkpoint_with_the_old_constant_buffer_still_loads(tmp_path):
    """Files written while Euclidean's zero curvature was a saved buffer hold ``geometry._zero``."""
    model = models.create_model("clip-tiny")
    models.save_checkpoint(tmp_path / "clip.pt", model, {"note": "new"})
    payload = torch.load(tmp_path / "clip.pt", weights_only=False)
    assert "geometry._zero" not in payload["state_dict"]
    payload["state_dict"]["geometry._zero"] = torch.zeros(())
    torch.save(payload, tmp_path / "old.pt")
    loaded, metadata = models.load_checkpoint(tmp_path / "old.pt")
    assert metadata == {"note": "new"} and float(loaded.geometry.c) == 0.0


def test_poincare_disk_radius_of_each_geometry():
    lorentz = Lorentz(c=0.5)
    x = lorentz.lift(torch.tensor([[0.0, 3.0], [1.0, 0.0]]))
    expected = torch.tanh(0.5 * math.sqrt(0.5) * lorentz.dist0(x))
    torch.testing.assert_close(lorentz.poincare_radius(x), expected)
    flat = Euclidean()
    torch.testing.assert_close(flat.poincare_radius(torch.tensor([[3.0, 4.0]])), torch.tanh(torch.tensor([2.5])))


def test_the_poincare_ball_runs_end_to_end(tmp_path, capsys):
    """The third geometry through both commands: pretraining, HAC with the parent cone, every
    audit, the report and the figures — with nothing but its module and one registration."""
    import json

    from benchmarks import pretrain, run

    checkpoint = tmp_path / "poincare.pt"
    assert pretrain.main(["--geometry", "poincare", "--steps", "40", "--batch-size", "32", "--out", str(checkpoint),
                          "--no-progress"]) == 0, capsys.readouterr().err
    assert "poincare-tiny on shapes" in capsys.readouterr().out
    out = tmp_path / "run"
    assert run.main(["--geometry", "poincare", "--checkpoint", str(checkpoint), "--method", "hac-parent",
                     "--steps", "3", "--no-early-stop", "--out", str(out), "--no-progress"]) == 0, capsys.readouterr().err
    (record,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert (record["geometry"], record["model"], record["unlearning"]["steps"]) == ("poincare", "poincare-tiny", 3)
    before, after = record["before"], record["after"]
    for key in ("forget_accuracy", "retain_accuracy", "mia_auc", "probe_forget_accuracy", "relearn_forget_accuracy",
                "forget_image_dist0", "forget_in_cone", "forget_in_parent_cone", "curvature"):
        assert after[key] is not None and math.isfinite(after[key]), key
    assert 0.1 <= after["curvature"] <= 10.0 and after["curvature"] != before["curvature"]  # learnable c, trained on
    assert after["forget_image_dist0"] > 0
    report = (out / "report.md").read_text()
    assert "hac-parent (poincare)" in report
    assert sorted(path.name for path in out.glob("*.png")) == [
        f"{kind}-hac-parent-poincare-triangle.png" for kind in ("alignment", "dist0", "embeddings")]
    # HAC refuses a flat geometry in the same words whatever the geometry registry holds.
    assert run.main(["--geometry", "euclidean", "--method", "hac", "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    assert "needs a hyperbolic geometry (lorentz, poincare), not euclidean" in capsys.readouterr().err
