"""ShuffleNet v1 (1x, g=3) against the official Megvii figures and the paper's Table 3; SE on the
residual branch before the addition / concatenation, and the integration variants of Fig. 5."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F

import senet
from senet.analysis import profile
from senet.models.shufflenet import ChannelShuffle, ShuffleUnit

# Channels each SE block gates with the default (standard) integration: the residual branch of
# every unit; in the stride-2 units it gives out - in channels (240 - 24, 480 - 240, 960 - 480).
BRANCHES = [216, 240, 240, 240, 240] + [480] * 7 + [480, 960, 960, 960]


def test_plain_cost_matches_the_official_model():
    """Megvii's ShuffleNetV1 1.0x (group=3) README: 138M FLOPs (multiply-adds), 1.9M parameters;
    mmpretrain's port of it: 1.87M parameters."""
    prof = profile("shufflenet")
    assert prof.macs / 1e6 == pytest.approx(138, rel=0.01)
    assert prof.params / 1e6 == pytest.approx(1.87, rel=0.01)


def test_cost_against_table3():
    """Table 3: 1.8M / 140 MFLOPs, SE 2.4M / 142. The parameter figures fit when cut (not rounded)
    to 0.1M, as MobileNet's 4.23M / 4.72M -> 4.2M / 4.7M also do; 140 MFLOPs is the ShuffleNet
    paper's nominal budget of the whole 1x family, 2% above the g=3 model's own count."""
    plain, se = profile("shufflenet"), profile("se_shufflenet")
    assert 1.8 <= plain.params / 1e6 < 1.9
    assert 2.4 <= se.params / 1e6 < 2.5
    assert plain.macs / 1e6 == pytest.approx(140, rel=0.02)
    assert se.params - plain.params == sum(2 * c * (c // 16) + c // 16 + c for c in BRANCHES)  # Eq. 5


def test_se_cost_is_the_papers_plus_2_mflops():
    """Table 3's 140 -> 142: the excitation FCs plus one multiplication per gated activation."""
    with torch.device("meta"):  # shapes only: no memory, no arithmetic
        model = senet.create_model("se_shufflenet")
    gated = []
    for b in model.modules():
        if isinstance(b, senet.SEBlock):
            b.register_forward_hook(lambda m, i, o: gated.append(o.numel()))
    fc_macs = profile(model).macs - profile("shufflenet").macs
    assert fc_macs == sum(2 * c * (c // 16) for c in BRANCHES)
    assert round((fc_macs + sum(gated)) / 1e6) == 142 - 140


def test_se_after_the_summation_would_not_match_table3():
    """The placement check: SE after the addition / concatenation adds 0.73M parameters, not 0.6M."""
    extra = profile("se_shufflenet", integration="post").params - profile("shufflenet").params
    assert extra / 1e6 == pytest.approx(0.73, abs=0.01)
    assert profile("shufflenet").params / 1e6 + extra / 1e6 >= 2.5


def test_channel_shuffle_equals_torch():
    x = torch.randn(2, 12, 3, 3)
    torch.testing.assert_close(ChannelShuffle(3)(x), torch.nn.ChannelShuffle(3)(x))
    assert ChannelShuffle(3)(torch.arange(6.0).view(1, 6, 1, 1)).flatten().tolist() == [0, 2, 4, 1, 3, 5]


def test_structure():
    model = senet.create_model("shufflenet")
    s2, s3 = model.stage2, model.stage3
    assert [len(getattr(model, f"stage{i}")) for i in (2, 3, 4)] == [4, 8, 4]
    assert model.stem.conv.conv.out_channels == 24 and model.stem.conv.conv.stride == (2, 2)
    assert s2.unit1.conv1.conv.groups == 1 and s2.unit2.conv1.conv.groups == 3  # first pointwise not grouped
    assert s2.unit1.conv1.conv.out_channels == 60 and s2.unit1.conv3.conv.out_channels == 216
    assert s3.unit1.conv2.conv.stride == (2, 2) and s3.unit1.conv2.conv.groups == 120
    assert isinstance(s3.unit1.shortcut, torch.nn.AvgPool2d)
    assert isinstance(s3.unit2.shortcut, torch.nn.Identity)
    assert model.num_features == 960 and model.fc.in_features == 960


def _unit(integration: str, stride: int, position: str = "after_block") -> ShuffleUnit:
    in_ch = 12 if stride == 2 else 24
    se = senet.SEConfig(reduction=4, integration=integration, position=position)
    unit = ShuffleUnit(in_ch, 24, stride, groups=3, se=se).eval()
    for m in unit.modules():  # non-trivial BN so that a wiring mistake shows
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.weight.data.uniform_(0.5, 1.5)
    return unit


def _se(se, x):
    return x * torch.sigmoid(se.fc2(F.relu(se.fc1(x.mean((2, 3), keepdim=True)))))


def _shuffle(x, g=3):
    n, c, h, w = x.shape
    return x.view(n, g, c // g, h, w).transpose(1, 2).reshape(n, c, h, w)


def _branch(u: ShuffleUnit, x, se_3x3=None):
    out = F.relu(u.conv1.bn(u.conv1.conv(x)))
    out = u.conv2.bn(u.conv2.conv(_shuffle(out)))
    if se_3x3 is not None:
        out = _se(se_3x3, out)
    return u.conv3.bn(u.conv3.conv(out))


def _merge(shortcut, branch, stride):
    return F.relu(torch.cat((shortcut, branch), 1) if stride == 2 else shortcut + branch)


def _pool(x, stride):
    return F.avg_pool2d(x, 3, 2, 1) if stride == 2 else x


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("integration", ["standard", "pre", "post", "identity", "3x3"])
@torch.no_grad()
def test_se_integration_variants(integration, stride):
    position = "3x3" if integration == "3x3" else "after_block"
    u = _unit("standard" if integration == "3x3" else integration, stride, position)
    x = torch.rand(2, u.conv1.conv.in_channels, 8, 8)
    if integration == "standard":
        assert u.se.channels == (12 if stride == 2 else 24)  # the residual branch only
        ref = _merge(_pool(x, stride), _se(u.se, _branch(u, x)), stride)
    elif integration == "pre":
        ref = _merge(_pool(x, stride), _branch(u, _se(u.se, x)), stride)
    elif integration == "post":
        ref = _se(u.se, _merge(_pool(x, stride), _branch(u, x), stride))
    elif integration == "identity":
        ref = _merge(_se(u.se, _pool(x, stride)), _branch(u, x), stride)
    else:
        ref = _merge(_pool(x, stride), _branch(u, x, u.se), stride)
    blocks = [m for m in u.modules() if isinstance(m, senet.SEBlock)]
    assert len(blocks) == 1 and [n for n, m in u.named_modules() if m is blocks[0]] == ["se"]
    torch.testing.assert_close(u(x), ref)
    # A checkpoint of before the block was always `se` (se_pre / se_3x3 / se_identity / se_post) loads.
    if integration != "standard":
        old = {k.replace("se.", f"se_{integration}.", 1) if k.startswith("se.") else k: v
               for k, v in u.state_dict().items()}  # fmt: skip
        fresh = _unit("standard" if integration == "3x3" else integration, stride, position)
        fresh.load_state_dict(old)
        torch.testing.assert_close(fresh.eval()(x), u.eval()(x))


def test_one_se_block_per_residual_branch():  # forward/backward: tests/models/test_all_models.py
    with torch.device("meta"):
        blocks = [m for m in senet.create_model("se_shufflenet").modules() if isinstance(m, senet.SEBlock)]
    assert [b.channels for b in blocks] == BRANCHES


def test_stages_are_numbered_2_to_4():
    model = senet.create_model("se_shufflenet", stages={4})
    assert [b.channels for b in model.modules() if isinstance(b, senet.SEBlock)] == [480, 960, 960, 960]
    with pytest.raises(ValueError, match="ShuffleNet has stages"):
        senet.create_model("se_shufflenet", stages={1})


def test_other_input_sizes_pickling_and_bad_input():
    model = senet.create_model("se_shufflenet", num_classes=4, integration="identity").eval()
    x = torch.randn(1, 3, 32, 47)
    with torch.no_grad():
        torch.testing.assert_close(pickle.loads(pickle.dumps(model))(x), model(x))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match="groups=5"):
        senet.create_model("shufflenet").__class__(groups=5)
