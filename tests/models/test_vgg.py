"""VGG-16-BN vs torchvision's vgg16_bn and Table 2; SE after each conv's ReLU (Sec. 3.3)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import senet
from senet.analysis import profile
from senet.analysis.profile import count_macs
from senet.models.vgg import VGGUnit

# Paper, Table 2: GFLOPs (multiply-adds) at 224x224, VGG-16 re-implementation / SE-VGG-16.
TABLE2_GMACS = {"vgg16": 15.47, "se_vgg16": 15.48}
# Output channels of VGG-16's thirteen 3x3 convolutions (Simonyan & Zisserman, configuration D).
VGG16_WIDTHS = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]


@pytest.mark.parametrize(("name", "gmacs"), TABLE2_GMACS.items())
def test_multiply_adds_within_1pct_of_table2(name, gmacs):
    assert profile(name).gmacs == pytest.approx(gmacs, rel=0.01)


def test_plain_vgg16_has_torchvision_vgg16_bn_layers():
    torchvision = pytest.importorskip("torchvision")
    with torch.device("meta"):
        ref = torchvision.models.vgg16_bn(weights=None)
        ours = senet.create_model("vgg16")
    assert [p.shape for p in ours.parameters()] == [p.shape for p in ref.parameters()]  # classifier included
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    x = torch.zeros(1, 3, 224, 224, device="meta")
    assert count_macs(ours.eval(), x) == count_macs(ref.eval(), x)


def test_se_overhead_follows_eq5():
    extra = profile("se_vgg16").params - profile("vgg16").params
    assert extra == sum(2 * c * (c // 16) + c // 16 + c for c in VGG16_WIDTHS)  # Eq. 5 + FC biases


@torch.no_grad()
def test_se_input_is_the_relu_output_of_its_convolution():
    model = senet.create_model("se_vgg16", num_classes=10, hidden=16).eval()  # small head: faster
    for m in model.modules():  # non-trivial BN statistics, so that a wiring mistake shows
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.weight.uniform_(0.5, 1.5)
    units = [m for m in model.modules() if isinstance(m, VGGUnit)]
    seen: dict[int, list[torch.Tensor]] = {}
    for u in units:
        u.register_forward_pre_hook(lambda m, i: seen.setdefault(id(m), []).append(i[0].clone()))
        u.se.register_forward_pre_hook(lambda m, i: seen.setdefault(id(m), []).append(i[0].clone()))
    model(torch.randn(2, 3, 32, 32))
    assert [u.conv.out_channels for u in units] == VGG16_WIDTHS
    for u in units:
        (unit_in,), (se_in,) = seen[id(u)], seen[id(u.se)]
        torch.testing.assert_close(se_in, F.relu(u.bn(u.conv(unit_in))))
    assert list(units[0]._modules) == ["conv", "bn", "act", "se"]  # registered in execution order


def test_one_se_block_per_convolution():  # forward, backward, gradients: tests/models/test_all_models.py
    with torch.device("meta"):
        blocks = [m for m in senet.create_model("se_vgg16").modules() if isinstance(m, senet.SEBlock)]
    assert [b.channels for b in blocks] == VGG16_WIDTHS


def test_stages_are_numbered_as_conv_blocks():
    model = senet.create_model("se_vgg16", stages={1, 5})
    with_se = sorted({n.split(".")[0] for n, m in model.named_modules() if isinstance(m, senet.SEBlock)})
    assert with_se == ["stage1", "stage5"]
    assert [b.channels for b in model.modules() if isinstance(b, senet.SEBlock)] == [64, 64, 512, 512, 512]


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"integration": "post"}, "integration"),
        ({"position": "3x3"}, "position"),
        ({"stages": {6}}, "stages"),
    ],
)
def test_meaningless_se_options_are_refused(overrides, fragment):
    with pytest.raises(ValueError, match=f"VGG .*{fragment}"):
        senet.create_model("se_vgg16", **overrides)


def test_classifier_and_other_input_sizes():
    with torch.device("meta"):
        full = senet.create_model("vgg16", num_classes=7)
    drops = [m.p for m in full.pre_logits if isinstance(m, torch.nn.Dropout)]
    assert drops == [0.5, 0.5] and full.fc.in_features == 4096 and full.num_features == 512
    assert full.fc.out_features == 7 and full.pre_logits.fc6.in_features == 512 * 7 * 7
    model = senet.create_model("vgg16", num_classes=7, hidden=16).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 45)).shape == (1, 7)
    with pytest.raises(ValueError, match="H, W >= 32"):
        model(torch.randn(1, 3, 16, 16))
    gray = senet.create_model("vgg16", in_chans=1, hidden=16, drop_rate=0.0)
    assert gray(torch.randn(1, 1, 32, 32)).shape == (1, 1000)
