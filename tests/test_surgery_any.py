"""insert_se on any network, from its traced structure (paper Fig. 3 / Fig. 5, Sec. 3.3, Eq. 5).

For every network: identity-initialised SE keeps the eval outputs (with non-trivial BN statistics),
the added parameters are Eq. 5's sum over the inserted blocks, every SE parameter gets a gradient,
and the network exports to ONNX with the same logits in onnxruntime.
"""

from __future__ import annotations

import copy
import functools
import pickle
import warnings

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import senet
from senet.se import SEBlock
from senet.surgery import ActThenSE, BNThenSE, ModuleThenSE, SEThenModule, insert_se


class TinyResNet(nn.Module):
    """A hand-written CNN: a stem, two residual units (one with a projection shortcut, functional
    ReLU after the sum), global pooling and a classifier."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.block1 = TinyUnit(16, 16)
        self.block2 = TinyUnit(16, 32, stride=2)
        self.head = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.block1(self.stem(x)))
        return self.head(x.mean((2, 3)))


class TinyUnit(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.norm2 = nn.GroupNorm(4, cout)
        self.proj = None if stride == 1 and cin == cout else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm2(self.conv2(F.relu(self.norm1(self.conv1(x)))))
        shortcut = x if self.proj is None else self.proj(x)
        return F.relu(out + shortcut)


class AudioNet(nn.Module):
    """A plain 1-D CNN for (N, C, L) signals: three conv-BN-ReLU layers."""

    def __init__(self) -> None:
        super().__init__()
        layers = []
        for cin, cout in ((2, 32), (32, 48), (48, 64)):
            layers += [nn.Conv1d(cin, cout, 5, padding=2, bias=False), nn.BatchNorm1d(cout), nn.ReLU()]
            layers.append(nn.MaxPool1d(2))
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(64, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(2))


def _tv(name: str) -> nn.Module:
    return getattr(torchvision.models, name)(weights=None)


def _vgg16_bn_small_head() -> nn.Module:
    """VGG-16-BN whose features (every SE place) are torchvision's; the 7x7 pool and 25088-wide
    classifier are replaced for 32x32 inputs (ONNX cannot export a 1x1 -> 7x7 adaptive pool)."""
    model = _tv("vgg16_bn")
    model.avgpool = nn.Identity()
    model.classifier = nn.Sequential(nn.Flatten(), nn.Linear(512, 10))
    return model


# name -> (builder, input shape, number of SE blocks, their channel counts)
NETWORKS = {
    "resnet18": (lambda: _tv("resnet18"), (2, 3, 32, 32), 8, {64, 128, 256, 512}),
    "mobilenet_v2": (lambda: _tv("mobilenet_v2"), (2, 3, 32, 32), 10, {24, 32, 64, 96, 160}),
    "densenet121": (lambda: _tv("densenet121"), (2, 3, 32, 32), 59, {64, 128}),
    "convnext_tiny": (lambda: _tv("convnext_tiny"), (2, 3, 32, 32), 18, {96, 192, 384, 768}),
    "tiny_user_net": (TinyResNet, (2, 3, 16, 16), 2, {16, 32}),
    "audio_1d": (AudioNet, (2, 2, 64), 3, {32, 48, 64}),
    "senet_resnet18": (lambda: senet.create_model("resnet18"), (2, 3, 32, 32), 8, {64, 128, 256, 512}),
    "senet_resnet20": (lambda: senet.create_model("resnet20"), (2, 3, 32, 32), 9, {16, 32, 64}),
    "timm_resnet18": (
        lambda: timm.create_model("resnet18", pretrained=False),
        (2, 3, 32, 32),
        8,
        {64, 128, 256, 512},
    ),
    "r3d_18": (
        lambda: torchvision.models.video.r3d_18(weights=None),
        (2, 3, 4, 16, 16),
        8,
        {64, 128, 256, 512},
    ),
    "resnet50": (lambda: _tv("resnet50"), (2, 3, 32, 32), 16, {256, 512, 1024, 2048}),
    "resnext50_32x4d": (lambda: _tv("resnext50_32x4d"), (2, 3, 32, 32), 16, {256, 512, 1024, 2048}),
    "wide_resnet50_2": (lambda: _tv("wide_resnet50_2"), (2, 3, 32, 32), 16, {256, 512, 1024, 2048}),
    "vgg16_bn": (_vgg16_bn_small_head, (2, 3, 32, 32), 13, {64, 128, 256, 512}),
    "timm_resnet50": (
        lambda: timm.create_model("resnet50", pretrained=False),
        (2, 3, 32, 32),
        16,
        {256, 512, 1024, 2048},
    ),
    "senet_resnet50": (lambda: senet.create_model("resnet50"), (2, 3, 32, 32), 16, {256, 512, 1024, 2048}),
}
SLOW = {
    "senet_resnet18",
    "r3d_18",
    "resnet50",
    "resnext50_32x4d",
    "wide_resnet50_2",
    "vgg16_bn",
    "timm_resnet50",
    "senet_resnet50",
}
PARAMS = [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in NETWORKS]


@functools.cache
def _plain_cached(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = NETWORKS[name][0]()
    g = torch.Generator().manual_seed(2)
    for m in model.modules():  # scales away from a zero init (timm zeroes the last BN of each unit)
        if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)) and m.affine:
            with torch.no_grad():
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
    x = _x(name, batch=4)
    model.train()
    with torch.no_grad():
        for _ in range(2):  # BN running statistics away from (0, 1), as in a trained network
            model(x + torch.randn_like(x))
    return model.eval()


def _plain(name: str) -> nn.Module:
    return copy.deepcopy(_plain_cached(name))


def _x(name: str, batch: int | None = None) -> torch.Tensor:
    shape = NETWORKS[name][1]
    if batch is not None:
        shape = (batch, *shape[1:])
    return torch.randn(*shape, generator=torch.Generator().manual_seed(3))


def _insert(model: nn.Module, **kw) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # senet_resnet20: its zero-padding shortcuts are kept whole
        return insert_se(model, **kw)


def _blocks(model: nn.Module) -> list[SEBlock]:
    return [m for m in model.modules() if isinstance(m, SEBlock)]


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _eq5(channels: list[int], r: int = 16) -> int:
    """Paper Eq. 5 with biases: each block adds W1 (C/r x C), W2 (C x C/r), b1 (C/r), b2 (C)."""
    return sum(2 * c * (c // r) + c // r + c for c in channels)


@pytest.mark.parametrize("name", PARAMS)
def test_identity_init_keeps_outputs_and_adds_eq5_parameters(name: str) -> None:
    model = _plain(name)
    x = _x(name)
    before_count = _count(model)
    with torch.no_grad():
        before = model(x)
    model = _insert(model, init="identity")
    blocks = _blocks(model)
    _, _, n_blocks, channels = NETWORKS[name]
    assert len(blocks) == n_blocks
    assert {b.channels for b in blocks} == channels
    assert all(b.dims == len(x.shape) - 2 for b in blocks)
    assert _count(model) - before_count == _eq5([b.channels for b in blocks])
    assert not model.training
    with torch.no_grad():
        after = model(x)
    assert (before - after).abs().max().item() <= 1e-5


@pytest.mark.parametrize("name", PARAMS)
def test_every_se_parameter_gets_a_gradient_and_onnx_matches(name: str, tmp_path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    model = _insert(_plain(name)).train()
    x = _x(name)
    model(x).square().mean().backward()
    blocks = _blocks(model)
    assert blocks
    for i, b in enumerate(blocks):
        grads = {pname: p.grad for pname, p in b.named_parameters()}
        assert all(g is not None for g in grads.values()), (i, grads.keys())
        # a hidden unit may be dead (ReLU) for a 1-unit block, so fc1 can be 0; the output layer learns
        assert grads["fc2.bias"].abs().sum() > 0, i
    model.eval()
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), opset_version=17, dynamo=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * max(1.0, float(np.abs(expected).max())))


def test_placements_follow_the_structure() -> None:
    """Residual units: SE on the branch after its last norm (Fig. 3); plain chains: after the act."""
    mb = _insert(_plain("mobilenet_v2"))
    assert isinstance(mb.features[3].conv[3], BNThenSE)  # branch ends in the projection BN
    assert not isinstance(mb.features[2].conv[3], BNThenSE)  # no residual connection: no SE
    user = _insert(TinyResNet())
    assert isinstance(user.block1.norm2, ModuleThenSE) and isinstance(user.block2.norm2, ModuleThenSE)
    assert not isinstance(user.stem[2], ActThenSE)  # a residual network's stem keeps no SE
    dense = _insert(_plain("densenet121"))
    assert isinstance(dense.features.relu0, ActThenSE)
    assert isinstance(dense.features.denseblock1.denselayer1.relu2, ActThenSE)
    assert not isinstance(dense.features.denseblock1.denselayer1.relu1, ActThenSE)  # BN-ReLU-conv
    cnx = _insert(_plain("convnext_tiny"))
    assert isinstance(cnx.features[1][0].block[6], ModuleThenSE)  # after the permute back to NCHW
    audio = _insert(AudioNet())
    assert [type(m).__name__ for m in audio.features if isinstance(m, ActThenSE)] == ["ActThenSE"] * 3
    senet_r18 = _insert(senet.create_model("resnet18"))
    assert isinstance(senet_r18.layer1[0].bn2, BNThenSE)
    assert "layer1.0.bn2.se.fc1.weight" in senet_r18.state_dict()


@pytest.mark.parametrize("integration", ["pre", "post", "identity"])
def test_integration_variants_keep_outputs_and_plain_keys_load(integration: str) -> None:
    """Fig. 5: SE on the branch input, after the sum (and its ReLU), or on the shortcut."""
    plain = _plain("resnet18")
    x = _x("resnet18")
    with torch.no_grad():
        before = plain(x)
    model = _insert(copy.deepcopy(plain), init="identity", integration=integration)
    blocks = _blocks(model)
    assert len(blocks) == 8
    unit = model.layer1[0]
    if integration == "pre":
        assert isinstance(unit.conv1, SEThenModule) and unit.conv1.se.channels == 64
    elif integration == "post":
        assert isinstance(unit, ModuleThenSE)
    else:  # identity shortcut: the unit's code is rewritten; projection shortcuts are wrapped
        assert isinstance(unit, torch.fx.GraphModule) and isinstance(unit.se, SEBlock)
        assert isinstance(model.layer2[0].downsample[1], BNThenSE)
    with torch.no_grad():
        assert (model(x) - before).abs().max().item() <= 1e-5
    reloaded = _insert(_tv("resnet18"), init="identity", integration=integration).eval()
    result = reloaded.load_state_dict(plain.state_dict(), strict=False)
    assert set(result.missing_keys) == {k for k in reloaded.state_dict() if "se." in k}
    assert result.unexpected_keys == []
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        with torch.no_grad():
            assert torch.equal(clone(x), model(x))
    with torch.no_grad():
        assert (reloaded(x) - before).abs().max().item() <= 1e-5


def test_identity_integration_in_the_root_code_returns_a_graph_module() -> None:
    class Flat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
            self.bn1 = nn.BatchNorm2d(8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(x + self.bn1(self.conv1(x)))

    model = Flat().eval()
    x = torch.randn(2, 8, 6, 6)
    out = insert_se(model, init="identity", integration="identity")
    assert isinstance(out, torch.fx.GraphModule) and isinstance(out.se, SEBlock)
    torch.testing.assert_close(out(x), model(x), rtol=0, atol=1e-6)
    assert set(out.state_dict()) == set(model.state_dict()) | {f"se.{k}" for k in out.se.state_dict()}


def test_networks_with_se_are_refused_unless_places_are_given() -> None:
    for name in ("efficientnet_b0", "regnet_y_400mf", "mobilenet_v3_small"):
        with pytest.raises(ValueError, match="already has squeeze-and-excitation in .* places"):
            insert_se(_tv(name))
    torch.manual_seed(0)
    model = _tv("efficientnet_b0").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
    n = _count(model)
    insert_se(model, where=["features.0.2", "features.8.2"], init="identity")  # after the stem / head act
    assert [b.channels for b in _blocks(model)] == [32, 1280]
    assert isinstance(model.features[8][2], ActThenSE)
    assert _count(model) - n == _eq5([32, 1280])
    with torch.no_grad():
        assert (model(x) - before).abs().max().item() <= 1e-5


def test_where_callable_and_patterns() -> None:
    picked = insert_se(_tv("resnet18"), where=lambda name, m: name.endswith("conv2") and "layer4" in name)
    assert [b.channels for b in _blocks(picked)] == [512, 512]
    assert isinstance(picked.layer4[0].conv2, ModuleThenSE)
    plain = insert_se(_tv("resnet18"), where="plain")  # chains outside residual branches: the stem
    assert [b.channels for b in _blocks(plain)] == [64] and isinstance(plain.relu, ActThenSE)
    with pytest.raises(ValueError, match="selects no module"):
        insert_se(_tv("resnet18"), where=["nothing.*"])
    with pytest.raises(ValueError, match="needs where='auto'"):
        insert_se(_tv("resnet18"), where=["layer1.0.bn2"], integration="pre")


def test_untraceable_model_names_the_module() -> None:
    class Picky(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)
            self.bn = nn.BatchNorm2d(8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:
                x = -x
            return torch.relu(self.bn(self.conv(x)))

    with pytest.raises(
        ValueError, match=r"cannot trace Picky with torch.fx: the forward of Picky itself"
    ) as e:
        insert_se(Picky())
    assert "\n" not in str(e.value)
    wrapped = nn.Sequential(nn.Conv2d(3, 3, 1), Picky())
    with pytest.raises(ValueError, match="1 .Picky. was kept whole"):
        insert_se(wrapped)


def test_senet_cifar_shortcuts_kept_whole_with_a_warning() -> None:
    with pytest.warns(UserWarning, match=r"layer2.0.downsample \(ZeroPadShortcut\) was kept whole"):
        model = insert_se(senet.create_model("resnet20"))
    assert len(_blocks(model)) == 9


def test_video_and_audio_blocks_are_3d_and_1d() -> None:
    video = _insert(_plain("r3d_18"))
    assert {b.dims for b in _blocks(video)} == {3}
    assert isinstance(video.layer1[0].conv2[1], BNThenSE)
    assert isinstance(_blocks(video)[0].fc1, nn.Conv3d)
    audio = _insert(AudioNet())
    assert {b.dims for b in _blocks(audio)} == {1} and isinstance(_blocks(audio)[0].fc1, nn.Conv1d)
