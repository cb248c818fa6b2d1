"""The THA4 teacher (kyara.teacher.tha4, kyara.nn.unet): architecture invariants, official key names,
strict loading from a directory of weight files. Equality with the official code is checked by
benchmarks/tha4_teacher_equal.py (it needs the official source, which CI does not have)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kyara.errors import KyaraError, WeightsError
from kyara.nn.unet import AttentionBlock, ConditionedUNet, UNetConfig, time_embedding
from kyara.teacher import TEACHERS, load_teacher
from kyara.teacher.tha4 import FILE_NAMES, THA4Outputs, THA4Teacher, build_tha4, load_tha4


@pytest.fixture(scope="module")
def meta_tha4():
    return build_tha4("meta")


def test_parameter_counts_match_the_official_networks(meta_tha4):
    # Counted from the official classes built with mode_07's configurations (benchmarks/tha4_teacher_equal.py).
    counts = {role: sum(p.numel() for p in net.parameters()) for role, net in meta_tha4.networks().items()}
    assert counts == {"eyebrow_decomposer": 31_479_434, "eyebrow_combiner": 31_535_878, "face_morpher": 31_605_002,
                      "body_morpher": 34_682_119, "upscaler": 35_015_655}


def test_state_dict_keys_follow_the_official_checkpoints(meta_tha4):
    body = meta_tha4.body_morpher.state_dict()
    for key in ("body.time_embed.1.weight", "body.time_embed.3.bias", "body.cond_embed.0.weight",
                "body.cond_embed.2.bias", "body.first_conv.weight",
                "body.down_blocks.0.res_blocks.0.cond0_layers.1.weight",
                "body.down_blocks.0.res_blocks.0.cond1_layers.1.weight",
                "body.down_blocks.1.res_blocks.0.skip.weight", "body.down_blocks.0.downsample.conv0.weight",
                "body.down_blocks.4.attention_blocks.0.qkv.weight", "body.middle_blocks.1.module.qkv.weight",
                "body.middle_blocks.6.norm1.weight", "body.up_blocks.0.attention_blocks.1.conv.bias",
                "body.up_blocks.0.resnet_blocks.1.skip.weight", "body.up_blocks.3.upsample.conv1.weight",
                "body.last.0.weight", "body.last.2.weight"):
        assert key in body, key
    assert "body.down_blocks.4.downsample.conv0.weight" not in body    # the last level does not downsample
    assert "body.up_blocks.4.upsample.conv0.weight" not in body        # level 0 does not upsample
    up = meta_tha4.upscaler.state_dict()
    assert tuple(up["coarse_image_conv.weight"].shape) == (32, 10, 3, 3)
    assert tuple(up["body.last.2.weight"].shape) == (7, 32, 3, 3)
    assert tuple(up["body.down_blocks.5.attention_blocks.0.qkv.weight"].shape) == (768, 256, 1, 1)
    # The three THA3-architecture networks keep THA3's standard key layout (FaceMorpher08 has no `body.`).
    assert "downsample_blocks.0.0.weight" in meta_tha4.face_morpher.state_dict()
    assert "body.downsample_blocks.0.0.weight" in meta_tha4.eyebrow_decomposer.state_dict()


def tiny_unet(**overrides) -> ConditionedUNet:
    config = UNetConfig(in_channels=4, out_channels=7, model_channels=32, channel_multipliers=(1, 1, 2),
                        attention_levels=(False, False, True), condition_channels=6, embedding_channels=32,
                        num_heads=4, **overrides)
    torch.manual_seed(0)
    net = ConditionedUNet(config)
    with torch.no_grad():   # the zero-initialised output layers would hide every other layer
        for p in net.parameters():
            if not p.abs().sum():
                p.normal_(0, 0.05)
    return net.eval()


def test_unet_shapes_and_condition_dependence():
    net = tiny_unet()
    x, pose = torch.rand(2, 4, 16, 16) * 2 - 1, torch.rand(2, 6)
    with torch.no_grad():
        out = net(x, pose)
        assert out.shape == (2, 7, 16, 16)
        other = net(x, pose.flip(0))
        addition = net(x, pose, torch.ones(2, 32, 16, 16))
    assert (out - other).abs().max() > 1e-3          # the pose changes the output ...
    assert (out - addition).abs().max() > 1e-3       # ... and so does the first-conv addition (upscaler)


def test_attention_block_splits_heads_as_the_new_attention_order():
    """Reference: PyTorch's scaled_dot_product_attention with q, k, v = the three thirds of qkv, each
    split into heads of consecutive channels (q·k scaled by 1/sqrt(head_channels) = both by C^-1/4)."""
    torch.manual_seed(1)
    block = AttentionBlock(32, 4)
    with torch.no_grad():
        block.conv.weight.normal_(0, 0.1)
        x = torch.randn(2, 32, 6, 5)
        q, k, v = block.qkv(block.norm(x)).reshape(2, 3, 4, 8, 30).unbind(1)           # (N, heads, Ch, L)
        attended = F.scaled_dot_product_attention(q.transpose(2, 3), k.transpose(2, 3), v.transpose(2, 3))
        expected = x + block.conv(attended.transpose(2, 3).reshape(2, 32, 6, 5))
        # float32 summation-order differences only (measured ~1e-7)
        assert (block(x) - expected).abs().max() < 1e-5


def test_time_embedding_at_zero_is_cos_then_sin():
    emb = time_embedding(torch.zeros(3, 1), 64)
    assert emb.shape == (3, 64)
    assert torch.equal(emb[:, :32], torch.ones(3, 32)) and torch.equal(emb[:, 32:], torch.zeros(3, 32))
    half = torch.tensor([[2.0]])
    assert math.isclose(float(time_embedding(half, 8)[0, 1]), math.cos(2.0 * 10000 ** (-1 / 3)), rel_tol=1e-6)


# -- loading from a directory of files ---------------------------------------------------------------------
def write_weights(directory, model, tweak=None):
    """Every tensor as a stride-0 view of one value (its key's index): torch.save stores one element per
    tensor, so five full-size "checkpoints" take kilobytes. tweak(role, state) may damage a file."""
    directory.mkdir(parents=True, exist_ok=True)
    for role, net in model.networks().items():
        state = {k: torch.tensor(float(i % 97) / 97).expand(v.shape) for i, (k, v) in enumerate(net.state_dict().items())}
        if tweak:
            tweak(role, state)
        torch.save(state, directory / FILE_NAMES[role])
    return directory


def test_round_trip_through_a_directory_of_weight_files(tmp_path, meta_tha4):
    teacher = load_tha4(write_weights(tmp_path / "w", meta_tha4))
    assert teacher.name == "tha4" and teacher.colour == "premultiplied"
    for role, net in teacher.networks.networks().items():
        for i, (key, value) in enumerate(net.state_dict().items()):
            assert float(value.reshape(-1)[0]) == pytest.approx(float(i % 97) / 97), (role, key)
    assert "tha4" in TEACHERS
    assert load_teacher("tha4", weights_dir=tmp_path / "w").name == "tha4"


def one_line(error: Exception) -> str:
    text = str(error)
    assert "\n" not in text and "weights_only=False" not in text
    return text


@pytest.mark.parametrize("damage, expected", [
    (lambda role, s: s.__setitem__("body.first_conv.weight", torch.zeros(64, 4, 5, 5)) if role == "body_morpher" else None,
     "body_morpher.pt: key 'body.first_conv.weight' has shape (64, 4, 5, 5), expected (64, 4, 3, 3)"),
    (lambda role, s: s.__setitem__("coarse_conv.weight", s.pop("coarse_image_conv.weight")) if role == "upscaler" else None,
     "upscaler.pt: missing key 'coarse_image_conv.weight'"),
    (lambda role, s: s.__setitem__("extra", torch.zeros(1)) if role == "face_morpher" else None,
     "face_morpher.pt: unexpected key 'extra'"),
])
def test_strict_loading_refuses_wrong_shapes_and_names(tmp_path, meta_tha4, damage, expected):
    with pytest.raises(WeightsError) as info:
        load_tha4(write_weights(tmp_path / "w", meta_tha4, damage))
    assert expected in one_line(info.value)


def test_missing_and_foreign_files_are_named_in_one_line(tmp_path, meta_tha4):
    directory = write_weights(tmp_path / "w", meta_tha4)
    (directory / "upscaler.pt").unlink()
    with pytest.raises(WeightsError, match=r"lacks upscaler\.pt") as info:
        load_tha4(directory)
    one_line(info.value)
    # the first file read, so that the check does not first read the four good ones
    (directory / "upscaler.pt").write_bytes(b"x")
    (directory / "eyebrow_decomposer.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(WeightsError, match=r"eyebrow_decomposer\.pt: not a readable PyTorch state dict") as info:
        load_tha4(directory)
    one_line(info.value)
    torch.save({"module": KyaraError("pickled object")}, directory / "eyebrow_decomposer.pt")
    with pytest.raises(WeightsError, match=r"eyebrow_decomposer\.pt") as info:
        load_tha4(directory)
    assert "never unpickles" in one_line(info.value)


@pytest.mark.slow
def test_pipeline_outputs_the_official_list():
    """One pose through all five networks (random weights): the 33 outputs of the official mode_07 list."""
    torch.manual_seed(0)
    teacher = THA4Teacher(build_tha4("cpu").eval(), torch.device("cpu"), torch.float32)
    out = teacher.pose_all(torch.rand(4, 512, 512) * 2 - 1, torch.zeros(1, 45))
    assert isinstance(out, THA4Outputs)
    shapes = [tuple(t.shape[1:]) for t in out.official_order()]
    assert len(shapes) == 33 and shapes[0] == (4, 512, 512) and shapes[5] == (4, 512, 512)
    assert shapes[6] == (4, 256, 256) and shapes[18] == (2, 192, 192)
    assert out.editor is out.upscaler and torch.equal(out.image, out.upscaler.image)
