"""insert_se: SE added to torchvision networks in place (paper Fig. 3, Sec. 3.3)."""

from __future__ import annotations

import copy
import io
import math
import pickle

import pytest
import timm
import torch
import torchvision
from torch import nn

import senet
from senet.se import ScaledSigmoid, SEBlock
from senet.surgery import ActThenSE, BNThenSE, insert_se

PLAIN_RESNET50 = 25_557_032  # SENET.md, official release
SE_RESNET50 = 28_088_024  # SENET.md, official release
SE_RESNEXT50 = 27_559_896  # SENET.md, official release (32x4d)


def _tv(name: str, **kw) -> nn.Module:
    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None, **kw)


def _meta(name: str) -> nn.Module:
    """A network without storage, for tests of structure and counts (no time spent on weights)."""
    with torch.device("meta"):
        return getattr(torchvision.models, name)(weights=None)


def _se_blocks(model: nn.Module) -> list[SEBlock]:
    return [m for m in model.modules() if isinstance(m, SEBlock)]


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _x(n: int = 2, size: int = 32) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def _randomise_bn(model: nn.Module) -> None:
    """Give every BN non-trivial statistics and affine parameters, as in a trained network."""
    g = torch.Generator().manual_seed(2)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
            m.running_var.copy_(0.5 + torch.rand(c, generator=g))
            with torch.no_grad():
                m.weight.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.copy_(0.1 * torch.randn(c, generator=g))


@pytest.mark.parametrize(
    ("name", "paper_count"), [("resnet50", SE_RESNET50), ("resnext50_32x4d", SE_RESNEXT50)]
)
def test_param_count_and_widths_match_release(name: str, paper_count: int) -> None:
    model = insert_se(_meta(name))
    with torch.device("meta"):
        ours = senet.create_model(f"se_{name}", layout="torchvision")
    assert _count(model) == _count(ours) == paper_count
    blocks = _se_blocks(model)
    assert len(blocks) == 16  # 3 + 4 + 6 + 3 bottlenecks
    assert sorted({b.channels for b in blocks}) == [256, 512, 1024, 2048]
    for b in blocks:
        assert b.fc1.out_channels == b.channels // 16
        assert b.fc2.out_channels == b.channels


@pytest.mark.parametrize(("tv_name", "timm_name"), [("resnet18", "seresnet18"), ("resnet50", "seresnet50")])
def test_same_function_as_timm_seresnet(tv_name: str, timm_name: str) -> None:
    """timm's SE-ResNet puts SE after bn3 (bn2), before the addition: same weights, same outputs.

    timm rounds the hidden width to a multiple of 8 (64 // 16 = 4 -> 8), hence ``divisor=8``.
    """
    reference = timm.create_model(timm_name, pretrained=False).eval()
    _randomise_bn(reference)
    model = insert_se(_tv(tv_name), divisor=8).eval()
    last_bn = "bn3" if tv_name == "resnet50" else "bn2"
    state = {}
    for k, v in reference.state_dict().items():
        parts = k.split(".")
        if k.startswith("layer") and parts[2] == "se":
            k = ".".join([*parts[:2], last_bn, *parts[2:]])
        elif k.startswith("layer") and parts[2] == last_bn:
            k = ".".join([*parts[:2], last_bn, "bn", *parts[3:]])
        state[k] = v
    model.load_state_dict(state, strict=True)
    x = _x(1, 64)
    with torch.no_grad():
        expected, got = reference(x), model(x)
    assert (expected - got).abs().max().item() <= 1e-4 * expected.abs().max().item()


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2", "vgg11_bn"])
def test_identity_init_keeps_outputs(name: str) -> None:
    model = _tv(name).eval()
    _randomise_bn(model)
    x = _x(1, 64)
    with torch.no_grad():
        before = model(x)
        assert insert_se(model, init="identity") is model
        after = model(x)
    assert len(_se_blocks(model)) > 0
    assert (before - after).abs().max().item() <= 1e-5


def test_vgg_se_after_each_conv_relu() -> None:
    model = insert_se(_meta("vgg11_bn"))
    layers = list(model.features)
    wrapped = [i for i, m in enumerate(layers) if isinstance(m, ActThenSE)]
    convs = [i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d)]
    assert wrapped == [i + 2 for i in convs]  # conv, BN, ReLU -> SE
    for i in wrapped:
        assert isinstance(layers[i].act, nn.ReLU)
        assert isinstance(layers[i - 1], nn.BatchNorm2d)
        assert layers[i].se.channels == layers[i - 2].out_channels
        assert layers[i].se.hidden == layers[i - 2].out_channels // 16


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "vgg11_bn"])
def test_default_init_blocks_are_called_and_change_outputs(name: str) -> None:
    model = _tv(name).eval()
    x = _x()
    with torch.no_grad():
        before = model(x)
    insert_se(model)
    with torch.no_grad():
        after = model(x)
    assert (before - after).abs().max().item() > 1e-3
    model.train()
    model(x).square().mean().backward()
    blocks = _se_blocks(model)
    for b in blocks:
        assert isinstance(b.gate, nn.Sigmoid)
        for pname, p in b.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, pname


def test_default_init_is_he_normal() -> None:
    """fc convolutions He-normal (fan-out) with zero biases, as senet's own networks; fc2 not zero."""
    last = _se_blocks(insert_se(_tv("resnet50")))[-1]
    for fc in (last.fc1, last.fc2):
        expected = math.sqrt(2.0 / fc.out_channels)
        assert abs(fc.weight.std().item() / expected - 1) < 0.05
        assert not fc.bias.any()


def test_identity_init_can_learn() -> None:
    """The identity start is not a dead end: fc2 gets a gradient, one step moves the outputs."""
    model = insert_se(_tv("resnet18"), init="identity")
    blocks = _se_blocks(model)
    assert all(isinstance(b.gate, ScaledSigmoid) and not b.fc2.weight.any() for b in blocks)
    x = _x()
    model.eval()
    with torch.no_grad():
        before = model(x)
    model(x).square().mean().backward()
    for b in blocks:
        assert b.fc2.weight.grad.abs().sum() > 0
    with torch.no_grad():
        for b in blocks:
            for p in b.parameters():
                p -= 1.0 * p.grad
        after = model(x)
    assert (before - after).abs().max().item() > 1e-4


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def test_deepcopy_and_pickle() -> None:
    model = insert_se(_tv("resnet18"))
    x = _x()
    expected = _outputs(model, x)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert len(_se_blocks(clone)) == 8
        assert torch.equal(_outputs(clone, x), expected)


def test_state_dict_round_trip_between_models() -> None:
    source = insert_se(_tv("resnet50"))
    _randomise_bn(source)
    torch.manual_seed(5)
    target = insert_se(torchvision.models.resnet50(weights=None))
    x = _x()
    assert not torch.allclose(_outputs(source, x), _outputs(target, x))
    buf = io.BytesIO()
    torch.save(source.state_dict(), buf)
    buf.seek(0)
    target.load_state_dict(torch.load(buf, weights_only=True), strict=True)
    assert torch.equal(_outputs(source, x), _outputs(target, x))
    assert "layer1.0.bn3.bn.weight" in source.state_dict()
    assert "layer1.0.bn3.se.fc1.weight" in source.state_dict()


def test_plain_checkpoint_loads_after_insertion() -> None:
    """Weights saved without SE (old bn3.* keys) load; only the SE parameters are missing."""
    plain = _tv("resnet50").eval()
    _randomise_bn(plain)
    state = plain.state_dict()
    keys = list(state)
    torch.manual_seed(7)
    model = insert_se(torchvision.models.resnet50(weights=None), init="identity")
    result = model.load_state_dict(state, strict=False)
    se_keys = {k for k in model.state_dict() if ".se." in k}
    assert set(result.missing_keys) == se_keys and len(se_keys) == 16 * 4
    assert result.unexpected_keys == []
    assert list(state) == keys  # the caller's dict is not renamed
    x = _x()
    assert (_outputs(plain, x) - _outputs(model, x)).abs().max().item() <= 1e-5


def test_blocks_follow_dtype_device_and_mode() -> None:
    model = _tv("resnet18").double().eval()
    insert_se(model)
    for b in _se_blocks(model):
        assert b.fc1.weight.dtype == torch.float64
        assert not b.training
    meta = insert_se(torchvision.models.resnet18(weights=None).to("meta"))
    assert all(p.device.type == "meta" for p in meta.parameters())
    model.float()
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert sum(isinstance(m, BNThenSE) for m in model.modules()) == 8


def test_torch_compile_full_graph() -> None:
    model = insert_se(_tv("resnet18")).eval()
    x = _x()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x), atol=1e-6)


@pytest.mark.parametrize(("stage", "paper_m"), [(2, 25.6), (3, 25.7), (4, 26.4)])
def test_stages_match_paper_ablation(stage: int, paper_m: float) -> None:
    """SE_Stage_k of the ablation (Sec. 7): SE-ResNet-50 with SE in one stage only."""
    model = insert_se(_meta("resnet50"), stages={stage})
    n = _count(model)
    assert abs(n / 1e6 - paper_m) <= 0.06  # the paper prints 26.35M (stage 4) as 26.4M
    assert len(_se_blocks(model)) == {2: 3, 3: 4, 4: 6}[stage]
    assert all(isinstance(getattr(model, f"layer{stage - 1}")[i].bn3, BNThenSE) for i in range(2))
    assert n > PLAIN_RESNET50


def test_vgg_stages() -> None:
    model = insert_se(_meta("vgg11_bn"), stages={5})
    assert [b.channels for b in _se_blocks(model)] == [512, 512]
    assert isinstance(model.features[24], ActThenSE) and isinstance(model.features[27], ActThenSE)


def test_refuses_model_without_a_place_for_se() -> None:
    """No residual unit and no conv-norm-act chain (the norm is missing): nothing to recalibrate."""
    with pytest.raises(ValueError, match="no place for SE in Sequential.*norm.*where="):
        insert_se(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()))
    with pytest.raises(ValueError, match="takes an nn.Module.*create_model"):
        insert_se("resnet50")  # type: ignore[arg-type]


def test_refuses_second_insertion() -> None:
    model = insert_se(_tv("resnet18"))
    with pytest.raises(ValueError, match="already has 8 SE blocks"):
        insert_se(model)
    assert len(_se_blocks(model)) == 8


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"squeeze": "mean"}, "squeeze='mean' is not one of"),
        ({"reduction": 0}, "reduction=0"),
        ({"reductoin": 8}, "did you mean 'reduction'"),
        ({"integration": "sideways"}, "integration='sideways' is not one of"),
        ({"position": "3x3"}, "supports SE position"),
        ({"stages": {6}}, "do not exist"),
        ({"init": "identity", "excitation": "tanh"}, "needs the sigmoid gate"),
    ],
)
def test_refuses_bad_options_and_leaves_model_unchanged(options: dict, message: str) -> None:
    model = _tv("resnet18")
    keys = list(model.state_dict())
    with pytest.raises(ValueError, match=message):
        insert_se(model, **options)
    assert list(model.state_dict()) == keys
