"""Loading released MERU/CLIP checkpoints and open_clip state dicts.

The MERU text-encoder key names and shapes are written here by hand from MERU's source
(``facebookresearch/meru``: ``meru/models.py``, ``meru/encoders/text_encoders.py``,
``meru/encoders/image_encoders.py``), and the reference forward passes are computed from the raw
tensors without our model code, so that a wrong key mapping shows up as a wrong output.
"""

from __future__ import annotations

import functools
import json
import math

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

import models
from models import CheckpointError, ModelConfig, TextConfig, VisionConfig
from models.released import convert_meru_state_dict, infer_released_model_name

# ------------------------------------------------------------------------ a tiny MERU layout
EMBED = 16
VOCAB, CONTEXT, TEXT_WIDTH, TEXT_HEADS, TEXT_LAYERS = 64, 12, 32, 4, 2
VIT = dict(img_size=32, patch_size=8, depth=2, embed_dim=64, num_heads=2)  # a very small timm ViT
IMAGE_SIZE = 32


def tiny_config(geometry: str, *, text_width: int = TEXT_WIDTH, vocab: int = VOCAB, context: int = CONTEXT,
                name: str | None = None) -> ModelConfig:
    meru = geometry == "lorentz"
    return ModelConfig(
        name=name or f"test-released-{'meru' if meru else 'clip'}-tiny", geometry=geometry, embed_dim=EMBED,
        vision=VisionConfig(kind="timm", image_size=IMAGE_SIZE, timm_name="vit_tiny_patch16_224",
                            timm_kwargs={k: v for k, v in VIT.items() if k != "img_size"}),
        text=TextConfig(context_length=context, vocab_size=vocab, width=text_width, heads=TEXT_HEADS,
                        layers=TEXT_LAYERS),
        entailment_weight=0.2 if meru else 0.0, learn_curvature=meru,
    )


def meru_text_shapes(layers: int, width: int, vocab: int, context: int) -> dict:
    """MERU's ``TransformerTextEncoder`` state dict (prefixed ``textual.``), by hand from its source:
    ``token_embed`` (nn.Embedding), ``posit_embed`` (context, width), ``attn_mask`` (bool buffer),
    ``resblocks.i`` = ``_TransformerBlock`` (attn: nn.MultiheadAttention; ln_1; mlp: c_fc, gelu,
    c_proj; ln_2), ``ln_final``."""
    shapes = {
        "textual.token_embed.weight": (vocab, width),
        "textual.posit_embed": (context, width),
        "textual.attn_mask": (context, context),
    }
    for i in range(layers):
        p = f"textual.resblocks.{i}."
        shapes.update({
            p + "attn.in_proj_weight": (3 * width, width),
            p + "attn.in_proj_bias": (3 * width,),
            p + "attn.out_proj.weight": (width, width),
            p + "attn.out_proj.bias": (width,),
            p + "ln_1.weight": (width,),
            p + "ln_1.bias": (width,),
            p + "mlp.c_fc.weight": (4 * width, width),
            p + "mlp.c_fc.bias": (4 * width,),
            p + "mlp.c_proj.weight": (width, 4 * width),
            p + "mlp.c_proj.bias": (width,),
            p + "ln_2.weight": (width,),
            p + "ln_2.bias": (width,),
        })
    shapes["textual.ln_final.weight"] = (width,)
    shapes["textual.ln_final.bias"] = (width,)
    return shapes


def meru_vit(arch: str, **kwargs) -> nn.Module:
    """The image encoder as MERU's ``build_timm_vit`` creates it."""
    return timm.create_model(arch, pretrained=False, num_classes=0, global_pool="token", class_token=True,
                             norm_layer=nn.LayerNorm, **kwargs)


def released_state_dict(geometry: str, seed: int = 0, *, vocab: int = VOCAB, context: int = CONTEXT) -> dict:
    """Random weights in exactly the released layout (MERU's key names and shapes); a fresh dict."""
    return dict(_released_state_dict(geometry, seed, vocab, context))


@functools.lru_cache(maxsize=None)
def _released_state_dict(geometry: str, seed: int, vocab: int, context: int) -> dict:
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape, std=0.2, mean=0.0):
        return torch.randn(shape, generator=generator) * std + mean

    state = {}
    vit = meru_vit("vit_tiny_patch16_224", **VIT)
    for key, value in vit.state_dict().items():
        state["visual." + key] = rand(*value.shape, std=0.05, mean=1.0 if key.endswith("norm.weight")
                                      or ".norm1.weight" in key or ".norm2.weight" in key else 0.0)
    for key, shape in meru_text_shapes(TEXT_LAYERS, TEXT_WIDTH, vocab, context).items():
        if key == "textual.attn_mask":
            state[key] = torch.triu(torch.full(shape, float("-inf")), diagonal=1).bool()
        elif key.endswith(("ln_1.weight", "ln_2.weight", "ln_final.weight")):
            state[key] = rand(*shape, std=0.1, mean=1.0)
        else:
            state[key] = rand(*shape, std=0.2)
    state["visual_proj.weight"] = rand(EMBED, vit.embed_dim, std=vit.embed_dim**-0.5)
    state["textual_proj.weight"] = rand(EMBED, TEXT_WIDTH, std=TEXT_WIDTH**-0.5)
    state["logit_scale"] = torch.tensor(math.log(1 / 0.05))
    # MERU's buffers: view(-1, 1, 1) of [0, 1]-unit colour statistics.
    state["pixel_mean"] = torch.tensor([0.5, 0.4, 0.3]).view(-1, 1, 1)
    state["pixel_std"] = torch.tensor([0.2, 0.25, 0.3]).view(-1, 1, 1)
    if geometry == "lorentz":
        state["curv"] = torch.tensor(math.log(0.7))  # MERU: nn.Parameter(log(curv))
        state["visual_alpha"] = torch.tensor(-1.3)
        state["textual_alpha"] = torch.tensor(-0.9)
    return state


def write_released(path, state, **extra):
    torch.save({"model": state, **extra}, path)
    return path


def tokens_batch() -> torch.Tensor:
    """Right-padded token ids with the end-of-text token (the largest id) at varied positions."""
    generator = torch.Generator().manual_seed(1)
    tokens = torch.zeros(3, CONTEXT, dtype=torch.long)
    for row, end in enumerate((3, 7, CONTEXT - 1)):
        tokens[row, 0] = VOCAB - 2
        tokens[row, 1:end] = torch.randint(1, VOCAB - 2, (end - 1,), generator=generator)
        tokens[row, end] = VOCAB - 1
    return tokens


# ----------------------------------------------------------- reference forward passes by hand
def reference_text_features(state, tokens):
    """MERU's text encoder + projection on raw tensors (float64): pre-LN causal blocks, ln_final,
    EOS (argmax) pooling, ``textual_proj``."""
    s = {k: v.double() if v.is_floating_point() else v for k, v in state.items()}
    n, length = tokens.shape
    width, heads = TEXT_WIDTH, TEXT_HEADS
    head_dim = width // heads
    x = s["textual.token_embed.weight"][tokens] + s["textual.posit_embed"][:length]
    causal = torch.triu(torch.full((length, length), float("-inf"), dtype=torch.float64), diagonal=1)
    for i in range(TEXT_LAYERS):
        p = f"textual.resblocks.{i}."
        h = F.layer_norm(x, (width,), s[p + "ln_1.weight"], s[p + "ln_1.bias"], eps=1e-5)
        qkv = h @ s[p + "attn.in_proj_weight"].T + s[p + "attn.in_proj_bias"]
        q, k, v = (t.reshape(n, length, heads, head_dim).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(head_dim) + causal, dim=-1)
        attended = (weights @ v).transpose(1, 2).reshape(n, length, width)
        x = x + attended @ s[p + "attn.out_proj.weight"].T + s[p + "attn.out_proj.bias"]
        h = F.layer_norm(x, (width,), s[p + "ln_2.weight"], s[p + "ln_2.bias"], eps=1e-5)
        h = F.gelu(h @ s[p + "mlp.c_fc.weight"].T + s[p + "mlp.c_fc.bias"])
        x = x + h @ s[p + "mlp.c_proj.weight"].T + s[p + "mlp.c_proj.bias"]
    x = F.layer_norm(x, (width,), s["textual.ln_final.weight"], s["textual.ln_final.bias"], eps=1e-5)
    pooled = x[torch.arange(n), tokens.argmax(dim=-1)]
    return pooled @ s["textual_proj.weight"].T


def reference_image_features(state, images):
    """MERU's image path: normalise with its (3, 1, 1) statistics, a fresh timm ViT loaded with the
    raw ``visual.*`` tensors, ``visual_proj``."""
    vit = meru_vit("vit_tiny_patch16_224", **VIT)
    vit.load_state_dict({k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")})
    vit.eval()
    with torch.no_grad():
        pixels = (images - state["pixel_mean"]) / state["pixel_std"]
        return (vit(pixels) @ state["visual_proj.weight"].T).double()


def meru_lift(features, alpha, log_c):
    """MERU: ``exp_map0(features * alpha.exp(), curv.exp())`` (space part), time component
    ``sqrt(1/c + |x_s|^2)`` prepended (our full coordinates)."""
    c = math.exp(float(log_c))
    v = features * math.exp(float(alpha))
    r = math.sqrt(c) * v.norm(dim=-1, keepdim=True)
    space = torch.sinh(r) / r * v
    time = torch.sqrt(1.0 / c + space.pow(2).sum(-1, keepdim=True))
    return torch.cat([time, space], dim=-1)


def close(actual, expected, tol=1e-5):
    torch.testing.assert_close(actual.double(), expected.double(), atol=tol, rtol=tol)


# ----------------------------------------------------------------------------- released MERU
@pytest.fixture(scope="module")
def meru_file(tmp_path_factory):
    state = released_state_dict("lorentz")
    path = write_released(tmp_path_factory.mktemp("released") / "meru_vit_tiny.pth", state, iteration=123)
    return path, state


@pytest.fixture(scope="module")
def meru_model(meru_file):
    path, _ = meru_file
    model, metadata = models.load_released_checkpoint(path, tiny_config("lorentz"))
    assert metadata == {"source": "released", "file": str(path), "model": model.config.name}
    return model.eval()


def test_meru_text_matches_hand_written_forward(meru_file, meru_model):
    _, state = meru_file
    tokens = tokens_batch()
    expected = meru_lift(reference_text_features(state, tokens), state["textual_alpha"], state["curv"])
    with torch.no_grad():
        close(meru_model.encode_text(tokens), expected)
        close(meru_model.text_features(tokens), reference_text_features(state, tokens))


def test_meru_image_matches_fresh_timm_vit(meru_file, meru_model):
    _, state = meru_file
    images = torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(2))
    features = reference_image_features(state, images)
    with torch.no_grad():
        close(meru_model.encode_image(images), meru_lift(features, state["visual_alpha"], state["curv"]))


def test_meru_scalars_and_buffers_map_onto_ours(meru_file, meru_model):
    _, state = meru_file
    assert isinstance(meru_model, models.MERU)
    # `curv` holds log c in MERU's code: our geometry's curvature is its exponential.
    assert float(meru_model.geometry.c.detach()) == pytest.approx(0.7, rel=1e-6)
    assert float(meru_model.geometry.log_c.detach()) == pytest.approx(float(state["curv"]), rel=1e-6)
    assert float(meru_model.visual_alpha.detach()) == pytest.approx(-1.3)
    assert float(meru_model.textual_alpha.detach()) == pytest.approx(-0.9)
    assert float(meru_model.scale().detach()) == pytest.approx(20.0, rel=1e-5)
    assert meru_model.pixel_mean.shape == (1, 3, 1, 1)
    assert meru_model.pixel_mean.flatten().tolist() == pytest.approx([0.5, 0.4, 0.3])
    assert meru_model.pixel_std.flatten().tolist() == pytest.approx([0.2, 0.25, 0.3])
    torch.testing.assert_close(meru_model.textual_proj.detach(), state["textual_proj.weight"])
    torch.testing.assert_close(meru_model.visual_proj.detach(), state["visual_proj.weight"])
    block = meru_model.textual.transformer.resblocks[1]
    c_proj = state["textual.resblocks.1.mlp.c_proj.weight"]
    torch.testing.assert_close(block.mlp.c_proj.weight.detach(), c_proj)
    torch.testing.assert_close(block.ln_2.bias.detach(), state["textual.resblocks.1.ln_2.bias"])
    assert not meru_model.visual.trunk.pos_embed.requires_grad  # MERU's fixed sin-cos embedding


def test_every_released_key_is_consumed(meru_file):
    """Each MERU key but the attention mask maps to exactly one of ours, and that covers our model."""
    _, state = meru_file
    converted = convert_meru_state_dict(state)
    assert len(converted) == len(state) - 1 and "textual.attn_mask" not in converted
    model = models.create_model(tiny_config("lorentz"))
    own = model.state_dict()
    assert set(converted) == set(own)
    assert all(converted[k].shape == own[k].shape for k in own)


def test_clip_checkpoint_with_root_key(tmp_path):
    state = released_state_dict("euclidean", seed=3)
    path = write_released(tmp_path / "clip_vit_tiny.pth", state, root="/checkpoints/clip")
    model = models.load_released_checkpoint(path, tiny_config("euclidean"))[0].eval()
    assert isinstance(model, models.CLIP)
    tokens = tokens_batch()
    images = torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        close(model.encode_text(tokens), F.normalize(reference_text_features(state, tokens), dim=-1))
        close(model.encode_image(images), F.normalize(reference_image_features(state, images), dim=-1))


@pytest.mark.parametrize("name", ["meru-vit-s", "meru-vit-b", "meru-vit-l", "clip-vit-s"])
def test_full_size_released_layout_fits_our_configs(name):
    """The released architectures' key names and shapes (MERU's text encoder by hand, its timm ViT)
    convert onto our registered configs exactly; on the meta device, so nothing is allocated."""
    geometry, vit = name.split("-", 1)
    arch = f"vit_{dict(s='small', b='base', l='large')[vit[-1]]}_patch16_224"
    with torch.device("meta"):
        visual = meru_vit(arch, **({"num_heads": 12} if vit == "vit-s" else {}))  # MoCo-v3 ViT-S
        ours = models.create_model(name)
    width = visual.embed_dim
    released = {"visual." + k: v for k, v in visual.state_dict().items()}
    released.update({k: torch.empty(shape, device="meta")
                     for k, shape in meru_text_shapes(12, 512, 49408, 77).items()})
    released.update({
        "visual_proj.weight": torch.empty(512, width, device="meta"),
        "textual_proj.weight": torch.empty(512, 512, device="meta"),
        "logit_scale": torch.empty((), device="meta"),
        "pixel_mean": torch.empty(3, 1, 1, device="meta"),
        "pixel_std": torch.empty(3, 1, 1, device="meta"),
    })
    if geometry == "meru":
        scalars = ("curv", "visual_alpha", "textual_alpha")
        released.update({k: torch.empty((), device="meta") for k in scalars})
    assert infer_released_model_name(released) == name
    converted = convert_meru_state_dict(released)
    own = ours.state_dict()
    expected = set(own) - {"geometry._zero"}
    if geometry == "clip":
        expected -= {"visual_alpha", "textual_alpha"}  # MERU's CLIPBaseline has none
    assert set(converted) == expected
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(own[k].shape) for k in expected}


def test_model_name_inferred_from_weights_and_file_name(tmp_path):
    small = {"visual.cls_token": torch.zeros(1, 1, 768), "curv": torch.zeros(())}
    assert infer_released_model_name(small) == "meru-vit-b"
    assert infer_released_model_name({"visual.cls_token": torch.zeros(1, 1, 1024)}) == "clip-vit-l"
    unknown_width = {"visual.cls_token": torch.zeros(1, 1, 192)}
    assert infer_released_model_name(unknown_width, tmp_path / "meru_vit_s.pth") == "meru-vit-s"
    with pytest.warns(UserWarning, match="file name"):
        assert infer_released_model_name(small, tmp_path / "clip_vit_s.pth") == "meru-vit-b"
    with pytest.raises(CheckpointError, match="weights.pth"):
        infer_released_model_name({"visual.cls_token": torch.zeros(1, 1, 192)}, tmp_path / "weights.pth")


# ---------------------------------------------------------------------------------- errors
def test_wrong_geometry_is_rejected(meru_file, tmp_path):
    path, _ = meru_file
    with pytest.raises(CheckpointError, match=r"meru_vit_tiny\.pth.*curv"):
        models.load_released_checkpoint(path, tiny_config("euclidean"))
    with pytest.raises(CheckpointError, match=r"meru_vit_tiny\.pth.*curv"):
        models.load_released_checkpoint(path, "clip-vit-s")
    clip_path = write_released(tmp_path / "clip_vit_s.pth", released_state_dict("euclidean"))
    with pytest.raises(CheckpointError, match=r"clip_vit_s\.pth.*lorentz.*curv"):
        models.load_released_checkpoint(clip_path, "meru-vit-s")
    with pytest.raises(CheckpointError, match=r"clip_vit_s\.pth.*unknown model"):
        models.load_released_checkpoint(clip_path, "hyperbolic-vit-z")


def test_missing_unexpected_and_mis_shaped_keys_are_listed(tmp_path):
    state = released_state_dict("lorentz")
    del state["textual.resblocks.1.ln_2.bias"]
    state["textual.extra_head.weight"] = torch.zeros(3)
    path = write_released(tmp_path / "meru_broken.pth", state)
    with pytest.raises(CheckpointError) as error:
        models.load_released_checkpoint(path, tiny_config("lorentz"))
    message = str(error.value)
    assert "meru_broken.pth" in message
    assert "resblocks.1.ln_2.bias" in message and "textual.extra_head.weight" in message

    path = write_released(tmp_path / "meru_other_width.pth", released_state_dict("lorentz"))
    with pytest.raises(CheckpointError, match=r"meru_other_width\.pth.*shape mismatches.*token_embedding"):
        models.load_released_checkpoint(path, tiny_config("lorentz", text_width=48))


def test_unreadable_files_are_rejected(meru_file, tmp_path):
    path, _ = meru_file
    truncated = tmp_path / "meru_truncated.pth"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="meru_truncated.pth"):
        models.load_released_checkpoint(truncated, tiny_config("lorentz"))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match="garbage.pth"):
        models.load_released_checkpoint(garbage)
    with pytest.raises(CheckpointError, match="absent.pth"):
        models.load_released_checkpoint(tmp_path / "absent.pth")
    not_a_dict = tmp_path / "list.pth"
    torch.save([1, 2, 3], not_a_dict)
    with pytest.raises(CheckpointError, match="list.pth.*'model'"):
        models.load_released_checkpoint(not_a_dict)


def test_out_of_range_scalars_warn(tmp_path):
    state = released_state_dict("lorentz")
    state["visual_alpha"] = torch.tensor(0.01)
    path = write_released(tmp_path / "meru_drifted.pth", state)
    with pytest.warns(UserWarning, match="visual_alpha"):
        models.load_released_checkpoint(path, tiny_config("lorentz"))


# ------------------------------------------------------------------------------------ open_clip
OPEN_CLIP_CFG = {
    "embed_dim": 24,
    "quick_gelu": True,  # OpenAI-style activation: our towers must honour the flag
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 48, "patch_size": 8, "head_width": 24},
    "text_cfg": {"context_length": CONTEXT, "vocab_size": VOCAB, "width": 32, "heads": 4, "layers": 2},
}
OPENAI_MEAN = torch.tensor((0.48145466, 0.4578275, 0.40821073)).view(1, 3, 1, 1)
OPENAI_STD = torch.tensor((0.26862954, 0.26130258, 0.27577711)).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def open_clip_model():
    import open_clip

    torch.manual_seed(5)
    cfg = {k: v for k, v in OPEN_CLIP_CFG.items()}
    model = open_clip.model.CLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"], quick_gelu=True)
    with torch.no_grad():  # move every weight off its initial value (LayerNorms included)
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return model.eval()


def assert_matches_open_clip(ours, reference, mean=OPENAI_MEAN, std=OPENAI_STD):
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    tokens = tokens_batch()
    ours.eval()
    with torch.no_grad():
        close(ours.encode_image(images), reference.encode_image((images - mean) / std, normalize=True))
        close(ours.encode_text(tokens), reference.encode_text(tokens, normalize=True))
        assert float(ours.logit_scale.detach()) == pytest.approx(float(reference.logit_scale.detach()))


def test_open_clip_state_dict_from_config_dict(open_clip_model, tmp_path):
    path = tmp_path / "tiny_open_clip.pt"
    torch.save(open_clip_model.state_dict(), path)
    ours, metadata = models.load_open_clip_state_dict(path, OPEN_CLIP_CFG)
    assert metadata["source"] == "open_clip" and metadata["file"] == str(path)
    assert isinstance(ours, models.CLIP)
    torch.testing.assert_close(ours.visual_proj.detach(), torch.eye(24))
    assert_matches_open_clip(ours, open_clip_model)
    # our own checkpoint format keeps the open_clip architecture (QuickGELU included)
    models.save_checkpoint(tmp_path / "ours.pt", ours, {"source": "open_clip"})
    again, metadata = models.load_checkpoint(tmp_path / "ours.pt", expected_geometry="euclidean")
    assert metadata == {"source": "open_clip"}
    assert_matches_open_clip(again, open_clip_model)


def test_open_clip_wrapped_state_dict_with_module_prefix(open_clip_model, tmp_path):
    path = tmp_path / "epoch_3.pt"
    wrapped = {f"module.{k}": v for k, v in open_clip_model.state_dict().items()}
    torch.save({"epoch": 3, "name": "run", "state_dict": wrapped}, path)
    ours, _ = models.load_open_clip_state_dict(path, OPEN_CLIP_CFG, image_mean=(0.5, 0.5, 0.5),
                                               image_std=(0.25, 0.25, 0.25))
    half = torch.full((1, 3, 1, 1), 0.5)
    assert_matches_open_clip(ours, open_clip_model, mean=half, std=half / 2)


def test_open_clip_state_dict_by_architecture_name(open_clip_model, tmp_path):
    import open_clip

    name = "hu-test-tiny-vit"
    (tmp_path / f"{name}.json").write_text(json.dumps(OPEN_CLIP_CFG))
    open_clip.add_model_config(tmp_path / f"{name}.json")
    path = tmp_path / "tiny.bin"
    torch.save(open_clip_model.state_dict(), path)
    ours, _ = models.load_open_clip_state_dict(path, name)
    assert ours.config.name == f"open_clip:{name}"
    assert_matches_open_clip(ours, open_clip_model)


def test_open_clip_errors(open_clip_model, tmp_path):
    path = tmp_path / "tiny_open_clip.pt"
    torch.save(open_clip_model.state_dict(), path)
    wider = dict(OPEN_CLIP_CFG, text_cfg=dict(OPEN_CLIP_CFG["text_cfg"], width=64))
    with pytest.raises(CheckpointError, match=r"tiny_open_clip\.pt.*shape mismatches"):
        models.load_open_clip_state_dict(path, wider)
    state = open_clip_model.state_dict()
    del state["ln_final.bias"]
    torch.save(state, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match=r"partial\.pt.*missing keys.*textual\.ln_final\.bias"):
        models.load_open_clip_state_dict(tmp_path / "partial.pt", OPEN_CLIP_CFG)
    (tmp_path / "cut.pt").write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"cut\.pt"):
        models.load_open_clip_state_dict(tmp_path / "cut.pt", OPEN_CLIP_CFG)
    with pytest.raises(CheckpointError, match=r"tiny_open_clip\.pt.*unknown model"):
        models.load_open_clip_state_dict(path, "no-such-open-clip-arch")
    torch.save({"epoch": 3, "weights": [1, 2]}, tmp_path / "wrapped.pt")
    with pytest.raises(CheckpointError, match=r"wrapped\.pt.*'state_dict'.*found \['epoch', 'weights'\]"):
        models.load_open_clip_state_dict(tmp_path / "wrapped.pt", OPEN_CLIP_CFG)


# ------------------------------------------------------------------- the harness on a released file
CLI_CONFIG = "test-released-meru-cli"


@pytest.fixture
def cli_config(monkeypatch):
    """The tiny layout with MERU's full BPE vocabulary (the harness tokenizes with it), registered
    for this test only: the registry is swapped for a copy that pytest restores afterwards."""
    from models import config as config_module

    monkeypatch.setattr(config_module, "_CONFIGS", dict(config_module._CONFIGS))
    models.register_config(CLI_CONFIG)(lambda: tiny_config("lorentz", vocab=49408, context=20, name=CLI_CONFIG))


def test_run_unlearns_a_released_meru_file(cli_config, tmp_path, capsys):
    from benchmarks import run

    config = models.model_config(CLI_CONFIG)
    state = released_state_dict("lorentz", vocab=config.text.vocab_size, context=config.text.context_length)
    path = write_released(tmp_path / "meru_vit_tiny.pth", state)
    reference, _ = models.load_released_checkpoint(path, CLI_CONFIG)
    args = ["--geometry", "lorentz", "--checkpoint", str(path), "--forget", "star", "--steps", "2",
            "--no-early-stop", "--out", str(tmp_path / "out"), "--no-figures", "--no-progress"]

    assert run.main(args) == 2  # a ViT width of 64 does not say which released model this is
    assert "--model" in capsys.readouterr().err
    assert run.main([*args, "--model", CLI_CONFIG]) == 0, capsys.readouterr().err
    (record,) = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert record["model"] == CLI_CONFIG and record["forget"] == ["star"] and record["unlearning"]["steps"] == 2
    assert record["settings"]["target_forget_accuracy"] is None
    assert record["before"]["curvature"] == pytest.approx(reference.geometry.c.item())
    assert record["after"]["curvature"] != record["before"]["curvature"]  # the released weights were trained on

    assert run.main([*args, "--geometry", "euclidean", "--model", CLI_CONFIG]) == 2
    assert "holds a lorentz model" in capsys.readouterr().err
    assert run.main(["--model", CLI_CONFIG, "--out", str(tmp_path / "other")]) == 2
    assert "pass --checkpoint too" in capsys.readouterr().err


def test_load_model_file_reads_ours_and_released_files(meru_file, tmp_path):
    path, _ = meru_file
    released, metadata = models.load_model_file(path, tiny_config("lorentz"), expected_geometry="lorentz")
    assert metadata == {"source": "released", "file": str(path), "model": "test-released-meru-tiny"}
    # Both loaders give the same kind of answer for the same file.
    direct, direct_metadata = models.load_released_checkpoint(path, tiny_config("lorentz"))
    assert direct_metadata == metadata and type(direct) is type(released)
    models.save_checkpoint(tmp_path / "ours.pt", released, {"note": "converted"})
    ours, metadata = models.load_model_file(tmp_path / "ours.pt")
    assert metadata == {"note": "converted"}
    for (name, a), b in zip(released.state_dict().items(), ours.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(CheckpointError, match="expected a euclidean model"):
        models.load_model_file(path, tiny_config("lorentz"), expected_geometry="euclidean")
    with pytest.raises(CheckpointError, match="expected a euclidean model"):
        models.load_model_file(tmp_path / "ours.pt", expected_geometry="euclidean")
