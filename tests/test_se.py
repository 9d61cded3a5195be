"""The SE block against hand computations of the paper's equations (Sec. 3) and its variants (Sec. 7)."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F

from senet import SEBlock, SEConfig
from senet.se import se_width


def _hand(block: SEBlock, z: torch.Tensor, gate) -> torch.Tensor:
    """s = gate(W2 relu(W1 z + b1) + b2) written with F.conv2d, independent of the block's forward."""
    h = F.relu(F.conv2d(z, block.fc1.weight, block.fc1.bias))
    return gate(F.conv2d(h, block.fc2.weight, block.fc2.bias))


def test_standard_block_matches_equations():
    x = torch.randn(2, 32, 7, 5)
    se = SEBlock(32, reduction=16)
    z = x.sum(dim=(2, 3), keepdim=True) / (7 * 5)  # Eq. 2: average over H x W
    s = _hand(se, z, torch.sigmoid)  # Eq. 3
    torch.testing.assert_close(se(x), x * s)  # Eq. 4
    assert se.fc1.out_channels == 2 and se.fc2.out_channels == 32


def test_max_squeeze_uses_spatial_max():
    x = torch.randn(3, 16, 6, 6)
    se = SEBlock(16, reduction=4, squeeze="max")
    z = x.flatten(2).max(dim=2).values[..., None, None]
    torch.testing.assert_close(se(x), x * _hand(se, z, torch.sigmoid))
    avg = SEBlock(16, reduction=4)
    avg.load_state_dict(se.state_dict())
    assert not torch.allclose(avg(x), se(x))


@pytest.mark.parametrize(("name", "fn"), [("tanh", torch.tanh), ("relu", F.relu)])
def test_excitation_gates(name, fn):
    x = torch.randn(2, 8, 4, 4)
    se = SEBlock(8, reduction=2, excitation=name)
    torch.testing.assert_close(se(x), x * _hand(se, x.mean((2, 3), keepdim=True), fn))


def test_nosqueeze_keeps_spatial_size_and_parameter_count():
    x = torch.randn(2, 32, 5, 5)
    se = SEBlock(32, squeeze="none")
    s = se.excite(x)
    assert s.shape == x.shape
    torch.testing.assert_close(se(x), x * _hand(se, x, torch.sigmoid))
    assert sum(p.numel() for p in se.parameters()) == sum(p.numel() for p in SEBlock(32).parameters())


@pytest.mark.parametrize(
    ("channels", "r", "expected"), [(16, 16, 1), (8, 16, 1), (64, 16, 4), (2048, 16, 128), (256, 2, 128)]
)
def test_width_is_c_over_r_without_rounding(channels, r, expected):
    assert SEBlock(channels, r).hidden == expected


def test_divisor_rounds_like_timm():
    assert se_width(64, 16, divisor=8) == 8  # timm seresnet18: 64 channels -> 8 hidden
    assert se_width(256, 16, divisor=8) == 16
    assert se_width(16, 16, divisor=8) == 8


def test_no_bias_option():
    se = SEBlock(32, bias=False)
    assert se.fc1.bias is None and se.fc2.bias is None
    assert sum(p.numel() for p in se.parameters()) == 2 * 32 * 2


def test_identity_init_is_exact_identity_and_learns():
    x = torch.randn(2, 24, 5, 5, requires_grad=True)
    se = SEBlock(24, reduction=4, init="identity")
    y = se(x)
    assert torch.equal(y, x)
    y.square().sum().backward()
    assert se.fc2.weight.grad.abs().sum() > 0


def test_bad_options_name_the_problem():
    with pytest.raises(ValueError, match="squeeze"):
        SEBlock(8, squeeze="median")
    with pytest.raises(ValueError, match="excitation"):
        SEConfig(excitation="softmax")
    with pytest.raises(ValueError, match="reduction"):
        SEConfig(reduction=0)
    with pytest.raises(ValueError, match="position='3x3'"):
        SEConfig(position="3x3", integration="pre")


def test_block_pickles_and_exports():
    se = SEBlock(16, 4, excitation="sigmoid2x")
    x = torch.randn(1, 16, 3, 3)
    torch.testing.assert_close(pickle.loads(pickle.dumps(se))(x), se(x))
    torch.testing.assert_close(torch.export.export(se, (x,)).module()(x), se(x))


def test_config_normalises_stages():
    assert SEConfig(stages=[2, 3]).stages == frozenset({2, 3})
    assert SEConfig(stages=4).stages == frozenset({4})
    assert SEConfig().in_stage(5) and not SEConfig(stages={2}).in_stage(5)
