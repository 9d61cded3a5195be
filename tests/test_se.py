"""The SE block against hand computations of the paper's equations (Sec. 3) and its variants (Sec. 7)."""

from __future__ import annotations

import pickle
import re

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


def _reference_unit(se: SEBlock, x: torch.Tensor, shortcut: torch.Tensor, gate) -> torch.Tensor:
    """relu(x * s + shortcut) from the equations, differentiated by autograd (no SEBlock code)."""
    z = x.mean(dim=(2, 3), keepdim=True)
    return F.relu(x * _hand(se, z, gate) + shortcut)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    ("options", "gate"),
    [
        ({}, torch.sigmoid),
        ({"reduction": 4, "bias": False}, torch.sigmoid),
        ({"excitation": "tanh"}, torch.tanh),
        ({"init": "identity"}, lambda t: 2 * torch.sigmoid(t)),
    ],
)
def test_fused_scale_add_relu_is_the_same_function(options, gate, channels_last):
    """The fused training path (hand-written backward) against autograd on the equations, float64:
    output, and gradients of the input, the shortcut and every SE parameter."""
    se = SEBlock(32, **options).double()
    if options.get("init") == "identity":  # give the zero fc2 values, or its gradient path is trivial
        torch.nn.init.normal_(se.fc2.weight, std=0.1)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(3, 32, 6, 5, dtype=torch.float64).contiguous(memory_format=fmt).requires_grad_()
    sc = torch.randn(3, 32, 6, 5, dtype=torch.float64).contiguous(memory_format=fmt).requires_grad_()
    g = torch.randn(3, 32, 6, 5, dtype=torch.float64)
    params = list(se.parameters())

    out = se.scale_add_relu(x, sc)
    assert out.grad_fn is not None and "SEScaleAddReLU" in type(out.grad_fn).__name__
    assert out.is_contiguous(memory_format=fmt)
    got = torch.autograd.grad(out, [x, sc, *params], g)
    ref = _reference_unit(se, x, sc, gate)
    want = torch.autograd.grad(ref, [x, sc, *params], g)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_fused_path_frozen_se_and_no_grad():
    """Frozen SE parameters get no gradient (and no error); without autograd the in-place path runs."""
    se = SEBlock(16, reduction=4)
    for p in se.parameters():
        p.requires_grad_(False)
    x = torch.randn(2, 16, 4, 4, requires_grad=True)
    sc = torch.randn(2, 16, 4, 4)
    out = se.scale_add_relu(x, sc)
    out.sum().backward()
    assert x.grad is not None and all(p.grad is None for p in se.parameters())
    with torch.no_grad():
        y = x.detach().clone()
        torch.testing.assert_close(
            se.scale_add_relu(y, sc), _reference_unit(se, x.detach(), sc, torch.sigmoid)
        )


@pytest.mark.parametrize(("name", "size"), [("se_resnet20", 32), ("se_resnext50_32x4d", 64)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_network_with_fused_units_same_logits_and_gradients(name, size, channels_last):
    """A whole SE network trains through the fused units; forcing the generic chain (a forward hook on
    every SE block) gives the same logits and gradients in float64, and every SE parameter a gradient."""
    import senet

    def run(generic: bool):
        torch.manual_seed(0)
        model = senet.create_model(name, num_classes=10).double().train()
        if generic:
            for m in model.modules():
                if isinstance(m, SEBlock):
                    m.register_forward_hook(lambda *a: None)
        x = torch.randn(2, 3, size, size, dtype=torch.float64)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        logits = model(x)
        logits.square().sum().backward()
        return logits.detach(), dict(model.named_parameters())

    fused, fused_params = run(False)
    generic, generic_params = run(True)
    torch.testing.assert_close(fused, generic, rtol=0, atol=1e-12)
    for key, p in fused_params.items():
        torch.testing.assert_close(p.grad, generic_params[key].grad, rtol=1e-9, atol=1e-11, msg=key)
        if ".se." in key:
            assert p.grad is not None and p.grad.abs().sum() > 0, key


@pytest.mark.parametrize(
    "name",
    [
        "se_resnet20",
        "se_resnet164",
        "se_wrn16_8",
        "se_shake_shake26_2x96d",
        "se_resnet50",
        "se_resnext50_32x4d",
        "se_bn_inception",
        "se_inception_resnet_v2",
        "se_mobilenet",
        "se_shufflenet",
    ],
)
def test_se_network_shares_its_twins_initial_weights(name):
    """Paired SE-vs-plain runs: for one seed, every tensor the SE network shares with its plain twin
    starts equal, and the global random stream after building is where the twin leaves it."""
    import senet

    twin = senet.model_info(name).twin
    torch.manual_seed(11)
    se_state = senet.create_model(name).state_dict()
    after_se = torch.rand(4)
    torch.manual_seed(11)
    plain_state = senet.create_model(twin).state_dict()
    after_plain = torch.rand(4)
    assert set(plain_state) < set(se_state)
    for key, value in plain_state.items():
        assert torch.equal(value, se_state[key]), key
    assert torch.equal(after_se, after_plain)
    se_only = [k for k in se_state if k not in plain_state]
    assert se_only and all(".se" in k or "se_" in k or "se." in k for k in se_only), se_only[:5]


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_SHAPE = {1: (3, 24, 7), 2: (3, 24, 5, 6), 3: (3, 24, 3, 4, 5)}


def _hand_nd(block: SEBlock, z: torch.Tensor, gate, dims: int) -> torch.Tensor:
    """s = gate(W2 relu(W1 z + b1) + b2) with the convolution of the block's rank."""
    conv = _CONV[dims]
    return gate(conv(F.relu(conv(z, block.fc1.weight, block.fc1.bias)), block.fc2.weight, block.fc2.bias))


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("squeeze", ["avg", "max", "none"])
def test_nd_block_matches_equations(dims, squeeze):
    """1-D (N, C, L) and 3-D (N, C, T, H, W) blocks: the squeeze reduces every spatial dimension."""
    x = torch.randn(*_SHAPE[dims])
    se = SEBlock(24, reduction=4, squeeze=squeeze, dims=dims)
    assert isinstance(se.fc1, {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}[dims])
    assert se.fc1.weight.shape == (6, 24, *(1,) * dims) and se.fc2.weight.shape == (24, 6, *(1,) * dims)
    spatial = tuple(range(2, 2 + dims))
    if squeeze == "avg":
        z = x.sum(spatial, keepdim=True) / x[0, 0].numel()
    elif squeeze == "max":
        z = x.flatten(2).max(2).values.reshape(3, 24, *(1,) * dims)
    else:
        z = x
    torch.testing.assert_close(se(x), x * _hand_nd(se, z, torch.sigmoid, dims))


@pytest.mark.parametrize("dims", [1, 3])
def test_nd_parameter_count_is_eq5_and_identity_init_exact(dims):
    se = SEBlock(64, dims=dims)
    assert sum(p.numel() for p in se.parameters()) == 2 * 64 * 4 + 4 + 64  # Eq. 5 with biases
    assert sum(p.numel() for p in SEBlock(64, dims=dims, bias=False).parameters()) == 2 * 64 * 4
    x = torch.randn(*_SHAPE[dims][:1], 64, *_SHAPE[dims][2:], requires_grad=True)
    ident = SEBlock(64, dims=dims, init="identity")
    y = ident(x)
    assert torch.equal(y, x)
    y.square().sum().backward()
    assert ident.fc2.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("dims", "shape", "expected"), [(1, (2, 8, 5, 5), "(N, 8, L)"), (3, (2, 8, 5), "(N, 8, T, H, W)")]
)
def test_nd_wrong_rank_names_the_expected_shape(dims, shape, expected):
    with pytest.raises(ValueError, match=re.escape(expected)):
        SEBlock(8, reduction=2, dims=dims)(torch.randn(*shape))
    with pytest.raises(ValueError, match="dims=4 is not one of"):
        SEBlock(8, dims=4)


@pytest.mark.parametrize("dims", [1, 3])
def test_nd_fused_scale_add_relu_is_the_same_function(dims):
    """The fused training path for 1-D / 3-D maps: output and every gradient as autograd's."""
    se = SEBlock(16, reduction=4, dims=dims).double()
    shape = (_SHAPE[dims][0], 16, *_SHAPE[dims][2:])
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    sc = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    g = torch.randn(*shape, dtype=torch.float64)
    params = list(se.parameters())
    out = se.scale_add_relu(x, sc)
    assert "SEScaleAddReLU" in type(out.grad_fn).__name__
    z = x.mean(tuple(range(2, 2 + dims)), keepdim=True)
    ref = F.relu(x * _hand_nd(se, z, torch.sigmoid, dims) + sc)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    got = torch.autograd.grad(out, [x, sc, *params], g)
    want = torch.autograd.grad(ref, [x, sc, *params], g)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    with torch.no_grad():  # inference path (in place) and the generic chain (max squeeze)
        torch.testing.assert_close(se.scale_add_relu(x.detach().clone(), sc.detach()), ref.detach())
        mx = SEBlock(16, reduction=4, squeeze="max", dims=dims).double()
        zm = x.detach().amax(tuple(range(2, 2 + dims)), keepdim=True)
        want_max = F.relu(x.detach() * _hand_nd(mx, zm, torch.sigmoid, dims) + sc.detach())
    got_max = mx.scale_add_relu(x, sc)
    torch.testing.assert_close(got_max, want_max)


def test_config_builds_nd_blocks():
    assert SEConfig(reduction=8).block(32, dims=3).fc1.weight.shape == (4, 32, 1, 1, 1)
    assert "dims" not in SEConfig.fields()  # a property of the place, not a network knob


@pytest.mark.parametrize("name", ["se_resnet20", "se_resnet50"])
def test_hooks_on_the_module_before_se_see_its_output_unchanged(name):
    """In inference SE scales a residual unit's branch output in place when only the unit holds it;
    a forward hook on the BN that produced it is handed that tensor, so it must stay as made."""
    import senet

    model = senet.create_model(name).eval()
    unit = model.layer1[0]
    seen: dict[str, torch.Tensor] = {}

    def keep(module, inputs, output):
        seen["out"], seen["copy"] = output, output.detach().clone()

    handle = getattr(unit, unit.last_bn).register_forward_hook(keep)
    size = 32 if name == "se_resnet20" else 64
    with torch.no_grad():
        model(torch.randn(2, 3, size, size))
    handle.remove()
    torch.testing.assert_close(seen["out"], seen["copy"], rtol=0, atol=0)
