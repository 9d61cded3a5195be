"""Caffe import (``senet convert --from caffe``): round trips through real ``.caffemodel`` files.

No release file can be downloaded here, so the tests write ``.caffemodel`` files themselves, the
way the release stores its weights, with an encoder written here from protobuf's wire format and
the field numbers of BVLC Caffe's ``caffe.proto`` (independent of the schema senet ships):
layer names of the release's prototxts (hujie-frank/SENet ``models/*.prototxt``), BatchNorm
blobs as Caffe accumulates them (``mean * f``, ``var * f``, ``f`` with a moving-average factor
``f != 1``), gamma / beta in a Scale layer, SE ``_1x1_down`` / ``_1x1_up`` convolutions with
bias, ``classifier``, and blob-less layers (Input, ReLU, Axpy, Softmax) in between.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import senet
from senet.cli import main
from senet.preprocessing import IMAGENET_MEAN, IMAGENET_STD

CAFFE_MEAN_BGR = (104.0, 117.0, 123.0)  # "# mean_value: 104, 117, 123" in every release prototxt
ARCHS = ["se_resnet50", "se_resnext50_32x4d"] + (
    ["se_bn_inception"] if "se_bn_inception" in senet.list_models() else []
)

# --------------------------------------------------------------------------------------------------
# A protobuf wire-format encoder with Caffe's field numbers (BVLC/caffe src/caffe/proto/caffe.proto)
# --------------------------------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:  # wire type 2: length-delimited
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _uint(number: int, value: int) -> bytes:  # wire type 0: varint
    return _varint(number << 3) + _varint(value)


def _float(number: int, value: float) -> bytes:  # wire type 5: 32-bit
    return _varint(number << 3 | 5) + struct.pack("<f", value)


def _blob(t: torch.Tensor, legacy_4d: bool = False) -> bytes:
    """BlobProto: shape = 7 (BlobShape: dim = 1, packed), data = 5 (packed float); before
    BlobShape: num = 1, channels = 2, height = 3, width = 4."""
    a = t.detach().double().numpy().astype("<f4")
    if legacy_4d:
        dims = (1,) * (4 - a.ndim) + a.shape
        shape = b"".join(_uint(i, d) for i, d in enumerate(dims, 1))
    else:
        shape = _field(7, _field(1, b"".join(_varint(d) for d in a.shape)))
    return shape + _field(5, a.tobytes())


def _layer(name: str, type_: str, blobs: tuple[bytes, ...] | list[bytes] = (), params: bytes = b"") -> bytes:
    """NetParameter.layer = 100: LayerParameter name = 1, type = 2, blobs = 7, *_param."""
    body = _field(1, name.encode()) + _field(2, type_.encode())
    return _field(100, body + b"".join(_field(7, b) for b in blobs) + params)


class CaffeWriter:
    """Writes layers as the release stores them (BN moving-average factors drawn from ``seed``)."""

    def __init__(self, seed: int = 0, legacy_classifier: bool = False) -> None:
        self.layers: list[bytes] = [_layer("data", "Input")]
        self.rng = np.random.default_rng(seed)
        self.legacy_classifier = legacy_classifier

    def conv(self, name: str, conv: nn.Conv2d) -> None:
        # ConvolutionParameter (LayerParameter field 106): num_output 1, bias_term 2, pad 3,
        # kernel_size 4, group 5, stride 6 (repeated fields written unpacked, as proto2 does).
        p = _uint(1, conv.out_channels) + _uint(2, conv.bias is not None) + _uint(3, conv.padding[0])
        p += _uint(4, conv.kernel_size[0]) + _uint(5, conv.groups) + _uint(6, conv.stride[0])
        blobs = [_blob(conv.weight)] + ([_blob(conv.bias)] if conv.bias is not None else [])
        self.layers.append(_layer(name, "Convolution", blobs, _field(106, p)))

    def conv_bn(self, name: str, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
        self.conv(name, conv)
        f = float(self.rng.uniform(2.0, 999.0))  # Caffe's running factor (-> 1 / (1 - 0.999))
        stats = [
            _blob(bn.running_mean.double() * f),
            _blob(bn.running_var.double() * f),
            _blob(torch.tensor([f])),
        ]
        # BatchNormParameter (field 139): use_global_stats 1, eps 3; ScaleParameter (142): bias_term 4.
        self.layers.append(
            _layer(f"{name}/bn", "BatchNorm", stats, _field(139, _uint(1, 1) + _float(3, bn.eps)))
        )
        affine = [_blob(bn.weight), _blob(bn.bias)]
        self.layers.append(_layer(f"{name}/bn/scale", "Scale", affine, _field(142, _uint(4, 1))))
        self.layers.append(_layer(f"{name}/relu", "ReLU"))

    def se(self, prefix: str, se: nn.Module) -> None:
        self.conv(f"{prefix}_1x1_down", se.fc1)
        self.conv(f"{prefix}_1x1_up", se.fc2)
        self.layers.append(_layer(f"{prefix}_prob", "Sigmoid"))

    def classifier(self, fc: nn.Linear) -> None:
        blobs = [_blob(fc.weight, self.legacy_classifier), _blob(fc.bias, self.legacy_classifier)]
        self.layers.append(
            _layer("classifier", "InnerProduct", blobs, _field(117, _uint(1, fc.out_features)))
        )
        self.layers.append(_layer("prob", "Softmax"))

    def save(self, path: Path, net_name: str) -> Path:
        path.write_bytes(_field(1, net_name.encode()) + b"".join(self.layers))
        return path


def write_resnet(model: nn.Module, path: Path, **kw) -> Path:
    """SE-ResNet / SE-ResNeXt / SENet-154 in the release's names (models/SE-ResNet-50.prototxt)."""
    w = CaffeWriter(**kw)
    stem = (
        ["conv1_1/3x3_s2", "conv1_2/3x3", "conv1_3/3x3"] if hasattr(model.stem, "conv2") else ["conv1/7x7_s2"]
    )
    for i, name in enumerate(stem, 1):
        w.conv_bn(name, getattr(model.stem, f"conv{i}"), getattr(model.stem, f"bn{i}"))
    for s, stage in enumerate((model.layer1, model.layer2, model.layer3, model.layer4), 2):
        for b, block in enumerate(stage, 1):
            p = f"conv{s}_{b}"
            w.conv_bn(f"{p}_1x1_reduce", block.conv1, block.bn1)
            w.conv_bn(f"{p}_3x3", block.conv2, block.bn2)
            w.conv_bn(f"{p}_1x1_increase", block.conv3, block.bn3)
            w.se(p, block.se)
            if block.downsample is not None:
                w.conv_bn(f"{p}_1x1_proj", block.downsample[0], block.downsample[1])
            w.layers.append(_layer(p, "Axpy"))
    w.classifier(model.fc)
    return w.save(path, "SE-ResNet")


def write_bn_inception(model: nn.Module, path: Path, **kw) -> Path:
    """SE-BN-Inception in the release's names (models/SE-BN-Inception.prototxt)."""
    w = CaffeWriter(**kw)
    for ours, caffe in (
        ("conv1_7x7_s2", "conv1/7x7_s2"),
        ("conv2_3x3_reduce", "conv2/3x3_reduce"),
        ("conv2_3x3", "conv2/3x3"),
    ):
        unit = getattr(model.stem, ours)
        w.conv_bn(caffe, unit.conv, unit.bn)
    for name, module in model.blocks.named_children():
        for branch in (
            "1x1",
            "3x3_reduce",
            "3x3",
            "double3x3_reduce",
            "double3x3a",
            "double3x3b",
            "pool_proj",
        ):
            unit = getattr(module, f"conv_{branch}")
            if unit is not None:
                w.conv_bn(f"{name}/{branch}", unit.conv, unit.bn)
        w.layers.append(_layer(f"{name}/concat", "Concat"))
        w.se(name, module.se)
    w.classifier(model.fc)
    return w.save(path, "SE-BN-Inception")


def write_caffemodel(arch: str, model: nn.Module, path: Path, **kw) -> Path:
    return (write_bn_inception if arch == "se_bn_inception" else write_resnet)(model, path, **kw)


def first_conv_bn(model: nn.Module) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    unit = getattr(model.stem, "conv1_7x7_s2", None)
    return (unit.conv, unit.bn) if unit is not None else (model.stem.conv1, model.stem.bn1)


def trained_like(arch: str, seed: int = 0) -> nn.Module:
    """A network with weights of realistic scale everywhere: random BN affine, SE and classifier
    biases, BN statistics measured on a batch, and logits of O(1).

    The measured variances get a floor of half their layer's mean: a batch of 8 at 32x32 leaves
    some deep units nearly constant, and normalising those would amplify float32 rounding (of
    the Caffe blobs as of any computation) a thousandfold."""
    torch.manual_seed(seed)
    model = senet.create_model(arch)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.normal_(m.bias, 0.0, 0.2)
            m.momentum = None  # running stats = the statistics of the one batch below
        elif isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
            nn.init.normal_(m.bias, 0.0, 0.2)
    with torch.no_grad():
        model.train()(caffe_input(torch.randn(8, 3, 32, 32)))
        for bn in bns:
            bn.running_var.add_(0.5 * bn.running_var.mean())
        scale = 3.0 / model.eval()(caffe_input(torch.randn(2, 3, 32, 32))).abs().max()
        model.fc.weight.mul_(scale)
        model.fc.bias.mul_(scale)
    return model


def caffe_input(n: torch.Tensor) -> torch.Tensor:
    """The Caffe-convention image (BGR, 0-255, minus the mean) of an RGB ImageNet-normalised one."""
    rgb = n * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    return 255.0 * rgb.flip(1) - torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1)


_RELEASES: dict[str, tuple[nn.Module, Path]] = {}


def release_file(arch: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    """A trained-like ``arch`` and its .caffemodel, written once per test session."""
    if arch not in _RELEASES:
        model = trained_like(arch)
        path = tmp_path_factory.mktemp("caffe") / f"{arch}.caffemodel"
        # SE-ResNeXt's classifier is written with the 4-D blob shape of files before BlobShape.
        _RELEASES[arch] = model, write_caffemodel(arch, model, path, legacy_classifier="resnext" in arch)
    return _RELEASES[arch]


@pytest.fixture(params=ARCHS)
def release(request, tmp_path_factory):
    """(arch, model, path of its .caffemodel)."""
    return (request.param, *release_file(request.param, tmp_path_factory))


def convert(path: Path, arch: str, out: Path, *extra: str) -> int:
    return main(["convert", "--from", "caffe", str(path), "--arch", arch, "--out", str(out), *extra])


# --------------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------------


def test_keep_caffe_input_gives_identical_logits(release, tmp_path):
    arch, model, path = release
    out = tmp_path / "converted.pth"
    assert convert(path, arch, out, "--keep-caffe-input") == 0
    converted = senet.create_model(arch, weights=out).eval()
    x = caffe_input(torch.randn(2, 3, 32, 32))
    with torch.no_grad():
        diff = (converted(x) - model(x)).abs().max().item()
    assert diff <= 1e-4
    prep = converted.preprocessing
    assert (prep.order, prep.value_range, prep.mean, prep.std) == (
        "BGR",
        255.0,
        CAFFE_MEAN_BGR,
        (1.0, 1.0, 1.0),
    )
    raw = torch.load(out, weights_only=True)
    assert raw["arch"] == arch and raw["preprocessing"]["order"] == "BGR"


def test_folded_input_is_exact_away_from_the_border(release, tmp_path):
    """The folded network on RGB ImageNet-normalised input computes the Caffe network on the
    same image, except that its first convolution pads with the ImageNet mean colour instead of
    Caffe's mean: exact once that padding is made explicit, and measured here."""
    arch, model, path = release
    out = tmp_path / "folded.pth"
    assert convert(path, arch, out) == 0
    folded = senet.create_model(arch, weights=out).eval()
    assert folded.preprocessing.order == "RGB" and folded.preprocessing.mean == IMAGENET_MEAN
    n = torch.randn(2, 3, 32, 32).clamp(-2.0, 2.0)
    x = caffe_input(n)
    conv, bn = first_conv_bn(model)
    fconv, fbn = first_conv_bn(folded)
    pad = conv.padding[0]
    with torch.no_grad():
        # The Caffe network on the image padded by hand with the ImageNet mean colour (in Caffe
        # space) computes exactly the folded network's first unit.
        grey = caffe_input(torch.zeros(1, 3, 1, 1))
        x_grey = F.pad(x - grey, (pad,) * 4) + grey
        ref = bn(F.conv2d(x_grey, conv.weight, None, conv.stride))
        got = fbn(fconv(n))
        assert (got - ref).abs().max().item() <= 1e-4 * ref.abs().max().item()
        # With Caffe's own zero padding only the outer `pad` rows/columns differ, each by at most
        # its padded taps times the difference of the two mean colours (at most all the taps):
        # about 0.3% of the outputs' magnitude on average, a few % of their std at most.
        caffe = bn(conv(x))
        border = torch.ones_like(caffe, dtype=torch.bool)
        border[..., pad:-pad, pad:-pad] = False
        assert (got - caffe)[~border].abs().max().item() <= 1e-4 * caffe.abs().max().item()
        gain = (bn.weight / (bn.running_var + bn.eps).sqrt()).abs().view(1, -1, 1, 1)
        bound = gain * (conv.weight.abs() * grey.abs()).sum(dim=(1, 2, 3)).view(1, -1, 1, 1)
        diff = (got - caffe).abs()
        assert diff[border].max() > 0 and (diff <= bound + 1e-4).all()
        # Without padding in the first convolution (of both networks) the logits are identical.
        conv.padding = fconv.padding = (0, 0)
        try:
            diff = (folded(n) - model(x)).abs().max().item()
        finally:
            conv.padding = fconv.padding = (pad, pad)
    assert diff <= 1e-4


def test_batchnorm_blobs_follow_caffe(tmp_path_factory):
    """mean = blob0 / blob2, var = blob1 / blob2 + (eps_caffe - eps_ours), and both 0 when
    blob2 == 0 (caffe/src/caffe/layers/batch_norm_layer.cpp), on one BN layer with a Scale
    layer without beta."""
    from senet.caffe import caffe_state_dict, read_caffemodel
    from senet.caffe.schema import messages

    model, path = release_file("se_resnet50", tmp_path_factory)
    layers = read_caffemodel(path)
    sums = torch.rand(2, 64) + 0.5
    layers["conv1/7x7_s2/bn"].blobs = [sums[0], sums[1], torch.tensor([4.0])]
    layers["conv1/7x7_s2/bn"].param = messages()["LayerParameter"](batch_norm_param={"eps": 1e-3})
    layers["conv1/7x7_s2/bn/scale"].blobs.pop()
    layers["conv1/7x7_s2/bn/scale"].param = messages()["LayerParameter"](scale_param={"bias_term": False})
    sd = caffe_state_dict(model, layers)
    assert torch.allclose(sd["stem.bn1.running_mean"], sums[0] / 4)
    assert torch.allclose(sd["stem.bn1.running_var"], sums[1] / 4 + 1e-3 - 1e-5)
    assert not sd["stem.bn1.bias"].any()
    layers["conv1/7x7_s2/bn"].blobs[2] = torch.tensor([0.0])
    sd = caffe_state_dict(model, layers)
    assert not sd["stem.bn1.running_mean"].any()
    assert torch.allclose(sd["stem.bn1.running_var"], torch.full((64,), 1e-3 - 1e-5))


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) // 2],
        lambda b: b"\xff" * 64 + b[64:],
        lambda b: b'name: "SE-ResNet-50"\nlayer {\n',
    ],
    ids=["truncated", "overwritten", "prototxt"],
)
def test_corrupt_file_gives_one_clear_error(damage, tmp_path, tmp_path_factory, capsys):
    _, good = release_file("se_resnet50", tmp_path_factory)
    bad = tmp_path / "bad.caffemodel"
    bad.write_bytes(damage(good.read_bytes()))
    assert convert(bad, "se_resnet50", tmp_path / "out.pth") == 2
    err = capsys.readouterr().err
    assert err.startswith("senet convert: error: cannot read Caffe model") and "truncated, corrupted" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out.pth").exists()


def test_arch_of_another_depth_names_the_missing_layers(tmp_path, tmp_path_factory, capsys):
    _, path = release_file("se_resnet50", tmp_path_factory)
    assert convert(path, "se_resnet101", tmp_path / "out.pth") == 2
    err = capsys.readouterr().err
    # conv4_7 .. conv4_23: 17 blocks of 3 conv + 3 BN + 3 Scale + 2 SE layers.
    assert (
        "does not match se_resnet101" in err and "layers se_resnet101 needs that the file lacks (187)" in err
    )
    assert "conv4_7_1x1_reduce" in err and "Traceback" not in err
    assert not (tmp_path / "out.pth").exists()


def test_arch_of_another_width_names_the_shapes(tmp_path, tmp_path_factory, capsys):
    _, path = release_file("se_resnext50_32x4d", tmp_path_factory)
    assert convert(path, "se_resnet50", tmp_path / "out.pth") == 2
    err = capsys.readouterr().err
    assert "does not match se_resnet50" in err
    assert (
        "shapes that differ" in err
        and "conv2_1_1x1_reduce blob 0 (128, 64, 1, 1) vs layer1.0.conv1.weight" in err
    )


def test_stride_placement_is_checked(tmp_path_factory):
    """A network with the stride on the 3x3 convolution would load the release's SE-ResNet-50
    weights and compute something else: the convolution parameters of the file refuse it."""
    from senet.caffe import caffe_state_dict, read_caffemodel

    _, path = release_file("se_resnet50", tmp_path_factory)
    other = senet.create_model("se_resnet50", stride_in_1x1=False)
    with pytest.raises(ValueError, match=r"conv3_1_1x1_reduce: stride \(2, 2\) in the file, \(1, 1\)"):
        caffe_state_dict(other, read_caffemodel(path))


def test_blobs_without_a_place_are_refused(tmp_path_factory):
    """Weights of the file that the network would leave unused are an error, not dropped."""
    from senet.caffe import CaffeLayer, caffe_state_dict, read_caffemodel

    model, path = release_file("se_resnet50", tmp_path_factory)
    layers = read_caffemodel(path)
    layers["conv2_1_3x3"].blobs.append(torch.zeros(64))  # a bias our convolution does not have
    layers["conv6_1_1x1_reduce"] = CaffeLayer("conv6_1_1x1_reduce", "Convolution", [torch.zeros(1)], None)
    with pytest.raises(
        ValueError, match=r"has no place for \(2\): conv2_1_3x3 \(blob 1\), conv6_1_1x1_reduce"
    ):
        caffe_state_dict(model, layers)


def test_networks_without_release_are_refused(tmp_path, tmp_path_factory, capsys):
    _, path = release_file("se_resnet50", tmp_path_factory)
    assert convert(path, "se_resnet18", tmp_path / "out.pth") == 2
    assert "se_resnet18 has no counterpart in the Caffe release" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------------


def test_reads_v1_layers_and_legacy_blob_shapes(tmp_path):
    """Files of Caffe before 2015: ``NetParameter.layers = 2`` of V1LayerParameter (name = 4,
    blobs = 6) and 4-D blob dimensions (num, channels, height, width = 1..4)."""
    from senet.caffe import read_caffemodel

    w = torch.arange(6.0).view(2, 3)
    v1 = _field(4, b"fc7") + _field(6, _blob(w, legacy_4d=True))
    path = tmp_path / "v1.caffemodel"
    path.write_bytes(_field(1, b"old") + _field(2, v1))
    layers = read_caffemodel(path)
    assert list(layers) == ["fc7"] and torch.equal(layers["fc7"].blobs[0], w.view(1, 1, 2, 3))
