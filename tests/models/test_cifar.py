"""CIFAR networks (senet.models.cifar): sizes against the original papers, SE cost against Eq. 5 of the
SE paper, forward/backward of every network, Shake-Shake's forward/backward mixing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from senet import SEBlock, SEConfig, create_model, list_models, model_info
from senet.analysis import profile
from senet.models.cifar import (
    PreActBasicBlock,
    PreActBottleneck,
    PreActResNet,
    ShakeBlock,
    ShakeShake,
    ShakeShakeNet,
    ZeroPadShortcut,
)

PLAIN = [
    "resnet20",
    "resnet32",
    "resnet56",
    "resnet110",
    "resnet164",
    "wrn16_8",
    "shake_shake26_2x96d",
    "shake_even29_2x4x64d",
]
ALL = PLAIN + ["se_" + n for n in PLAIN]

# Parameter counts as printed in the original papers (millions).
PAPER_PARAMS = {
    "resnet20": 0.27,  # He et al. 2016, Table 6
    "resnet32": 0.46,
    "resnet56": 0.85,
    "resnet110": 1.7,
    "resnet164": 1.7,  # He et al., "Identity Mappings", Table 3
    "wrn16_8": 11.0,  # Zagoruyko & Komodakis, Table 4
    "shake_shake26_2x96d": 26.2,  # Gastaldi 2017, Table 4
    "shake_even29_2x4x64d": 34.4,  # Gastaldi 2017, Table 4
}

# Where SE blocks sit (standard integration): blocks per stage and their output channels.
SE_LAYOUT = {
    "resnet20": (3, (16, 32, 64)),
    "resnet32": (5, (16, 32, 64)),
    "resnet56": (9, (16, 32, 64)),
    "resnet110": (18, (16, 32, 64)),
    "resnet164": (18, (64, 128, 256)),
    "wrn16_8": (2, (128, 256, 512)),
    "shake_shake26_2x96d": (4, (96, 192, 384)),
    "shake_even29_2x4x64d": (3, (256, 512, 1024)),
}


def _x(n: int = 2, size: int = 32, chans: int = 3) -> torch.Tensor:
    return torch.randn(n, chans, size, size)


def test_registered_as_cifar_twins() -> None:
    assert set(ALL) <= set(list_models())
    for name in ALL:
        info = model_info(name)
        assert info.dataset == "cifar" and info.input_size == (3, 32, 32)
        assert info.se == name.startswith("se_")
        assert info.twin == (name[3:] if info.se else "se_" + name)
    assert model_info("resnet20").num_classes == 10
    assert model_info("shake_even29_2x4x64d").num_classes == 100  # the CIFAR-100 network of Table 5


@pytest.mark.parametrize("name", PLAIN)
def test_params_match_original_papers(name: str) -> None:
    num_classes = model_info(name).num_classes
    measured = profile(name).params / 1e6
    assert measured == pytest.approx(PAPER_PARAMS[name], rel=0.02), (name, num_classes, measured)


@pytest.mark.parametrize("name", PLAIN)
@pytest.mark.parametrize("reduction", [16, 4])
def test_se_params_match_eq5(name: str, reduction: int) -> None:
    """SE adds 2/r * sum_s N_s C_s^2 weights (Eq. 5) plus the FC biases, with C // r hidden units."""
    n, channels = SE_LAYOUT[name]
    exact = sum(n * (2 * c * max(1, c // reduction) + max(1, c // reduction) + c) for c in channels)
    eq5 = 2 / reduction * sum(n * c * c for c in channels)
    added = profile("se_" + name, reduction=reduction).params - profile(name).params
    assert added == exact
    with torch.device("meta"):
        model = create_model("se_" + name, reduction=reduction)
    weights = sum(
        p.numel() for m in model.modules() if isinstance(m, SEBlock) for p in m.parameters() if p.dim() > 1
    )
    assert weights == eq5  # every C here is a multiple of r, so Eq. 5 (which has no biases) is exact


def test_resnet20_macs_by_hand() -> None:
    """Multiply-adds of ResNet-20 at 32x32, summed conv by conv (3x3 convs, option A shortcuts)."""
    macs = 3 * 16 * 9 * 32 * 32  # stem
    for c_in, c, hw in ((16, 16, 32), (16, 32, 16), (32, 64, 8)):
        macs += c_in * c * 9 * hw * hw + 5 * c * c * 9 * hw * hw
    macs += 64 * 10
    assert profile("resnet20").macs == macs


@pytest.mark.parametrize("depth", [20, 32, 56, 110])
def test_resnet_depth_counts_weighted_layers(depth: int) -> None:
    model = create_model(f"resnet{depth}")
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == depth  # option A: no projection layers


def test_resnet164_depth() -> None:
    model = create_model("resnet164")
    layers = [
        n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and "shortcut" not in n
    ]
    assert len(layers) == 164


def test_shortcut_option_b_adds_projections() -> None:
    added = profile("resnet20", shortcut="B").params - profile("resnet20").params
    assert added == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)  # 1x1 conv + BN per projection
    with pytest.raises(ValueError, match="shortcut='C'"):
        create_model("resnet20", shortcut="C")
    with pytest.raises(ValueError, match="does not take depth"):
        create_model("resnet20", depth=56)  # the depth is the name's


def test_zero_pad_shortcut() -> None:
    x = _x(2, 9, 4)
    y = ZeroPadShortcut(4, 10, 2)(x)
    assert y.shape == (2, 10, 5, 5)
    assert torch.equal(y[:, :4], x[:, :, ::2, ::2])
    assert not y[:, 4:].any()
    assert not list(ZeroPadShortcut(4, 10, 2).parameters())


@pytest.mark.parametrize("name", PLAIN)
def test_wrong_channels_named(name: str) -> None:
    with torch.device("meta"):
        model = create_model(name)
    with pytest.raises(ValueError, match=r"expects a batch of images of shape \(N, 3, H, W\) with H, W >= 8"):
        model(torch.zeros(1, 1, 32, 32, device="meta"))
    with pytest.raises(ValueError, match="x.unsqueeze"):
        model(torch.zeros(3, 32, 32, device="meta"))


SMALL = {  # one network per family, narrow, so that larger inputs stay cheap
    "CifarResNet": lambda **kw: create_model("se_resnet20", **kw),
    "PreActResNet": lambda **kw: PreActResNet(
        PreActBottleneck, 1, (4, 8, 16), se=SEConfig(reduction=4), **kw
    ),
    "ShakeShakeNet": lambda **kw: ShakeShakeNet(1, (8, 16, 32), se=SEConfig(reduction=4), **kw),
}


@pytest.mark.parametrize("family", SMALL)
@pytest.mark.parametrize("size", [64, 33])
def test_num_classes_100_and_other_input_sizes(family: str, size: int) -> None:
    model = SMALL[family](num_classes=100).eval()
    assert model.fc.out_features == 100 and model.num_classes == 100
    with torch.no_grad():
        assert model(_x(1, size)).shape == (1, 100)
        assert model.forward_features(_x(1, size)).shape == (
            1,
            model.num_features,
            -(-size // 4),
            -(-size // 4),
        )


@pytest.mark.parametrize(
    ("name", "stage_channels"),
    [("resnet20", (16, 32, 64)), ("wrn16_8", (128, 256, 512)), ("shake_shake26_2x96d", (96, 192, 384))],
)
def test_se_stages_numbered_1_to_3(name: str, stage_channels: tuple[int, ...]) -> None:
    for stage in (1, 2, 3):
        with torch.device("meta"):
            model = create_model(name, se=True, stages={stage})
        se_blocks = [m for m in model.modules() if isinstance(m, SEBlock)]
        in_stage = [m for m in getattr(model, f"layer{stage}").modules() if isinstance(m, SEBlock)]
        assert se_blocks and len(in_stage) == len(se_blocks)
        assert {m.channels for m in se_blocks} == {stage_channels[stage - 1]}
    with pytest.raises(ValueError, match="do not exist"):
        create_model(name, se=True, stages={4})


def test_unsupported_se_options_are_refused() -> None:
    with pytest.raises(ValueError, match="position"):
        create_model("se_resnet20", position="3x3")
    with pytest.raises(ValueError, match="position"):
        create_model("se_wrn16_8", position="3x3")
    with pytest.raises(ValueError, match="position"):
        create_model("se_shake_shake26_2x96d", position="3x3")
    with pytest.raises(ValueError, match="has no SE blocks"):
        create_model("resnet20", reduction=8)


def test_resnet164_se_3x3() -> None:
    with torch.device("meta"):
        model = create_model("se_resnet164", position="3x3")
    blocks = [m for m in model.modules() if isinstance(m, PreActBottleneck)]
    assert len(blocks) == 54
    assert all(
        b.se is None and b.se_3x3 is not None and b.se_3x3.channels == b.conv2.out_channels for b in blocks
    )


def _units() -> list[tuple[str, type[nn.Module], dict]]:
    return [
        ("preact_bottleneck", PreActBottleneck, dict(in_ch=16, planes=8, stride=2)),
        ("preact_basic", PreActBasicBlock, dict(in_ch=16, planes=32, stride=2)),
        ("preact_basic_identity", PreActBasicBlock, dict(in_ch=16, planes=16, stride=1)),
        ("shake", ShakeBlock, dict(in_ch=16, out_ch=32, stride=2)),
        ("shake_bottleneck", ShakeBlock, dict(in_ch=16, out_ch=32, stride=2, width=16, groups=4)),
    ]


@pytest.mark.parametrize("integration", ["standard", "pre", "post", "identity"])
@pytest.mark.parametrize(("label", "cls", "kw"), _units(), ids=[u[0] for u in _units()])
def test_se_integration_acts_where_it_claims(integration: str, label: str, cls: type, kw: dict) -> None:
    """Fig. 5: the SE block sees the residual output, the branch input, the sum, or the shortcut."""
    block = cls(**kw, se=SEConfig(reduction=4, integration=integration)).eval()
    seen: dict[str, torch.Tensor] = {}
    block.se.register_forward_hook(lambda m, inp, out: seen.update(inp=inp[0].clone(), out=out.clone()))
    x = _x(2, 8, 16)
    with torch.no_grad():
        y = block(x)
        branch, shortcut = block.split(x.clone())
    assert not torch.equal(seen["inp"], seen["out"])
    with torch.no_grad():
        if integration == "pre":
            torch.testing.assert_close(seen["inp"], branch)
            torch.testing.assert_close(y, block.residual(seen["out"]) + shortcut)
        elif integration == "standard":
            torch.testing.assert_close(seen["inp"], block.residual(branch))
            torch.testing.assert_close(y, seen["out"] + shortcut)
        elif integration == "identity":
            torch.testing.assert_close(seen["inp"], shortcut)
            torch.testing.assert_close(y, block.residual(branch) + seen["out"])
        else:
            torch.testing.assert_close(seen["inp"], block.residual(branch) + shortcut)
            torch.testing.assert_close(y, seen["out"])


# Shake-Shake (Gastaldi 2017, Sec. 2): forward alpha, backward beta, per image.


def _mix(shake: ShakeShake, n: int = 6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Recover the forward coefficient alpha and backward coefficient beta of each image."""
    x1 = torch.randn(n, 3, 4, 4, requires_grad=True)
    x2 = torch.randn(n, 3, 4, 4, requires_grad=True)
    y = shake(x1, x2)
    y.backward(torch.ones_like(y))
    d = (x1 - x2).detach()
    alpha = ((y.detach() - x2.detach()) * d).sum((1, 2, 3)) / (d * d).sum((1, 2, 3))  # least squares
    torch.testing.assert_close(y, alpha.view(-1, 1, 1, 1) * x1 + (1 - alpha.view(-1, 1, 1, 1)) * x2)
    beta = x1.grad[:, 0, 0, 0]
    torch.testing.assert_close(x1.grad, beta.view(-1, 1, 1, 1).expand_as(x1))  # one beta per image
    torch.testing.assert_close(x2.grad, 1 - x1.grad)
    return alpha, beta, y


def test_shake_eval_is_plain_average() -> None:
    alpha, beta, _ = _mix(ShakeShake().eval())
    torch.testing.assert_close(alpha, torch.full_like(alpha, 0.5))
    torch.testing.assert_close(beta, torch.full_like(beta, 0.5))


def test_shake_shake_forward_and_backward_coefficients_differ() -> None:
    alpha, beta, _ = _mix(ShakeShake("shake", "shake", "image").train())
    assert ((alpha >= 0) & (alpha <= 1) & (beta >= 0) & (beta <= 1)).all()
    assert alpha.unique().numel() == alpha.numel()  # one coefficient per image
    assert beta.unique().numel() == beta.numel()  # a random beta per image too
    assert (alpha - beta).abs().min() > 1e-4  # drawn independently of alpha


def test_shake_even_and_keep() -> None:
    """Gastaldi's names: backward "Even" = 0.5 for both branches, "Keep" = the forward alpha."""
    alpha, beta, _ = _mix(ShakeShake("shake", "even").train())
    assert alpha.unique().numel() == alpha.numel()
    torch.testing.assert_close(beta, torch.full_like(beta, 0.5))
    alpha, beta, _ = _mix(ShakeShake("shake", "keep").train())
    assert alpha.unique().numel() == alpha.numel()
    torch.testing.assert_close(beta, alpha)


def test_shake_batch_level() -> None:
    alpha, beta, _ = _mix(ShakeShake("shake", "shake", "batch").train())
    torch.testing.assert_close(alpha, alpha[:1].expand_as(alpha))
    assert beta.unique().numel() == 1 and (alpha - beta).abs().min() > 1e-4


def test_shake_options_checked() -> None:
    with pytest.raises(ValueError, match="shake_backward='odd'"):
        create_model("shake_shake26_2x96d", shake_backward="odd")
    even = create_model("shake_even29_2x4x64d", num_classes=10)
    assert {m.backward_mode for m in even.modules() if isinstance(m, ShakeShake)} == {"even"}
    keep = create_model("shake_shake26_2x96d", shake_backward="keep")
    assert {m.backward_mode for m in keep.modules() if isinstance(m, ShakeShake)} == {"keep"}


def test_shake_network_train_random_eval_deterministic() -> None:
    model = ShakeShakeNet(1, (8, 16, 32), se=SEConfig(reduction=4))
    x = _x(4)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)
    block = model.layer2[0]
    with torch.no_grad():
        h = model.layer1(model.stem(x))
        mixed = 0.5 * (block.branch1(h) + block.branch2(h))
        torch.testing.assert_close(block(h), block.se(mixed) + block.shortcut(h))
    model.train()
    torch.manual_seed(1)
    y1 = model(x)
    torch.manual_seed(2)
    y2 = model(x)
    assert not torch.allclose(y1, y2)


def test_shake_network_gradient_uses_beta_not_alpha() -> None:
    """In a whole network, the gradient reaching branch 1 is beta * g while the forward used alpha."""
    block = ShakeBlock(8, 8, shake=ShakeShake("shake", "shake")).train()
    outs: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(module: nn.Module, inp: tuple, out: torch.Tensor) -> None:
            out.register_hook(lambda g: outs.__setitem__(name + "_grad", g))
            outs[name] = out.detach()

        return hook

    block.branch1.register_forward_hook(keep("b1"))
    block.branch2.register_forward_hook(keep("b2"))
    x = _x(4, 6, 8).requires_grad_()
    y = block(x)
    g = torch.randn_like(y)
    y.backward(g)
    alpha = ((y.detach() - x.detach() - outs["b2"]) / (outs["b1"] - outs["b2"]))[:, 0, 0, 0]
    beta = (outs["b1_grad"] / g)[:, 0, 0, 0]
    torch.testing.assert_close(outs["b1_grad"] + outs["b2_grad"], g)
    assert (alpha - beta).abs().min() > 1e-4
