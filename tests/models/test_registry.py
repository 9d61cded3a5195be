"""The registry: names, twins, overrides routed to SE or refused with the fix."""

from __future__ import annotations

import pytest

import senet
from senet import SEBlock, SEConfig


def _n_se(model) -> int:
    return sum(isinstance(m, SEBlock) for m in model.modules())


def test_list_models_and_pattern():
    names = senet.list_models()
    for n in ["resnet50", "se_resnet50", "se_resnext101_32x4d", "senet154", "resnet18", "se_resnet34"]:
        assert n in names
    assert names == sorted(names)
    assert all(n.startswith("se_") for n in senet.list_models("se_*"))


def test_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match="Unknown model 'se_resnet5'.*se_resnet50"):
        senet.create_model("se_resnet5")


def test_plain_twin_is_one_flag_apart():
    assert _n_se(senet.create_model("resnet50")) == 0
    assert _n_se(senet.create_model("resnet50", se=True)) == 16
    assert _n_se(senet.create_model("se_resnet50", se=False)) == 0
    cfg = SEConfig(reduction=8)
    assert senet.create_model("resnet50", se=cfg).layer1[0].se.hidden == 256 // 8
    assert senet.create_model("se_resnet50", se={"reduction": 4}).layer1[0].se.hidden == 64
    assert senet.model_info("se_resnet50").twin == "resnet50"


def test_se_knobs_reach_every_block():
    m = senet.create_model("se_resnet50", reduction=8, squeeze="max", excitation="tanh", bias=False)
    blocks = [b for b in m.modules() if isinstance(b, SEBlock)]
    assert all(b.squeeze_mode == "max" and b.fc1.bias is None and b.hidden == b.channels // 8 for b in blocks)


def test_bad_overrides_name_the_fix():
    with pytest.raises(ValueError, match="does not take widht.*layout"):
        senet.create_model("resnet50", widht=3)
    with pytest.raises(ValueError, match="has no SE blocks.*se_resnet50"):
        senet.create_model("resnet50", reduction=8)
    with pytest.raises(ValueError, match="layout='caffe'"):
        senet.create_model("resnet50", layout="caffe")
    with pytest.raises(ValueError, match="stages"):
        senet.create_model("se_resnet50", stages={1})


def test_num_classes_default_and_override():
    assert senet.create_model("resnet18").fc.out_features == 1000
    assert senet.create_model("resnet18", num_classes=10).fc.out_features == 10
