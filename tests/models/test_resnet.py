"""ResNet / ResNeXt / SENet-154 against the official release's parameter counts, the paper's
multiply-adds (Table 2) and ablation tables (Sec. 7), and the SE variants wired as Fig. 5 draws them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import senet
from senet import SEConfig
from senet.analysis import profile
from senet.models.resnet import BasicBlock, Bottleneck

# Official release (hujie-frank/SENet; Cadene/timm legacy ports), 1000 classes.
RELEASE_PARAMS = {
    "se_resnet50": 28_088_024,
    "se_resnet101": 49_326_872,
    "se_resnet152": 66_821_848,
    "se_resnext50_32x4d": 27_559_896,
    "se_resnext101_32x4d": 48_955_416,
    "senet154": 115_088_984,
    "resnet50": 25_557_032,
}
# Paper, Table 2: GFLOPs (multiply-adds) at 224x224, re-implementation / SE version.
TABLE2_GMACS = {
    "resnet50": 3.86,
    "se_resnet50": 3.87,
    "resnet101": 7.58,
    "se_resnet101": 7.60,
    "resnet152": 11.30,
    "se_resnet152": 11.32,
    "resnext50_32x4d": 4.24,
    "se_resnext50_32x4d": 4.25,
    "resnext101_32x4d": 7.99,
    "se_resnext101_32x4d": 8.00,
}


@pytest.mark.parametrize(("name", "expected"), RELEASE_PARAMS.items())
def test_parameter_counts_equal_the_release(name, expected):
    assert profile(name).params == expected


@pytest.mark.parametrize(("name", "gmacs"), TABLE2_GMACS.items())
def test_multiply_adds_within_1pct_of_table2(name, gmacs):
    assert profile(name).gmacs == pytest.approx(gmacs, rel=0.01)


def test_torchvision_layout_counts_match_torchvision():
    torchvision = pytest.importorskip("torchvision")
    ref = torchvision.models.resnet50()
    from senet.analysis.profile import count_macs

    ours = profile("resnet50", layout="torchvision")
    assert ours.params == sum(p.numel() for p in ref.parameters())
    assert ours.macs == count_macs(ref.eval(), torch.zeros(1, 3, 224, 224))


@pytest.mark.parametrize(
    ("overrides", "params_m"),
    [  # Tables 10 and 13-15: ablations on SE-ResNet-50 (params in M, the paper rounds to 0.1M).
        ({"reduction": 2}, 45.7),
        ({"reduction": 4}, 35.7),
        ({"reduction": 8}, 30.7),
        ({"reduction": 16}, 28.1),
        ({"reduction": 32}, 26.9),
        ({"stages": {2}}, 25.6),
        ({"stages": {3}}, 25.7),
        ({"stages": {4}}, 26.4),
        ({"position": "3x3"}, 25.8),
        ({"squeeze": "none"}, 28.1),
    ],
)
def test_ablation_parameter_counts(overrides, params_m):
    assert profile("se_resnet50", **overrides).params / 1e6 == pytest.approx(params_m, rel=0.01)


def test_ablation_multiply_adds():
    assert profile("se_resnet50", squeeze="none").gmacs == pytest.approx(4.27, rel=0.01)  # NoSqueeze
    assert profile("se_resnet50", position="3x3").gmacs == pytest.approx(3.86, rel=0.01)  # SE_3x3


def test_se_stages_select_the_right_layers():
    model = senet.create_model("se_resnet50", stages={3, 5})
    with_se = {name.split(".")[0] for name, m in model.named_modules() if isinstance(m, senet.SEBlock)}
    assert with_se == {"layer2", "layer4"}  # conv3_x and conv5_x


def _eq5_extra_params(channels_and_blocks, r=16):
    """Eq. 5 of the paper, plus the FC biases the release has."""
    return sum(n * (2 * c * c // r + c // r + c) for c, n in channels_and_blocks)


def test_se_overhead_follows_eq5():
    extra = profile("se_resnet50").params - profile("resnet50").params
    assert extra == _eq5_extra_params([(256, 3), (512, 4), (1024, 6), (2048, 3)])


@pytest.mark.parametrize(
    ("layout", "stride_on"),
    [("release", "conv1"), ("torchvision", "conv2")],
)
def test_stride_placement_per_layout(layout, stride_on):
    model = senet.create_model("se_resnet50", layout=layout)
    block = model.layer2[0]
    assert getattr(block, stride_on).stride == (2, 2)
    pool = model.stem.pool
    assert pool.ceil_mode == (layout == "release") and pool.padding == (0 if layout == "release" else 1)
    rx = senet.create_model("se_resnext50_32x4d")  # ResNeXt: stride on the 3x3 even in the release
    assert rx.layer2[0].conv2.stride == (2, 2) and rx.layer2[0].conv1.stride == (1, 1)
    assert senet.create_model("resnet50", stride_in_1x1=False).layer3[0].conv2.stride == (2, 2)


def test_senet154_structure():
    m = senet.create_model("senet154")
    assert [n for n, _ in m.stem.named_children()][:3] == ["conv1", "bn1", "relu1"]
    assert [m.stem.conv1.out_channels, m.stem.conv2.out_channels, m.stem.conv3.out_channels] == [64, 64, 128]
    b = m.layer1[0]
    assert (
        b.conv1.out_channels == 128 and b.conv2.out_channels == 256 and b.conv2.groups == 64
    )  # first 1x1 halved
    assert m.layer2[0].downsample[0].kernel_size == (3, 3) and m.layer2[0].downsample[0].stride == (2, 2)
    assert m.layer1[0].downsample[0].kernel_size == (1, 1)
    assert isinstance(m.pre_logits, torch.nn.Dropout) and m.pre_logits.p == 0.2
    assert isinstance(senet.create_model("se_resnet50").pre_logits, torch.nn.Identity)  # no silent dropout


def _block(integration: str, position: str = "after_block", inplanes: int = 64) -> Bottleneck:
    se = SEConfig(reduction=4, integration=integration, position=position)
    down = None
    if inplanes != 64:
        down = torch.nn.Sequential(torch.nn.Conv2d(inplanes, 64, 1, bias=False), torch.nn.BatchNorm2d(64))
    blk = Bottleneck(inplanes, 16, downsample=down, se=se).eval()
    for m in blk.modules():  # non-trivial BN so that a wiring mistake shows
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.weight.data.uniform_(0.5, 1.5)
    return blk


def _branch(b: Bottleneck, x: torch.Tensor, se_3x3=None) -> torch.Tensor:
    """The residual branch written out with the block's weights."""
    out = F.relu(b.bn1(b.conv1(x)))
    out = F.relu(b.bn2(b.conv2(out)))
    if se_3x3 is not None:
        out = se_3x3(out)
    return b.bn3(b.conv3(out))


def _se(se, x):
    s = torch.sigmoid(
        F.conv2d(
            F.relu(F.conv2d(x.mean((2, 3), keepdim=True), se.fc1.weight, se.fc1.bias)),
            se.fc2.weight,
            se.fc2.bias,
        )
    )
    return x * s


@torch.no_grad()
def test_integration_standard():
    b, x = _block("standard"), torch.randn(2, 64, 8, 8)
    assert b.se.channels == 64
    torch.testing.assert_close(b(x), F.relu(_se(b.se, _branch(b, x)) + x))


@torch.no_grad()
def test_integration_pre_puts_se_before_the_residual_unit():
    b, x = _block("pre", inplanes=32), torch.randn(2, 32, 8, 8)
    assert b.se.channels == 32  # acts on the block's input
    torch.testing.assert_close(b(x), F.relu(_branch(b, _se(b.se, x)) + b.downsample(x)))
    assert next(iter(b._modules)) == "se"  # registered in execution order


@torch.no_grad()
def test_integration_post_puts_se_after_the_summation():
    b, x = _block("post"), torch.randn(2, 64, 8, 8)
    torch.testing.assert_close(b(x), _se(b.se, F.relu(_branch(b, x) + x)))


@torch.no_grad()
def test_integration_identity_puts_se_on_the_shortcut():
    b, x = _block("identity", inplanes=32), torch.randn(2, 32, 8, 8)
    torch.testing.assert_close(b(x), F.relu(_branch(b, x) + _se(b.se, b.downsample(x))))


@torch.no_grad()
def test_position_3x3():
    b, x = _block("standard", position="3x3"), torch.randn(2, 64, 8, 8)
    assert b.se is None and b.se_3x3.channels == 16
    torch.testing.assert_close(b(x), F.relu(_branch(b, x, lambda t: _se(b.se_3x3, t)) + x))


@torch.no_grad()
def test_basic_block_integration():
    se = SEConfig(reduction=4)
    b = BasicBlock(16, 16, se=se).eval()
    x = torch.randn(2, 16, 6, 6)
    ref = F.relu(_se(b.se, b.bn2(b.conv2(F.relu(b.bn1(b.conv1(x)))))) + x)
    torch.testing.assert_close(b(x), ref)
    with pytest.raises(ValueError, match="bottleneck"):
        BasicBlock(16, 16, se=SEConfig(position="3x3"))


@pytest.mark.parametrize("name", ["se_resnet18", "se_resnet50", "se_resnext50_32x4d"])
@pytest.mark.parametrize("integration", ["standard", "pre", "post", "identity"])
def test_every_se_block_is_called_and_gets_a_gradient(name, integration):
    model = senet.create_model(name, num_classes=10, integration=integration)
    blocks = [m for m in model.modules() if isinstance(m, senet.SEBlock)]
    calls = []
    for b in blocks:
        b.register_forward_hook(lambda m, i, o: calls.append(m))
    model(torch.randn(2, 3, 64, 64)).logsumexp(1).sum().backward()
    assert len(blocks) == (8 if "18" in name else 16)
    assert sorted(map(id, calls)) == sorted(map(id, blocks))  # each SE block runs exactly once
    # fc2's bias reaches every gate, so it always gets a gradient; a weight may see none only
    # where all hidden ReLUs of a block are off for the batch (a handful of hidden units).
    assert all(b.fc2.bias.grad.abs().sum() > 0 for b in blocks)
    weights = [p for b in blocks for p in (b.fc1.weight, b.fc2.weight)]
    alive = sum(bool(p.grad is not None and p.grad.abs().sum() > 0) for p in weights)
    assert alive >= 0.8 * len(weights)


def test_other_input_sizes_and_classes():
    model = senet.create_model("se_resnet18", num_classes=7).eval()
    for size in (32, 97, 256):
        assert model(torch.randn(1, 3, size, size + 3)).shape == (1, 7)
    assert senet.create_model("resnet18", in_chans=1)(torch.randn(1, 1, 64, 64)).shape == (1, 1000)


@pytest.mark.parametrize(
    ("shape", "fragment"),
    [((1, 1, 224, 224), r"\(N, 3, H, W\)"), ((1, 3, 16, 16), "H, W >= 32"), ((3, 224, 224), "unsqueeze")],
)
def test_wrong_input_names_the_expected_shape(shape, fragment):
    model = senet.create_model("resnet18")
    with pytest.raises(ValueError, match=fragment):
        model(torch.randn(*shape))


def test_compiles_and_matches_eager():
    model = senet.create_model("se_resnet18", num_classes=5).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model)(x), model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_zero_init_residual_zeroes_the_bns_torchvision_zeroes(name):
    torchvision = pytest.importorskip("torchvision")
    tv = getattr(torchvision.models, name)(zero_init_residual=True)
    ours = senet.create_model(f"se_{name}", layout="torchvision", zero_init_residual=True)

    def zero_scales(model: torch.nn.Module) -> list[tuple[int, int]]:
        bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        return [(i, m.num_features) for i, m in enumerate(bns) if not m.weight.any()]

    assert zero_scales(ours) == zero_scales(tv) != []  # the same BNs, in the same order
    assert zero_scales(senet.create_model(f"se_{name}", layout="torchvision")) == []


def test_zero_init_residual_starts_every_unit_as_its_shortcut():
    model = senet.create_model("se_resnet20", zero_init_residual=True).eval()
    x = torch.randn(2, 16, 8, 8).relu()
    with torch.no_grad():
        for unit in (model.layer1[1], model.layer1[2]):
            torch.testing.assert_close(unit(x.clone()), x, rtol=0, atol=0)
    with pytest.raises(ValueError, match="zero_init_residual"):
        senet.create_model("se_wrn16_8", zero_init_residual=True)
