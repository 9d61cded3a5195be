"""Every registered network as a backbone (timm's ``test_model_forward_features``, stricter).

For each name of ``senet.list_models()``: ``create_model(name, features_only=True)`` returns one map
per requested ``feature_info`` entry, with the declared channels and stride, and ``out_indices``
selects a subset computed by a network cut after the deepest map asked for. Weights are random:
nothing is downloaded.
"""

from __future__ import annotations

import math

import pytest
import torch

import senet
from senet.features import FeatureExtractor
from senet.models import model_info

NAMES = senet.list_models()
# The strides of each family's feature_info (see the family modules' docstrings); entry 0 is the stem.
REDUCTIONS = {
    "ResNet": (4, 4, 8, 16, 32),
    "CifarResNet": (1, 1, 2, 4),
    "PreActResNet": (1, 1, 2, 4),
    "ShakeShakeNet": (1, 1, 2, 4),
    "VGG": (1, 2, 4, 8, 16, 32),
    "MobileNet": (2, 2, 4, 8, 16, 32),
    "ShuffleNet": (4, 8, 16, 32),
    "BNInception": (2, 4, 8, 16, 32),
    "InceptionResNetV2": (2, 4, 8, 16, 32),
}
# Deep or wide networks, and plain twins of costly SE networks (same class, same feature_info code):
# every family keeps members in the default run.
SLOW = {
    "inception_resnet_v2",
    "resnet50",
    "resnet101",
    "resnet110",
    "resnet152",
    "resnet164",
    "resnext50_32x4d",
    "resnext101_32x4d",
    "se_resnet101",
    "se_resnet152",
    "se_resnext50_32x4d",
    "se_resnext101_32x4d",
    "se_shake_even29_2x4x64d",
    "senet154",
    "shake_even29_2x4x64d",
    "shake_shake26_2x96d",
    "vgg16",
    "wrn16_8",
}
# One network per family: their maps are also compared with the classifier network's own.
FAMILIES = [
    "se_resnet50",
    "se_resnet20",
    "se_resnet164",
    "se_shake_shake26_2x96d",
    "se_vgg16",
    "se_mobilenet",
    "se_shufflenet",
    "se_bn_inception",
    "se_inception_resnet_v2",
]


def _family(name: str) -> str:
    cls = model_info(name).network_class
    assert cls is not None, name
    return cls.__name__


def _input_size(name: str) -> int:
    """CIFAR's 32x32; for ImageNet networks the smallest input they take (a 1x1 map at stride 32;
    75 for Inception-ResNet-v2, which pads 'VALID'). ``check_maps`` also runs 32 pixels more."""
    if model_info(name).dataset == "cifar":
        return 32
    return 75 if _family(name) == "InceptionResNetV2" else 32


def check_maps(feats: FeatureExtractor, declared: list[dict], x: torch.Tensor) -> list[torch.Tensor]:
    """Run ``feats`` on ``x`` and on an input R pixels larger (R: the deepest declared reduction) and
    check each map against its ``declared`` entry: channels; stride (a map of reduction r grows by
    exactly R / r pixels); spatial size ceil(size / r) (at most that for Inception-ResNet-v2, which
    pads 'VALID'; timm only bounds it by ceil(size / r) + 1). Returns the maps of ``x``."""
    size = x.shape[-1]
    big = max(entry["reduction"] for entry in declared)
    valid_padding = "inception_resnet" in feats.model_name
    with torch.no_grad():
        outs = feats(x)
        grown = feats(torch.randn(1, x.shape[1], size + big, size + big))
    assert len(outs) == len(grown) == len(declared) == len(feats.feature_info)
    for entry, o, g in zip(declared, outs, grown, strict=True):
        where = f"{feats.model_name} {entry['module']}"
        r = entry["reduction"]
        assert o.shape[:2] == (x.shape[0], entry["num_chs"]), (
            f"{where}: {tuple(o.shape)}, {entry['num_chs']} declared"
        )
        assert g.shape[-1] - o.shape[-1] == big // r, f"{where}: not at stride {r}"
        expected = math.ceil(size / r)
        ok = o.shape[-1] <= expected if valid_padding else o.shape[-1] == expected
        assert ok and o.shape[-2] == o.shape[-1], f"{where}: {tuple(o.shape[-2:])} for {size}px at stride {r}"
        assert torch.isfinite(o).all(), where
    return outs


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in NAMES])
def test_features_only_and_out_indices(name: str) -> None:
    n = len(REDUCTIONS[_family(name)])
    feats = senet.create_model(name, features_only=True, out_indices=tuple(range(n))).eval()
    declared = feats.feature_info
    assert tuple(e["reduction"] for e in declared) == REDUCTIONS[_family(name)]
    assert not any(k.startswith(("fc.", "pre_logits.")) for k in feats.state_dict())
    size = _input_size(name)
    x = torch.randn(1, feats.in_chans, size, size)
    outs = check_maps(feats, declared, x)

    subset = (0, n // 2)
    sub = senet.create_model(name, features_only=True, out_indices=subset).eval()
    missing, unexpected = sub.load_state_dict(feats.state_dict(), strict=False)
    assert not missing and unexpected, "the subset network must be the full one cut after its deepest map"
    assert sub.feature_info == [declared[i] for i in subset]
    with torch.no_grad():
        picked = sub(x)
    assert [o.shape[1] for o in picked] == sub.channels
    for i, o in zip(subset, picked, strict=True):
        torch.testing.assert_close(o, outs[i], rtol=0, atol=0)


@pytest.mark.parametrize("name", FAMILIES)
def test_maps_are_the_network_own_stage_outputs(name: str) -> None:
    """The extractor's maps equal the outputs of the declared modules in the classifier network."""
    model = senet.create_model(name).eval()
    seen: dict[str, torch.Tensor] = {}
    handles = [
        model.get_submodule(e["module"]).register_forward_hook(
            lambda m, a, out, key=e["module"]: seen.__setitem__(key, out.clone())
        )
        for e in model.feature_info
    ]
    x = torch.randn(1, 3, _input_size(name), _input_size(name))
    with torch.no_grad():
        last = model.forward_features(x)
        for h in handles:
            h.remove()
        feats = FeatureExtractor(model, range(len(model.feature_info))).eval()  # shares the model's modules
        outs = feats(x)
    default = FeatureExtractor(model)  # what create_model(name, features_only=True) returns
    assert default.feature_info == model.feature_info[1:]
    assert list(seen) == [e["module"] for e in model.feature_info]
    for o, key in zip(outs, seen, strict=True):
        torch.testing.assert_close(o, seen[key], rtol=0, atol=0)
    if name not in ("se_resnet164", "se_shake_shake26_2x96d"):  # these end with a BN-ReLU / ReLU
        torch.testing.assert_close(outs[-1], last, rtol=0, atol=0)


@pytest.mark.parametrize(
    "corrupt", [("num_chs", lambda c: c + 1), ("reduction", lambda r: 2 * r), ("reduction", lambda r: r // 2)]
)
def test_a_wrong_declaration_fails_the_check(corrupt) -> None:
    key, change = corrupt
    feats = senet.create_model("resnet20", features_only=True, out_indices=(0, 1, 2, 3)).eval()
    declared = [dict(e) for e in feats.feature_info]
    check_maps(feats, declared, torch.randn(1, 3, 32, 32))
    declared[2][key] = change(declared[2][key])
    with pytest.raises(AssertionError):
        check_maps(feats, declared, torch.randn(1, 3, 32, 32))


def test_feature_modules_inside_sequential_containers_keep_their_names() -> None:
    feats = senet.create_model("se_vgg16", features_only=True, out_indices=(0, 2), frozen_stages=0)
    assert feats.return_layers == ["stage1.conv2", "stage3.conv3"]
    assert list(feats.stage3._modules) == ["conv1", "conv2", "conv3"]  # cut before the pool
    assert not hasattr(feats, "stage4")
    frozen = {k for k, p in feats.named_parameters() if not p.requires_grad}
    assert frozen == {k for k, _ in feats.named_parameters() if k.startswith("stage1.")}
    feats.train()
    assert not feats.stage1.conv2.training and feats.stage2.conv1.training
    bn = senet.create_model("bn_inception", features_only=True, out_indices=(1, 3))
    assert list(bn.blocks._modules)[-1] == "inception_4d" and list(bn.stem._modules)[-1] == "pool2_3x3_s2"


def test_declarations_the_extractor_cannot_follow_are_refused() -> None:
    net = torch.nn.Module()
    net.stem = torch.nn.Conv2d(3, 4, 3)
    net.body = torch.nn.ModuleDict({"a": torch.nn.Conv2d(4, 4, 3)})

    def entry(module: str) -> dict:
        return {"module": module, "num_chs": 4, "reduction": 1, "stage": 0}

    for modules, message in (
        (["stem", "body.a"], "inside 'body', not an nn.Sequential"),
        (["body", "stem"], "not in execution order at 'stem'"),
        (["stem", "head"], "'head' is not a module of the network"),
    ):
        net.feature_info = [entry(m) for m in modules]
        with pytest.raises(ValueError, match=message):
            FeatureExtractor(net)
