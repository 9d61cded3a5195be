"""MobileNet v1 against timm's mobilenetv1_100 and the paper's Table 3; SE after each pointwise ReLU."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F

import senet
from senet.analysis import profile
from senet.analysis.profile import count_macs
from senet.models.mobilenet import DepthwiseSeparable

# Paper, Table 3 (params rounded to 0.1M, MFLOPs = multiply-adds at 224x224).
TABLE3 = {"mobilenet": (4.2, 569), "se_mobilenet": (4.7, 572)}
# Pointwise output channels of the thirteen units (Howard et al. 2017, Table 1).
POINTWISE = [64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]


@pytest.mark.parametrize(("name", "figures"), TABLE3.items())
def test_params_and_multiply_adds_match_table3(name, figures):
    params_m, mmacs = figures
    prof = profile(name)
    assert prof.params / 1e6 == pytest.approx(params_m, abs=0.05)  # the paper's rounding to 0.1M
    assert prof.macs / 1e6 == pytest.approx(mmacs, rel=0.01)


def test_plain_mobilenet_matches_timm_mobilenetv1_100():
    timm = pytest.importorskip("timm")
    with torch.device("meta"):
        ref = timm.create_model("mobilenetv1_100", pretrained=False)
        ours = senet.create_model("mobilenet")
    assert [p.shape for p in ours.parameters()] == [p.shape for p in ref.parameters()]
    x = torch.zeros(1, 3, 224, 224, device="meta")
    assert count_macs(ours.eval(), x) == count_macs(ref.eval(), x)


def test_se_cost_is_the_papers_plus_3_mflops():
    """Table 3's 569 -> 572: the excitation FCs plus one multiplication per gated activation."""
    with torch.device("meta"):  # shapes only: no memory, no arithmetic
        model = senet.create_model("se_mobilenet")
    gated = []
    for b in model.modules():
        if isinstance(b, senet.SEBlock):
            b.register_forward_hook(lambda m, i, o: gated.append(o.numel()))
    fc_macs = profile(model).macs - profile("mobilenet").macs
    assert fc_macs == sum(2 * c * (c // 16) for c in POINTWISE)  # excitation FCs (hand count)
    assert len(gated) == 13
    assert round((fc_macs + sum(gated)) / 1e6) == 572 - 569
    extra_params = profile("se_mobilenet").params - profile("mobilenet").params
    assert extra_params == sum(2 * c * (c // 16) + c // 16 + c for c in POINTWISE)  # Eq. 5 + biases


@torch.no_grad()
def test_se_sits_after_the_pointwise_relu():
    unit = DepthwiseSeparable(32, 64, 2, se=senet.SEConfig(reduction=4)).eval()
    for m in unit.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 32, 8, 8)
    dw, pw, se = unit.dw, unit.pw, unit.se
    out = F.relu(pw.bn(pw.conv(F.relu(dw.bn(dw.conv(x))))))
    gate = torch.sigmoid(se.fc2(F.relu(se.fc1(out.mean((2, 3), keepdim=True)))))
    torch.testing.assert_close(unit(x), out * gate)
    assert dw.conv.groups == 32 and dw.conv.stride == (2, 2) and pw.conv.kernel_size == (1, 1)
    assert list(unit._modules) == ["dw", "pw", "se"]


def test_one_se_block_per_pointwise_convolution():  # forward/backward: tests/models/test_all_models.py
    with torch.device("meta"):
        blocks = [m for m in senet.create_model("se_mobilenet").modules() if isinstance(m, senet.SEBlock)]
    assert [b.channels for b in blocks] == POINTWISE


def test_stages_are_numbered_by_output_stride():
    model = senet.create_model("se_mobilenet", stages={1, 4})
    assert [b.channels for b in model.modules() if isinstance(b, senet.SEBlock)] == [64] + [512] * 6
    assert [len(getattr(model, f"stage{i}")) for i in range(1, 6)] == [1, 2, 2, 6, 2]
    strides = [u.dw.conv.stride[0] for i in range(1, 6) for u in getattr(model, f"stage{i}")]
    assert strides == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]  # Howard et al. Table 1 (last unit: stride 1)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"integration": "identity"}, "integration"),
        ({"position": "3x3"}, "position"),
        ({"stages": {0}}, "stages"),
    ],
)
def test_meaningless_se_options_are_refused(overrides, fragment):
    with pytest.raises(ValueError, match=f"MobileNet .*{fragment}"):
        senet.create_model("se_mobilenet", **overrides)


def test_other_input_sizes_and_pickling():
    model = senet.create_model("se_mobilenet", num_classes=5).eval()
    assert model.num_features == 1024 and not any(isinstance(m, torch.nn.Dropout) for m in model.modules())
    x = torch.randn(1, 3, 32, 50)
    with torch.no_grad():
        torch.testing.assert_close(pickle.loads(pickle.dumps(model))(x), model(x))
    with pytest.raises(ValueError, match="H, W >= 32"):
        model(torch.randn(1, 3, 31, 64))
