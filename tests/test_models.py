"""MERU and CLIP models: losses against hand-computed numbers, zero-shot prototypes, our checkpoint
format, the factory, one Riemannian optimiser step, and mixed precision."""

from __future__ import annotations

import math

import geoopt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch
import torch.nn.functional as F

import models
from models import CheckpointError

EOS = 49407  # open_clip's end-of-text id: the largest id, so argmax pooling finds it


def batch(n=4, *, seed=0, context=20, size=32):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, size, size, generator=generator)
    tokens = torch.zeros(n, context, dtype=torch.long)
    for row in range(n):
        end = 2 + (3 * row) % (context - 2)
        tokens[row, 0] = EOS - 1
        tokens[row, 1:end] = torch.randint(1, 40000, (end - 1,), generator=generator)
        tokens[row, end] = EOS
    return images, tokens


@pytest.fixture(scope="module")
def meru():
    torch.manual_seed(0)
    return models.create_model("meru-tiny").eval()


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(1)
    return models.create_model("clip-tiny").eval()


# --------------------------------------------------------------------- hand-computed helpers
def lorentz_point(*space):
    """Full coordinates (time first) of the point with these space components, curvature -1."""
    return [math.sqrt(1.0 + sum(s * s for s in space)), *space]


def lorentz_dist(x, y):
    inner = sum(a * b for a, b in zip(x[1:], y[1:])) - x[0] * y[0]
    return math.acosh(-inner)


def symmetric_info_nce(logits):
    """Mean over i of (CE(row i, i) + CE(column i, i)) / 2, with plain math."""
    n = len(logits)

    def ce(values, target):
        return math.log(sum(math.exp(v) for v in values)) - values[target]

    rows = [0.5 * (ce(logits[i], i) + ce([logits[j][i] for j in range(n)], i)) for i in range(n)]
    return sum(rows) / n


def meru_aperture(x, min_radius=0.1):
    """MERU's half-aperture, c = 1: asin(2K / |x_s|)."""
    return math.asin(min(1.0, 2 * min_radius / math.sqrt(sum(s * s for s in x[1:]))))


def meru_exterior_angle(x, y):
    """MERU's oxy_angle, c = 1: acos((y_t + z x_t) / (|x_s| sqrt(z^2 - 1))), z = <x, y>_L."""
    z = sum(a * b for a, b in zip(x[1:], y[1:])) - x[0] * y[0]
    norm = math.sqrt(sum(s * s for s in x[1:]))
    return math.acos((y[0] + z * x[0]) / (norm * math.sqrt(z * z - 1)))


# ---------------------------------------------------------------------------------- losses
def test_info_nce_rows_2x2_against_hand_numbers():
    logits = torch.tensor([[2.0, 0.0], [1.0, 3.0]])
    # row 0: (log(1 + e^-2) + log(1 + e^-1)) / 2; row 1: (log(1 + e^-2) + log(1 + e^-3)) / 2
    expected = torch.tensor([0.2200948492805977, 0.08775768130835727])
    torch.testing.assert_close(models.info_nce_rows(logits), expected, atol=1e-7, rtol=1e-6)
    l = lambda x: math.log1p(math.exp(-x))  # noqa: E731
    assert expected.tolist() == pytest.approx([0.5 * (l(2) + l(1)), 0.5 * (l(2) + l(3))])


def test_info_nce_rows_3x3_with_targets():
    logits = [[1.0, 2.0, 0.0], [0.0, 1.0, 3.0], [2.0, 0.0, -1.0]]
    targets = [1, 2, 0]  # image i's caption

    def lse(values):
        return math.log(sum(math.exp(v) for v in values))

    expected = []
    for i, t in enumerate(targets):
        image_to_text = lse(logits[i]) - logits[i][t]
        text_to_image = lse([logits[j][t] for j in range(3)]) - logits[i][t]
        expected.append(0.5 * (image_to_text + text_to_image))
    # e.g. row 2: (lse(2, 0, -1) - 2 + lse(1, 0, 2) - 2) / 2
    assert expected[2] == pytest.approx(0.5 * (math.log(math.e**2 + 1 + math.e**-1) - 2
                                               + math.log(math.e + 1 + math.e**2) - 2))
    rows = models.info_nce_rows(torch.tensor(logits), torch.tensor(targets))
    torch.testing.assert_close(rows, torch.tensor(expected), atol=1e-6, rtol=1e-6)
    # identity targets: the default
    torch.testing.assert_close(models.info_nce_rows(torch.tensor(logits)),
                               models.info_nce_rows(torch.tensor(logits), torch.arange(3)))


IMAGES = [lorentz_point(0.9, 0.35), lorentz_point(0.5, -0.2)]
TEXTS = [lorentz_point(0.3, 0.1), lorentz_point(0.1, 0.4)]


def test_meru_losses_on_hand_made_lorentz_points(meru):
    assert float(meru.geometry.c.detach()) == pytest.approx(1.0)  # fresh model: c = 1
    scale = 1 / 0.07
    images, texts = torch.tensor(IMAGES), torch.tensor(TEXTS)
    logits = [[-scale * lorentz_dist(x, y) for y in TEXTS] for x in IMAGES]
    torch.testing.assert_close(meru.logits(images, texts), torch.tensor(logits), atol=1e-4, rtol=1e-5)
    expected_contrastive = symmetric_info_nce(logits)
    assert meru.contrastive_loss(images, texts).item() == pytest.approx(expected_contrastive, rel=1e-5)

    violations = [max(0.0, meru_exterior_angle(t, x) - meru_aperture(t)) for t, x in zip(TEXTS, IMAGES)]
    assert violations[0] == 0.0 and violations[1] > 0.1  # one image inside its caption's cone, one not
    expected_entailment = sum(violations) / 2
    assert meru.entailment_loss(images, texts).item() == pytest.approx(expected_entailment, rel=1e-5)


def test_pretraining_loss_decomposition(meru, clip, monkeypatch):
    images, tokens = batch(2)
    monkeypatch.setattr(meru, "encode_image", lambda _: torch.tensor(IMAGES))
    monkeypatch.setattr(meru, "encode_text", lambda _: torch.tensor(TEXTS))
    out = meru.pretraining_loss(images, tokens)
    scale = 1 / 0.07
    contrastive = symmetric_info_nce([[-scale * lorentz_dist(x, y) for y in TEXTS] for x in IMAGES])
    violations = [max(0.0, meru_exterior_angle(t, x) - meru_aperture(t)) for t, x in zip(TEXTS, IMAGES)]
    entailment = sum(violations) / 2
    assert set(out) == {"loss", "contrastive", "entailment"}
    assert out["contrastive"].item() == pytest.approx(contrastive, rel=1e-5)
    assert out["entailment"].item() == pytest.approx(entailment, rel=1e-5)
    assert out["loss"].item() == pytest.approx(contrastive + 0.2 * entailment, rel=1e-5)
    # Pretraining's entailment warm-up overrides the weight for one call; 0 drops the term.
    warming = meru.pretraining_loss(images, tokens, entailment_weight=0.05)
    assert warming["loss"].item() == pytest.approx(contrastive + 0.05 * entailment, rel=1e-5)
    assert set(meru.pretraining_loss(images, tokens, entailment_weight=0.0)) == {"loss", "contrastive"}

    # CLIP: cosine logits, the same InfoNCE, no entailment term
    u = [[1.0, 0.0, 0.0], [0.0, 0.6, 0.8]]
    v = [[0.8, 0.6, 0.0], [0.6, 0.0, 0.8]]
    monkeypatch.setattr(clip, "encode_image", lambda _: torch.tensor(u))
    monkeypatch.setattr(clip, "encode_text", lambda _: torch.tensor(v))
    out = clip.pretraining_loss(images, tokens)
    logits = [[scale * sum(a * b for a, b in zip(x, y)) for y in v] for x in u]
    assert set(out) == {"loss", "contrastive"}
    assert out["contrastive"].item() == pytest.approx(symmetric_info_nce(logits), rel=1e-5)
    assert out["loss"].item() == out["contrastive"].item()
    assert clip.config.entailment_weight == 0.0 and meru.config.entailment_weight == 0.2


# -------------------------------------------------------------------------------- zero-shot
def class_prompts():
    _, tokens = batch(5, seed=3)
    return [tokens[:3], tokens[3:]]


def test_meru_class_embeddings_average_in_tangent_space(meru):
    prompts = class_prompts()
    with torch.no_grad():
        result = meru.class_embeddings(prompts)
        features = [meru.text_features(p) for p in prompts]
        alpha = meru.textual_alpha.clamp(max=0).exp()
        c = meru.geometry.c.float()
        expected = []
        for f in features:
            v = f.mean(dim=0) * alpha
            r = c.sqrt() * v.norm()
            space = torch.sinh(r) / r * v
            expected.append(torch.cat([(1 / c + space.pow(2).sum()).sqrt().view(1), space]))
        torch.testing.assert_close(result, torch.stack(expected), atol=1e-5, rtol=1e-5)
        # not the same as lifting each prompt and averaging the points
        lifted_mean = torch.stack([meru.encode_text(p).mean(dim=0) for p in prompts])
        assert not torch.allclose(result, lifted_mean, atol=1e-4)
    assert result.shape == (2, meru.embed_dim + 1)


def test_clip_class_embeddings_normalise_average_normalise(clip):
    prompts = class_prompts()
    with torch.no_grad():
        result = clip.class_embeddings(prompts)
        expected = torch.stack([F.normalize(F.normalize(clip.text_features(p), dim=-1).mean(0), dim=-1)
                                for p in prompts])
    torch.testing.assert_close(result, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(result.norm(dim=-1), torch.ones(2))


# ---------------------------------------------------------------------- our checkpoint format
@pytest.mark.parametrize("name", ["meru-tiny", "clip-tiny"])
def test_checkpoint_round_trip(name, tmp_path):
    torch.manual_seed(2)
    model = models.create_model(name).eval()
    with torch.no_grad():
        model.visual_alpha.fill_(-1.7)
        model.logit_scale.fill_(3.3)
        if name.startswith("meru"):
            model.geometry.log_c.fill_(0.4)
    metadata = {"concepts": ["cat", "dog"], "step": 7, "nested": {"lr": 1e-4}}
    path = tmp_path / "model.pt"
    models.save_checkpoint(path, model, metadata, step=7)
    loaded, loaded_metadata = models.load_checkpoint(path, expected_geometry=model.config.geometry)
    loaded.eval()
    assert type(loaded) is type(model) and loaded.config == model.config
    assert loaded_metadata == metadata
    images, tokens = batch(3)
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(images), model.encode_image(images))
        assert torch.equal(loaded.encode_text(tokens), model.encode_text(tokens))
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    other = "euclidean" if name.startswith("meru") else "lorentz"
    with pytest.raises(CheckpointError, match="model.pt"):
        models.load_checkpoint(path, expected_geometry=other)


def test_corrupt_and_foreign_checkpoints(tmp_path):
    model = models.create_model("clip-tiny")
    path = tmp_path / "good.pt"
    models.save_checkpoint(path, model)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="cut.pt"):
        models.load_checkpoint(cut)
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {}}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pt"):
        models.load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="missing.pt"):
        models.load_checkpoint(tmp_path / "missing.pt")


def test_save_is_atomic(tmp_path, monkeypatch):
    torch.manual_seed(3)
    model = models.create_model("clip-tiny").eval()
    path = tmp_path / "ckpt.pt"
    models.save_checkpoint(path, model, {"version": 1})
    before = path.read_bytes()
    with torch.no_grad():
        model.logit_scale.fill_(1.0)

    def failing_save(obj, file, *args, **kwargs):
        file.write(b"partial garbage")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(RuntimeError, match="disk full"):
        models.save_checkpoint(path, model, {"version": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]  # no temporary file left
    _, metadata = models.load_checkpoint(path)
    assert metadata == {"version": 1}
    models.save_checkpoint(path, model, {"version": 2})  # a successful save replaces the file
    loaded, metadata = models.load_checkpoint(path)
    assert metadata == {"version": 2} and float(loaded.logit_scale.detach()) == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


# ----------------------------------------------------------------------------------- factory
def test_every_registered_name_has_a_config():
    names = models.list_models()
    assert {"meru-tiny", "clip-tiny", "meru-vit-s", "meru-vit-b", "meru-vit-l",
            "clip-vit-s", "clip-vit-b", "clip-vit-l"} <= set(names)
    assert {"poincare-tiny", "poincare-vit-b"} <= set(names)  # every registered geometry's family
    geometry_and_entailment = {"meru": ("lorentz", 0.2), "clip": ("euclidean", 0.0), "poincare": ("poincare", 0.2)}
    for name in names:
        config = models.model_config(name)
        assert config.name == name
        assert (config.geometry, config.entailment_weight) == geometry_and_entailment[name.split("-")[0]]
        assert models.ModelConfig.from_dict(config.to_dict()) == config
    vit_s = models.model_config("meru-vit-s")
    assert vit_s.embed_dim == 512 and vit_s.text.layers == 12 and vit_s.text.width == 512
    assert vit_s.vision.timm_kwargs.get("num_heads") == 12  # MoCo-v3 ViT-S


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError) as error:
        models.model_config("meru-vit-xxl")
    assert "meru-tiny" in str(error.value) and "clip-vit-b" in str(error.value)
    with pytest.raises(ValueError):
        models.create_model("definitely-not-a-model")


def test_model_classes_reject_the_wrong_geometry():
    with pytest.raises(ValueError, match="lorentz"):
        models.MERU(models.model_config("clip-tiny"))
    with pytest.raises(ValueError, match="euclidean"):
        models.CLIP(models.model_config("meru-tiny"))
    with pytest.raises(ValueError, match="geometry"):
        models.model_config("meru-tiny", geometry="spherical")


def test_projections_are_manifold_parameters(meru, clip):
    for model in (meru, clip):
        for projection in (model.visual_proj, model.textual_proj):
            assert isinstance(projection, geoopt.ManifoldParameter)
        assert model.visual_proj.shape == (model.embed_dim, model.visual.output_dim)
        assert model.textual_proj.shape == (model.embed_dim, model.textual.output_dim)
    assert isinstance(meru.geometry.log_c, torch.nn.Parameter)
    assert not isinstance(clip.geometry.c, torch.nn.Parameter)


def test_one_riemannian_adam_step_moves_curvature():
    torch.manual_seed(4)
    model = models.create_model("meru-tiny")
    optimizer = geoopt.optim.RiemannianAdam(model.parameters(), lr=1e-3)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    images, tokens = batch(2, size=16)
    loss = model.pretraining_loss(images, tokens)["loss"]
    loss.backward()
    assert model.geometry.log_c.grad is not None and float(model.geometry.log_c.grad) != 0.0
    optimizer.step()
    assert float(model.geometry.log_c.detach()) != float(before["geometry.log_c"])
    assert not torch.equal(model.visual_proj.detach(), before["visual_proj"])
    for name, parameter in model.named_parameters():
        assert torch.isfinite(parameter).all(), name


# ---------------------------------------------------------------------------- mixed precision
@pytest.mark.parametrize("name", ["meru-tiny", "clip-tiny"])
def test_bfloat16_autocast_keeps_geometry_and_losses_in_float32(name):
    torch.manual_seed(5)
    model = models.create_model(name)
    images, tokens = batch(2, size=16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        image_embeddings = model.encode_image(images)
        text_embeddings = model.encode_text(tokens)
        logits = model.logits(image_embeddings, text_embeddings)
        prototypes = model.class_embeddings([tokens[:1], tokens[1:]])
        losses = model.pretraining_loss(images, tokens)
    for tensor in (image_embeddings, text_embeddings, logits, prototypes, *losses.values()):
        assert tensor.dtype == torch.float32
        assert torch.isfinite(tensor).all()
    if name.startswith("meru"):  # the hyperbolic loss's gradients too
        losses["loss"].backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_training_mode_keeps_batchnorm_statistics_frozen():
    model = models.create_model("RN50")  # open_clip's ResNet image tower has BatchNorm layers
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and model.train_with_frozen_statistics() is model
    assert model.training and model.visual.training and not any(norm.training for norm in norms)
    before = [norm.running_mean.clone() for norm in norms]
    with torch.no_grad():
        model.encode_image(torch.rand(2, 3, model.image_size, model.image_size))
    assert all(torch.equal(a, norm.running_mean) for a, norm in zip(before, norms))


def test_conv_tower_runs_channels_last_with_contiguous_weights():
    """Every convolution of the conv tower sees channels-last input (the faster layout), the weights
    and their gradients stay contiguous (checkpoints, collectives), and the features equal those of
    the same convolutions on contiguous input to float rounding."""
    from models.towers import ConvTower

    torch.manual_seed(0)
    tower = ConvTower((8, 16))
    images = torch.rand(4, 3, 16, 16)
    layouts = []
    hooks = [m.register_forward_pre_hook(lambda _, args: layouts.append(
        args[0].is_contiguous(memory_format=torch.channels_last))) for m in tower.modules()
        if isinstance(m, torch.nn.Conv2d)]
    features = tower(images)
    for hook in hooks:
        hook.remove()
    assert len(layouts) == 4 and all(layouts)
    features.sum().backward()
    assert all(p.is_contiguous() and p.grad.is_contiguous() for p in tower.parameters())
    with torch.no_grad():
        plain = images
        for layer in tower.stages:  # each stage on contiguous input: the layout torch defaults to
            plain = layer(plain.contiguous())
        reference = plain.mean(dim=(-2, -1))
    torch.testing.assert_close(features.detach(), reference, rtol=1e-5, atol=1e-5)


def test_compact_vocabulary_gives_each_seen_token_its_own_row():
    from models.model import BPE_END, BPE_START

    model = models.create_model("meru-tiny").eval()
    size = model.config.text.vocab_size
    tokens = models.get_tokenizer(model)(["a red triangle", "a blue circle", "a green star"])
    model.build_vocabulary(tokens)
    seen = sorted(set(tokens.unique().tolist()) - {0, BPE_START, BPE_END})
    rows = model.token_map[seen]
    assert sorted(rows.tolist()) == list(range(1, len(seen) + 1))  # distinct rows, none shared
    assert model.token_map[0] == 0 and model.token_map[BPE_START] == size - 2
    assert model.token_map[BPE_END] == size - 1  # pooling at the argmax id still finds the end of text
    unseen = models.get_tokenizer(model)(["dodecahedron"])[0, 1:-1]
    unseen = unseen[(unseen != 0) & (unseen != BPE_END)]
    assert (model.token_map[unseen] == size - 3).all()  # the shared "unknown" row
    with torch.no_grad():
        texts = model.encode_text(tokens)
    assert not torch.allclose(texts[0], texts[1]) and not torch.allclose(texts[1], texts[2])
    with pytest.raises(ValueError, match="do not fit the compact vocabulary"):
        model.build_vocabulary(torch.arange(1, size + 10))


# ------------------------------------------------------------------ text towers stop at the last end of text

def _positions_seen(tower, tokens) -> tuple:
    """``(features, positions the transformer blocks ran on)`` of one forward of ``tower``."""
    seen = []
    hook = tower.transformer.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[1]))
    try:
        return tower(tokens), seen[0]
    finally:
        hook.remove()


def _whole_context_copy(tower):
    import copy

    from open_clip.transformer import TextTransformer

    plain = copy.deepcopy(tower)
    plain.__class__ = TextTransformer
    return plain


@given(lengths=st.lists(st.integers(0, 18), min_size=1, max_size=6), seed=st.integers(0, 2**16))
@settings(max_examples=25, deadline=None)
def test_text_tower_reads_up_to_the_last_end_of_text_and_matches_the_whole_context(lengths, seed):
    from models.towers import trimming_text_transformer

    torch.manual_seed(seed)
    # float64: the cut changes float32 rounding only (products of another shape), which would hide a real gap
    tower = trimming_text_transformer()(context_length=20, vocab_size=64, width=32, heads=2, layers=2,
                                        output_dim=None, proj_type="none").double()
    tokens = torch.zeros(len(lengths), 20, dtype=torch.long)
    for row, length in enumerate(lengths):  # start, `length` words, end of text (the largest id), padding
        tokens[row, 0] = 62
        tokens[row, 1:length + 1] = torch.randint(1, 62, (length,))
        tokens[row, length + 1] = 63
    trimmed, positions = _positions_seen(tower, tokens)
    assert positions == max(lengths) + 2
    plain = _whole_context_copy(tower)
    whole, whole_positions = _positions_seen(plain, tokens)
    assert whole_positions == 20
    torch.testing.assert_close(trimmed, whole, rtol=1e-10, atol=1e-10)
    # the gradients of the weights too: training on trimmed batches is training on whole ones
    trimmed.square().sum().backward()
    whole.square().sum().backward()
    for (name, mine), theirs in zip(tower.named_parameters(), plain.parameters()):
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-9, atol=1e-12, msg=name)


def test_text_towers_of_every_kind_trim_only_when_causal_with_end_of_text_pooling():
    from models.factory import open_clip_model_config
    from models.towers import trimming_text_transformer

    tokens = torch.zeros(3, 20, dtype=torch.long)  # every caption ends at position 11: 12 of 20 positions are read
    tokens[:, 0], tokens[:, 1:11], tokens[:, 11] = EOS - 1, torch.randint(1, 40000, (3, 10)), EOS
    open_clip_cfg = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
                     "text_cfg": {"context_length": 20, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    for model in (models.create_model("meru-tiny"), models.create_model(open_clip_model_config(open_clip_cfg))):
        assert isinstance(model.textual, trimming_text_transformer())
        ids = model.token_map[tokens] if model.config.text.compact_vocabulary else tokens
        with torch.no_grad():
            features, positions = _positions_seen(model.textual, ids)
            torch.testing.assert_close(features, _whole_context_copy(model.textual)(ids), rtol=1e-5, atol=1e-5)
        assert positions == 12
    # pooled at the last position, the tower must read the whole context
    last_pooled = trimming_text_transformer()(context_length=20, vocab_size=49408, width=32, heads=2, layers=1,
                                              output_dim=None, proj_type="none", pool_type="last")
    with torch.no_grad():
        assert _positions_seen(last_pooled, tokens)[1] == 20


def test_step_speed_times_trimmed_and_whole_context_text(capsys):
    from benchmarks import step_speed

    assert step_speed.main(["--captions", "shapes", "--steps", "1", "--repeats", "1", "--pairs", "64",
                            "--batch-size", "16"]) == 0
    printed = capsys.readouterr().out
    assert "captions of 'shapes'" in printed and "FT on CLIP (whole context)" in printed
    assert "whole context / trimmed, per method: FT on CLIP" in printed


def test_embedding_passes_use_the_device_batch_and_give_the_same_embeddings(meru, capsys):
    from benchmarks import step_speed
    from models.evaluation import embed_images, embed_texts, embedding_batch_size

    assert embedding_batch_size("cpu", "images") == 64 and embedding_batch_size("cpu", "texts") == 256
    assert embedding_batch_size("cuda", "images") == 512 and embedding_batch_size("cuda", "texts") == 1024
    images, tokens = batch(70)
    batches = []
    hook = meru.visual.register_forward_pre_hook(lambda module, args: batches.append(len(args[0])))
    try:
        default = embed_images(meru, images)
    finally:
        hook.remove()
    assert batches == [64, 6]
    torch.testing.assert_close(default, embed_images(meru, images, batch_size=512), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(embed_texts(meru, tokens), embed_texts(meru, tokens, batch_size=7), rtol=1e-5, atol=1e-5)
    assert step_speed.main(["--embedding", "--repeats", "1", "--pairs", "64"]) == 0
    printed = capsys.readouterr().out
    assert "default batch 64 on cpu" in printed and "batch   512:" in printed and "default batch 256" in printed
