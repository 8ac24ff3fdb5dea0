"""Objectives against hand-computed values, the registry's errors, mismatch rules and the trainer."""

import math

import pytest
import torch

import unlearning
from manifolds import Euclidean, Lorentz
from unlearning import Batch, Embeddings
from unlearning.objectives import terms


def _log_softmax(values, index):
    return values[index] - math.log(sum(math.exp(v) for v in values))


def _batch(labels, forget, parents=None):
    labels = torch.tensor(labels)
    return Batch(images=None, tokens=None, labels=labels, forget=torch.tensor(forget),
                 parents=torch.tensor(parents) if parents is not None else torch.zeros_like(labels))


# Four unit vectors in the plane: images u_i and captions v_i (CLIP geometry: sim = cosine).
ANGLES_U = [0.0, 1.0, 2.0, 3.5]
ANGLES_V = [0.2, 1.1, 2.3, 3.0]


def _clip_embeddings(scale=2.0):
    u = torch.tensor([[math.cos(a), math.sin(a)] for a in ANGLES_U], dtype=torch.float64)
    v = torch.tensor([[math.cos(a), math.sin(a)] for a in ANGLES_V], dtype=torch.float64)
    return Embeddings(images=u, texts=v, scale=torch.tensor(scale, dtype=torch.float64))


def _hand_info_nce_row(i, target, scale=2.0):
    """Symmetric InfoNCE term of image i with caption `target` as its positive, by hand."""
    image_row = [scale * math.cos(ANGLES_U[i] - b) for b in ANGLES_V]
    caption_row = [scale * math.cos(a - ANGLES_V[target]) for a in ANGLES_U]
    return -0.5 * (_log_softmax(image_row, target) + _log_softmax(caption_row, i))


def test_ac_with_alpha_one_beta_zero_is_info_nce_with_mismatched_positives():
    # Rows 2 and 3 are forget pairs; labels 0,1 (parent 0) and 2,3 (parent 1). With the sibling
    # strategy, forget row 2 (label 2) can only take caption 3 and row 3 only caption 2.
    batch = _batch([0, 1, 2, 3], [False, False, True, True], parents=[0, 0, 1, 1])
    objective = unlearning.create_objective("ac", alpha=1.0, beta=0.0, mismatch="sibling")
    value = objective.loss(_clip_embeddings(), Euclidean(normalize=True), batch)["loss"].item()
    expected = (_hand_info_nce_row(0, 0) + _hand_info_nce_row(1, 1) + _hand_info_nce_row(2, 3)
                + _hand_info_nce_row(3, 2)) / 4
    assert value == pytest.approx(expected, rel=1e-12)


def test_ac_alpha_weights_the_forget_rows_and_beta_adds_positive_similarity():
    batch = _batch([0, 1, 2, 3], [False, False, True, True], parents=[0, 0, 1, 1])
    objective = unlearning.create_objective("ac", alpha=3.0, beta=0.5, mismatch="sibling")
    parts = objective.loss(_clip_embeddings(), Euclidean(normalize=True), batch)
    align = (_hand_info_nce_row(0, 0) + _hand_info_nce_row(1, 1)
             + 3.0 * (_hand_info_nce_row(2, 3) + _hand_info_nce_row(3, 2))) / (2 + 3.0 * 2)
    positive = (math.cos(ANGLES_U[2] - ANGLES_V[2]) + math.cos(ANGLES_U[3] - ANGLES_V[3])) / 2
    assert parts["align"].item() == pytest.approx(align, rel=1e-12)
    assert parts["positive"].item() == pytest.approx(positive, rel=1e-12)
    assert parts["loss"].item() == pytest.approx(align + 0.5 * positive, rel=1e-12)


def _lorentz_embeddings(seed=0, n=6, scale=5.0):
    geometry = Lorentz(c=0.7)
    generator = torch.Generator().manual_seed(seed)
    u = geometry.lift(0.8 * torch.randn(n, 3, generator=generator, dtype=torch.float64))
    v = geometry.lift(0.8 * torch.randn(n, 3, generator=generator, dtype=torch.float64))
    return geometry, Embeddings(images=u, texts=v, scale=torch.tensor(scale, dtype=torch.float64),
                                original_image_distances=geometry.dist0(u), original_text_distances=geometry.dist0(v))


def test_hac_without_entailment_and_norm_terms_equals_ac_on_the_same_model():
    geometry, embeddings = _lorentz_embeddings()
    batch = _batch([0, 1, 2, 3, 4, 5], [False, False, False, False, True, True], parents=[0, 0, 1, 1, 2, 2])
    torch.manual_seed(3)
    hac = unlearning.create_objective("hac", entailment_weight=0.0, norm_weight=0.0).loss(embeddings, geometry, batch)
    torch.manual_seed(3)
    ac = unlearning.create_objective("ac").loss(embeddings, geometry, batch)
    assert hac["loss"].item() == pytest.approx(ac["loss"].item(), rel=1e-12)
    assert set(hac) == {"loss", "align", "positive"}


def test_hac_adds_the_weighted_entailment_and_norm_terms_to_ac():
    geometry, embeddings = _lorentz_embeddings()
    embeddings.original_image_distances = geometry.dist0(geometry.lift(0.5 * embeddings.images[:, 1:]))  # moved: NR > 0
    batch = _batch([0, 1, 2, 3, 4, 5], [False, False, False, False, True, True], parents=[0, 0, 1, 1, 2, 2])
    options = dict(entailment_weight=0.5, norm_weight=2.0, own_cone_weight=1.5, retain_entailment_weight=0.25,
                   cone_margin=3.0)  # a wide margin: the forget rows sit inside the hinge
    torch.manual_seed(3)
    hac = unlearning.create_objective("hac", **options).loss(embeddings, geometry, batch)
    torch.manual_seed(3)
    ac = unlearning.create_objective("ac").loss(embeddings, geometry, batch)
    own = terms.own_cone_exit(embeddings, geometry, batch, margin=3.0)
    retain = terms.retain_entailment(embeddings, geometry, batch)
    norm = terms.norm_regularisation(embeddings, geometry)
    assert own > 0 and retain > 0 and norm > 0  # every term takes part
    expected = ac["loss"] + 0.5 * (1.5 * own + 0.25 * retain) + 2.0 * norm
    assert hac["loss"].item() == pytest.approx(expected.item(), rel=1e-12)


def test_norm_regularisation_is_zero_for_the_unchanged_model_and_matches_hand_value():
    geometry, embeddings = _lorentz_embeddings()
    assert terms.norm_regularisation(embeddings, geometry).item() == 0.0
    moved = Embeddings(images=embeddings.images, texts=embeddings.texts, scale=embeddings.scale,
                       original_image_distances=torch.zeros(6, dtype=torch.float64),
                       original_text_distances=geometry.dist0(embeddings.texts))
    expected = geometry.dist0(embeddings.images).pow(2).mean().item()  # origin has d0 = 0
    assert terms.norm_regularisation(moved, geometry).item() == pytest.approx(expected, rel=1e-12)


def test_positive_calibration_under_meru_is_minus_the_mean_distance():
    geometry, embeddings = _lorentz_embeddings()
    batch = _batch([0, 1, 2, 3, 4, 5], [False, True, False, True, False, False])
    distances = [geometry.dist(embeddings.images[i], embeddings.texts[i]).item() for i in (1, 3)]
    value = terms.positive_calibration(embeddings, geometry, batch).item()
    assert value == pytest.approx(-sum(distances) / 2, rel=1e-12)


def test_cone_terms_by_hand():
    geometry = Lorentz(c=1.0)
    text = geometry.lift(torch.tensor([[1.0, 0.0]], dtype=torch.float64))
    inside = geometry.lift(torch.tensor([[2.0, 0.0]], dtype=torch.float64))  # on the ray: angle 0
    outside = geometry.lift(torch.tensor([[-1.0, 0.5]], dtype=torch.float64))
    aperture = geometry.half_aperture(text).item()
    assert aperture == pytest.approx(math.asin(0.2 / math.sinh(1.0)), rel=1e-9)
    batch = _batch([0, 1], [True, False])
    embeddings = Embeddings(images=torch.cat([inside, outside]), texts=torch.cat([text, text]), scale=torch.tensor(1.0))
    # Forget row 0 sits on the axis of its caption's cone: the exit hinge is the whole aperture.
    exit_value = terms.own_cone_exit(embeddings, geometry, batch, margin=0.0).item()
    assert exit_value == pytest.approx(aperture, abs=1e-5)
    # Retain row 1 is outside its caption's cone: MERU's hinge is ext - aper > 0.
    angle = geometry.oxy_angle(text, outside).item()
    retain = terms.retain_entailment(embeddings, geometry, batch).item()
    assert retain == pytest.approx(angle - aperture, rel=1e-9) and retain > 0


def _hand_sub_batch_info_nce(rows, scale=2.0):
    """Mean symmetric InfoNCE over the pairs `rows` only (the other pairs are not negatives), by hand."""
    total = 0.0
    for position, i in enumerate(rows):
        image_row = [scale * math.cos(ANGLES_U[i] - ANGLES_V[j]) for j in rows]
        caption_row = [scale * math.cos(ANGLES_U[j] - ANGLES_V[i]) for j in rows]
        total += -0.5 * (_log_softmax(image_row, position) + _log_softmax(caption_row, position))
    return total / len(rows)


def test_ga_and_neggrad_are_ascent_on_the_forget_sub_batch():
    embeddings = _clip_embeddings()
    geometry = Euclidean(normalize=True)
    batch = _batch([0, 1, 2, 3], [False, True, False, True])
    forget, retain = _hand_sub_batch_info_nce([1, 3]), _hand_sub_batch_info_nce([0, 2])
    assert terms.sub_batch_info_nce(embeddings, geometry, batch.forget).item() == pytest.approx(forget, rel=1e-12)
    assert unlearning.create_objective("ga").loss(embeddings, geometry, batch)["loss"].item() == pytest.approx(-forget)
    value = unlearning.create_objective("neggrad+", gamma=0.3).loss(embeddings, geometry, batch)["loss"].item()
    assert value == pytest.approx(retain - 0.3 * forget)
    assert unlearning.create_objective("ft").loss(embeddings, geometry, batch)["loss"].item() == pytest.approx(retain)


def test_registry_errors_name_the_bad_input():
    with pytest.raises(ValueError, match="unknown objective 'nope'.*hac"):
        unlearning.create_objective("nope")
    with pytest.raises(ValueError, match="no option.*gamma.*options are"):
        unlearning.create_objective("hac", gamma=1.0)
    with pytest.raises(ValueError, match="needs a hyperbolic"):
        unlearning.create_objective("hac").validate(Euclidean(normalize=True), "clip-tiny")
    unlearning.create_objective("ac").validate(Euclidean(normalize=True))
    unlearning.create_objective("ac").validate(Lorentz())
    assert {"ac", "hac", "hac-parent", "ft", "ga", "neggrad+", "relabel"} <= set(unlearning.list_objectives())
    with pytest.raises(ValueError, match="already registered"):
        unlearning.register_objective("ac")(type("X", (), {}))


@pytest.mark.parametrize("strategy", unlearning.STRATEGIES)
def test_mismatch_strategies_respect_their_rule(strategy):
    labels = torch.tensor([0, 0, 1, 2, 3, 4, 5, 1])
    parents = torch.tensor([0, 0, 0, 1, 1, 2, 2, 0])
    forget = torch.tensor([True, False, False, True, False, True, False, True])
    for seed in range(20):
        targets = unlearning.mismatched_targets(labels, forget, parents, strategy=strategy,
                                                generator=torch.Generator().manual_seed(seed))
        assert torch.equal(targets[~forget], torch.nonzero(~forget).squeeze(1))
        for row in torch.nonzero(forget).squeeze(1).tolist():
            target = targets[row].item()
            assert labels[target] != labels[row]
            if strategy == "forget":
                assert forget[target]
            if strategy == "retain":
                assert not forget[target]
            if strategy == "sibling":
                assert parents[target] == parents[row]
    with pytest.raises(ValueError, match="mismatch strategy"):
        unlearning.mismatched_targets(labels, forget, parents, strategy="random")


def test_objectives_carry_their_trainer_defaults_and_none_are_borrowed():
    from dataclasses import dataclass

    from unlearning import registry

    assert {name: unlearning.trainer_defaults(name).lr for name in unlearning.list_objectives()} == {
        "ac": 1e-4, "hac": 1e-4, "hac-parent": 1e-4, "relabel": 1e-4, "ft": 1e-4, "ga": 1e-5, "neggrad+": 5e-5}

    @dataclass
    class Untuned:
        def loss(self, embeddings, geometry, batch):
            return {"loss": embeddings.images.sum()}

    unlearning.register_objective("untuned-test")(Untuned)
    try:
        with pytest.raises(ValueError, match="'untuned-test' was registered without trainer_defaults"):
            unlearning.trainer_defaults("untuned-test")
    finally:
        registry._OBJECTIVES.pop("untuned-test")


def test_hac_with_original_distances_computed_once_equals_a_frozen_copy_embedding_every_batch():
    """The trainer's one pass over the pairs before training (``original_distances``) gives the
    norm term exactly what a frozen copy of the model would give on each batch."""
    import copy

    import models
    from unlearning.trainer import original_distances

    torch.manual_seed(0)
    model = models.create_model("meru-tiny").eval()
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(10, 3, 32, 32, generator=generator)
    tokens = torch.randint(1, 400, (10, model.context_length), generator=generator)
    tokens[:, -1] = 49407  # end of text
    data = unlearning.UnlearningData(images=images, tokens=tokens, labels=torch.arange(10) % 3,
                                     forget=torch.arange(10) < 3, class_parents=torch.zeros(3, dtype=torch.long))
    rows = torch.tensor([7, 2, 5, 0])
    table = original_distances(model, data, rows.unique())
    assert torch.isnan(table[:, [1, 3]]).all()  # pairs never drawn are not embedded
    frozen = copy.deepcopy(model).requires_grad_(False)
    with torch.no_grad():
        expected_images = model.geometry.dist0(frozen.encode_image(images[rows]))
        expected_texts = model.geometry.dist0(frozen.encode_text(tokens[rows]))
    torch.testing.assert_close(table[0, rows], expected_images, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(table[1, rows], expected_texts, rtol=1e-5, atol=1e-6)


def test_reached_targets_needs_the_forget_target_and_the_retain_share():
    from unlearning.trainer import reached_targets

    start = {"forget_accuracy": 0.9, "retain_accuracy": 0.8}
    rule = dict(target_forget_accuracy=0.05, target_retain_kept=0.5)
    assert reached_targets({"forget_accuracy": 0.05, "retain_accuracy": 0.4}, start, **rule)  # 0.5 × 0.8, inclusive
    assert not reached_targets({"forget_accuracy": 0.05, "retain_accuracy": 0.39}, start, **rule)
    assert not reached_targets({"forget_accuracy": 0.06, "retain_accuracy": 0.8}, start, **rule)
    assert reached_targets({"forget_accuracy": 0.0, "retain_accuracy": 0.1}, start,
                           target_forget_accuracy=0.05, target_retain_kept=None)
    assert not reached_targets({"forget_accuracy": 0.0, "retain_accuracy": 0.8}, start,
                               target_forget_accuracy=None, target_retain_kept=0.9)
    # A probe without images of the measured classes gives NaN: no target is met, the run goes on.
    assert not reached_targets({"forget_accuracy": float("nan"), "retain_accuracy": 0.8}, start, **rule)
    assert not reached_targets({"forget_accuracy": 0.0, "retain_accuracy": float("nan")}, start, **rule)


class ScriptedProbe:
    """Probe metrics read from a script, one evaluation after another: the trainer's stopping
    logic, isolated from what a model happens to learn in a few steps."""

    def __init__(self, forget, retain):
        self.metrics = [{"forget_accuracy": f, "retain_accuracy": r} for f, r in zip(forget, retain)]
        self.calls = 0

    def __call__(self, model, world=None):
        self.calls += 1
        return self.metrics[self.calls - 1]


@pytest.mark.parametrize("target_retain_kept,stop_step", [(None, 5), (0.9, 15)])
def test_a_run_that_forgets_early_goes_on_until_the_retain_accuracy_recovers(target_retain_kept, stop_step):
    import models

    torch.manual_seed(0)
    model = models.create_model("meru-tiny")
    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(1, 400, (8, model.context_length), generator=generator)
    tokens[:, -1] = 49407  # end of text
    # Forgotten at step 5 while the retain accuracy has dropped to 0.5 of 0.8; recovered (0.75) at 15.
    probe = ScriptedProbe(forget=[0.9, 0.0, 0.0, 0.0, 0.0], retain=[0.8, 0.5, 0.6, 0.75, 0.8])
    data = unlearning.UnlearningData(images=torch.rand(8, 3, 32, 32, generator=generator), tokens=tokens,
                                     labels=torch.arange(8) % 2, forget=torch.arange(8) < 4,
                                     class_parents=torch.zeros(2, dtype=torch.long), probe=probe)
    result = unlearning.unlearn(model, data, "ac", steps=40, batch_size=4, forget_fraction=0.5, lr=0.0,
                                progress=False, eval_every=5, target_forget_accuracy=0.05,
                                target_retain_kept=target_retain_kept)
    assert result.stopped_early and result.steps == stop_step
    assert [e["step"] for e in result.evaluations] == list(range(0, stop_step + 1, 5))


def test_target_retain_kept_outside_zero_one_is_refused():
    import models

    model = models.create_model("meru-tiny")
    data = unlearning.UnlearningData(images=torch.rand(2, 3, 32, 32), tokens=torch.ones(2, model.context_length, dtype=torch.long),
                                     labels=torch.arange(2), forget=torch.tensor([True, False]),
                                     class_parents=torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="target_retain_kept must be in \\(0, 1\\], got 1.5"):
        unlearning.unlearn(model, data, "ac", steps=1, target_retain_kept=1.5, progress=False)
