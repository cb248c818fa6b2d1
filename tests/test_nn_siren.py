"""kyara.nn.siren: the SIREN layers the student is built from, against their definitions."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kyara.nn.siren import (OMEGA_0, SineLinear, Siren, broadcast_pose, conditioned_first_layer, linear_head,
                            linear_nhwc, position_grid, sine, upsample2x)


def test_sine_layer_is_sin_of_omega_times_the_affine_map():
    torch.manual_seed(0)
    layer = SineLinear(5, 7)
    x = torch.randn(2, 5, 3, 4)
    w, b = layer.linear.weight.flatten(1), layer.linear.bias
    expected = torch.sin(OMEGA_0 * (torch.einsum("oc,nchw->nohw", w, x) + b[None, :, None, None]))
    assert torch.allclose(layer(x), expected, atol=1e-5)
    assert torch.allclose(sine(torch.full((3,), 0.01)), torch.full((3,), math.sin(0.3)))


@pytest.mark.parametrize("first", [True, False])
def test_sine_layer_init_follows_the_siren_paper(first):
    torch.manual_seed(1)
    fan_in = 64
    w = SineLinear(fan_in, 256, is_first=first).linear.weight
    bound = 1 / fan_in if first else math.sqrt(6 / fan_in) / OMEGA_0
    assert w.abs().max() <= bound
    assert w.abs().max() > 0.95 * bound     # uniform over the whole range, not a narrower one
    head = linear_head(90, 7)
    assert head.weight.shape == (7, 90, 1, 1) and torch.all(head.bias == 0)
    # He (fan_in, linear): std 1/sqrt(90); 630 samples put the estimate within ~±15 %
    assert 0.8 < head.weight.std().item() * math.sqrt(90) < 1.2


def test_siren_is_its_sine_layers_then_a_linear_head():
    torch.manual_seed(2)
    net = Siren(4, 16, 3, 2)
    assert len(net.sine_layers) == 3
    x = torch.randn(1, 4, 5, 5)
    h = x
    for layer in net.sine_layers:
        h = layer(h)
    assert torch.equal(net(x), net.last_linear(h))
    assert net(x).shape == (1, 2, 5, 5)


def test_linear_nhwc_equals_the_1x1_convolution():
    torch.manual_seed(3)
    conv = torch.nn.Conv2d(6, 3, 1)
    x = torch.randn(2, 6, 4, 5)
    assert torch.allclose(linear_nhwc(x.permute(0, 2, 3, 1), conv), conv(x).permute(0, 2, 3, 1), atol=1e-6)
    no_bias = linear_nhwc(x.permute(0, 2, 3, 1), conv, bias=False)
    assert torch.allclose(no_bias, (conv(x) - conv.bias[None, :, None, None]).permute(0, 2, 3, 1), atol=1e-6)


@pytest.mark.parametrize("with_features", [False, True])
def test_conditioned_first_layer_equals_the_conv_over_the_concatenation(with_features):
    torch.manual_seed(4)
    c_f, pose_dim, h = (5 if with_features else 0), 3, 8
    conv = torch.nn.Conv2d(c_f + 2 + pose_dim, 6, 1)
    position = position_grid(h, h)                                    # (1, 2, H, W)
    pose = torch.randn(2, pose_dim)
    low = torch.randn(2, c_f, h // 2, h // 2) if with_features else None
    parts = [position.expand(2, -1, -1, -1), broadcast_pose(pose, h, h)]
    if with_features:
        parts.insert(0, upsample2x(low))
    expected = conv(torch.cat(parts, dim=1)).permute(0, 2, 3, 1)
    got = conditioned_first_layer(conv, position[0].permute(1, 2, 0), pose,
                                  low.permute(0, 2, 3, 1) if with_features else None)
    assert got.shape == (2, h, h, 6)
    # W·upsample(f) = upsample(W·f) exactly in real numbers; float32 summation order differs
    assert torch.allclose(got, expected, atol=1e-5)


def test_position_grid_is_the_identity_sampling_grid():
    grid = position_grid(4, 6)
    assert grid.shape == (1, 2, 4, 6)
    identity = F.affine_grid(torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]]), [1, 1, 4, 6], align_corners=False)
    assert torch.allclose(grid.permute(0, 2, 3, 1), identity, atol=1e-6)
    assert torch.allclose(grid[0, 0, 0], torch.tensor([-5, -3, -1, 1, 3, 5]) / 6)   # x: pixel centres


def test_broadcast_pose_is_a_view_and_upsample2x_is_bilinear_half_pixel():
    pose = torch.tensor([[1.0, 2.0]])
    b = broadcast_pose(pose, 3, 4)
    assert b.shape == (1, 2, 3, 4) and b.data_ptr() == pose.data_ptr() and torch.all(b[0, 1] == 2.0)
    row = upsample2x(torch.tensor([[[[0.0, 4.0]]]]))                   # (1, 1, 1, 2) → (1, 1, 2, 4)
    # align_corners=False: output centres at ¼ and ¾ between inputs, clamped at the borders
    assert torch.equal(row[0, 0, 0], torch.tensor([0.0, 1.0, 3.0, 4.0])) and torch.equal(row[0, 0, 0], row[0, 0, 1])
