"""Fusion modules: shapes, hand-counted parameters, values against hand-written formulas, the
identity-initialised SE fusion equal to the concat fusion, gradients, pickling and errors."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

from senet.fusion.modules import FUSIONS, AddFusion, ConcatFusion, SEFusion, make_fusion
from senet.se import ScaledSigmoid


def _n(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _conv1x1(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution written as a channel contraction (independent of nn.Conv2d)."""
    return torch.einsum("oc,nchw->nohw", w[:, :, 0, 0], x) + b[None, :, None, None]


def _maps(cr: int = 4, ce: int = 6, n: int = 2, h: int = 5, w: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(n, cr, h, w), torch.randn(n, ce, h, w)


def test_concat_fusion_is_concatenation_then_1x1_conv_with_bias():
    f = ConcatFusion(4, 6, 5)
    assert _n(f) == 10 * 5 + 5  # 1x1 conv on the 10 concatenated channels, with bias
    rgb, ev = _maps()
    out = f(rgb, ev)
    assert out.shape == (2, 5, 5, 7)
    want = _conv1x1(f.proj.weight, f.proj.bias, torch.cat([rgb, ev], 1))
    torch.testing.assert_close(out, want)
    # the first 4 input channels of proj read the RGB map: zero them and the RGB map no longer matters
    with torch.no_grad():
        f.proj.weight[:, :4] = 0
    torch.testing.assert_close(f(torch.randn_like(rgb), ev), f(rgb, ev))


def test_add_fusion_sums_and_projects_only_when_the_width_changes():
    f = AddFusion(8, 8, 8)
    assert _n(f) == 0
    rgb, ev = _maps(8, 8)
    assert torch.equal(f(rgb, ev), rgb + ev)
    g = AddFusion(8, 8, 4)
    assert _n(g) == 8 * 4 + 4
    out = g(rgb, ev)
    assert out.shape == (2, 4, 5, 7)
    torch.testing.assert_close(out, _conv1x1(g.proj.weight, g.proj.bias, rgb + ev))


@pytest.mark.parametrize(
    ("cr", "ce", "out", "kwargs", "want"),
    [
        # 2C = 32, h = 32 // 4 = 8: fc1 32*8 + 8, fc2 8*32 + 32; proj 32*16 + 16
        (16, 16, 16, {"reduction": 4}, 32 * 8 + 8 + 8 * 32 + 32 + 32 * 16 + 16),
        # 2C = 8, h = max(1, 8 // 16) = 1: fc1 8 + 1, fc2 8 + 8; proj 8*7 + 7
        (3, 5, 7, {}, 8 + 1 + 8 + 8 + 8 * 7 + 7),
        # no biases in the excitation: fc1 32*8, fc2 8*32
        (16, 16, 16, {"reduction": 4, "bias": False}, 32 * 8 + 8 * 32 + 32 * 16 + 16),
        # timm's rounding: 64 / 16 = 4 rounds up to 8 with divisor 8
        (32, 32, 32, {"divisor": 8}, 64 * 8 + 8 + 8 * 64 + 64 + 64 * 32 + 32),
    ],
)
def test_se_fusion_parameter_count(cr, ce, out, kwargs, want):
    f = SEFusion(cr, ce, out, **kwargs)
    assert _n(f) == want
    assert f(*_maps(cr, ce)).shape == (2, out, 5, 7)


def test_se_fusion_computes_squeeze_excitation_then_projection():
    f = SEFusion(6, 10, 8, reduction=4)
    rgb, ev = _maps(6, 10)
    x = torch.cat([rgb, ev], 1)
    z = x.mean((2, 3))
    h = torch.relu(z @ f.se.fc1.weight[:, :, 0, 0].T + f.se.fc1.bias)
    s = torch.sigmoid(h @ f.se.fc2.weight[:, :, 0, 0].T + f.se.fc2.bias)
    want = _conv1x1(f.proj.weight, f.proj.bias, x * s[:, :, None, None])
    torch.testing.assert_close(f(rgb, ev), want)
    assert [name for name, _ in f.named_children()] == ["se", "proj"]  # execution order


def test_se_knobs_reach_the_se_block():
    f = make_fusion("se", 16, 16, 16, reduction=8, squeeze="max", excitation="tanh")
    assert f.se.hidden == 4 and f.se.squeeze_mode == "max" and isinstance(f.se.gate, nn.Tanh)
    g = make_fusion("se", 16, 16, 16, init="identity")
    assert isinstance(g.se.gate, ScaledSigmoid) and not g.se.fc2.weight.any()


def test_identity_se_fusion_with_concat_weights_equals_concat_fusion():
    concat = ConcatFusion(12, 20, 16)
    se = SEFusion(12, 20, 16, reduction=4, init="identity")
    result = se.load_state_dict(concat.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert sorted(result.missing_keys) == ["se.fc1.bias", "se.fc1.weight", "se.fc2.bias", "se.fc2.weight"]
    rgb, ev = _maps(12, 20)
    assert torch.equal(se(rgb, ev), concat(rgb, ev))


def test_every_se_fusion_parameter_gets_a_gradient():
    f = SEFusion(16, 16, 8, reduction=4)
    rgb, ev = _maps(16, 16, n=4)
    rgb.requires_grad_()
    ev.requires_grad_()
    (f(rgb, ev) ** 2).sum().backward()
    for name, p in f.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert rgb.grad.abs().sum() > 0 and ev.grad.abs().sum() > 0


@pytest.mark.parametrize("name", FUSIONS)
def test_fusions_pickle(name):
    f = make_fusion(name, 8, 8, 4)
    g = pickle.loads(pickle.dumps(f))
    rgb, ev = _maps(8, 8)
    assert torch.equal(f(rgb, ev), g(rgb, ev))


def test_make_fusion_builds_each_kind():
    assert type(make_fusion("add", 8, 8, 8)) is AddFusion
    assert type(make_fusion("concat", 4, 6, 5)) is ConcatFusion
    assert type(make_fusion("se", 4, 6, 5)) is SEFusion


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: make_fusion("sr", 8, 8, 8), r"unknown fusion 'sr'.*Did you mean 'se'\?"),
        (lambda: make_fusion("concatenate", 8, 8, 8), r"Did you mean 'concat'\?"),
        (
            lambda: make_fusion("concat", 8, 8, 8, reduction=4),
            r"fusion 'concat' takes no options, got reduction",
        ),
        (
            lambda: make_fusion("se", 8, 8, 8, ratio=4),
            r"SE fusion does not take ratio; its options are reduction",
        ),
        (lambda: make_fusion("se", 8, 8, 8, squeeze="mean"), r"squeeze='mean' is not one of"),
        (lambda: AddFusion(8, 6, 8), r"AddFusion sums the maps, so it needs equal widths"),
        (lambda: ConcatFusion(0, 6, 8), r"rgb_channels=0 must be a whole number >= 1"),
    ],
)
def test_bad_construction_is_refused_in_one_line(call, match):
    with pytest.raises(ValueError, match=match) as err:
        call()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", FUSIONS)
def test_bad_inputs_are_refused_in_one_line(name):
    f = make_fusion(name, 8, 8, 8)
    with pytest.raises(ValueError, match=r"the events map must be \(N, 8, H, W\), got \[2, 6, 5, 7\]"):
        f(torch.randn(2, 8, 5, 7), torch.randn(2, 6, 5, 7))
    with pytest.raises(ValueError, match=r"differ in batch or spatial size"):
        f(torch.randn(2, 8, 5, 7), torch.randn(2, 8, 4, 7))
