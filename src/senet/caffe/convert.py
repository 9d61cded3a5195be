"""Convert a ``.caffemodel`` of the official release (hujie-frank/SENet) into a ``senet`` checkpoint.

``convert_caffe("SE-ResNet-50.caffemodel", "se_resnet50", "se_resnet50.pth")`` reads the Caffe
``NetParameter`` (with the schema of :mod:`senet.caffe.schema`), places every blob in the
network by the naming rule of :mod:`senet.caffe.names`, and writes
``{"model": state_dict, "arch": ..., "preprocessing": ..., ...}`` with
:func:`senet.weights.save_weights`, so that ``senet.create_model(arch, weights=path)`` loads it.

How the blobs become our tensors (Caffe's ``batch_norm_layer.cpp`` / ``scale_layer.cpp``):

* ``BatchNorm``: blob 0 and 1 are the running sums of the mean and the variance, blob 2 their
  moving-average factor: ``mean = blob0 / blob2``, ``var = blob1 / blob2`` (both 0 when
  ``blob2 == 0``, as Caffe does). Caffe adds its ``eps`` (1e-5 unless the layer says otherwise);
  a different eps in the file is moved into the variance, ``var + eps_caffe - eps_ours``, which
  is exact.
* ``Scale`` after it: gamma (blob 0) and beta (blob 1) of our BN. SE ``_1x1_down`` / ``_1x1_up``
  convolutions carry a bias (blob 1); ``classifier`` is the ``fc`` layer.
* Every tensor must find its layer with the right shape, every blob of the file its tensor, and
  every convolution the stride / padding / dilation / groups of ours; otherwise nothing is written
  and the error lists what differs (e.g. the layers an ``--arch`` of another depth would need).

Input convention. The Caffe models take BGR pixels in 0-255 minus the mean (104, 117, 123)
(B, G, R), no std. By default this is folded into the first convolution so that the converted
network takes RGB input normalised with the ImageNet mean/std, like every PyTorch port:
``W'[:, c] = W[:, bgr(c)] * 255 * std_c``, and ``b = sum W[:, bgr(c)] * (255 * mean_c - caffe_mean_c)``
goes into the running mean of the BN that follows (the first convolution has no bias). This is
exact wherever the kernel lies inside the image. At the border, zero padding in normalised space is
the ImageNet mean colour while Caffe pads with its own, (0.675, -0.72, -0.47) of 255 apart (R, G,
B), so the first convolution's outputs within ``padding`` pixels of the border change by their
padded taps times that difference (with random weights about 0.3% of their magnitude on average,
a few % of their spread at most, under 1% of the range of the logits of a 64x64 image;
tests/test_caffe.py bounds it). ``keep_caffe_input=True`` keeps the weights unchanged (exact) and
records the Caffe preprocessing (BGR, 0-255, mean only) in the checkpoint instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from ..weights import mismatch_message, save_weights
from .names import caffe_names
from .schema import messages

__all__ = [
    "CAFFE_MEAN_BGR",
    "CaffeLayer",
    "caffe_preprocessing",
    "caffe_state_dict",
    "convert_caffe",
    "fold_caffe_input",
    "read_caffemodel",
]

# Mean pixel of the release's models (B, G, R), on 0-255 ("# mean_value: 104, 117, 123" in every prototxt).
CAFFE_MEAN_BGR = (104.0, 117.0, 123.0)
_CAFFE_EPS = 1e-5  # BatchNormParameter.eps default


@dataclass
class CaffeLayer:
    """One layer of a ``.caffemodel`` that holds weights: its blobs as tensors, and its message."""

    name: str
    type: str
    blobs: list[torch.Tensor]
    param: Any

    def sub(self, field: str) -> Any | None:
        """A layer-parameter message (``"convolution_param"``, ...) if the file sets it."""
        try:
            return getattr(self.param, field) if self.param.HasField(field) else None
        except ValueError:  # not a field of this message (V1 layers)
            return None


def _blob_tensor(blob: Any, layer: str, index: int) -> torch.Tensor:
    if blob.HasField("shape"):
        shape = tuple(int(d) for d in blob.shape.dim)
    elif any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        shape = (blob.num, blob.channels, blob.height, blob.width)
    else:
        shape = (len(blob.data) or len(blob.double_data),)
    values = np.asarray(blob.data if len(blob.data) else blob.double_data, dtype=np.float32)
    if values.size != math.prod(shape):
        raise ValueError(
            f"blob {index} of Caffe layer {layer!r} holds {values.size} values for shape {shape}: "
            "the file is corrupted or truncated"
        )
    return torch.from_numpy(values.reshape(shape))


def read_caffemodel(path: str | Path) -> dict[str, CaffeLayer]:
    """The layers that hold weights, by name, of a binary ``.caffemodel`` (``NetParameter``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Caffe model {str(path)!r} does not exist")
    try:
        net = messages()["NetParameter"].FromString(path.read_bytes())
    except Exception as e:  # DecodeError and kin: one message whatever the damage
        raise ValueError(
            f"cannot read Caffe model {str(path)!r}: it is truncated, corrupted or not a binary "
            f".caffemodel ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from e
    layers: dict[str, CaffeLayer] = {}
    for lp in [*net.layer, *net.layers]:
        if not lp.blobs:
            continue
        if lp.name in layers:
            raise ValueError(f"Caffe model {str(path)!r} has two layers named {lp.name!r} with weights")
        blobs = [_blob_tensor(b, lp.name, i) for i, b in enumerate(lp.blobs)]
        layers[lp.name] = CaffeLayer(lp.name, getattr(lp, "type", "") or "", blobs, lp)
    if not layers:
        raise ValueError(
            f"Caffe model {str(path)!r} holds no layer with weights: is it a binary .caffemodel "
            "(a .prototxt describes the network only)?"
        )
    return layers


def _spatial(p: Any, field: str, default: int, per_axis_fields: bool = True) -> tuple[int, int]:
    """A Caffe spatial parameter as (h, w): ``<field>_h`` / ``<field>_w`` if set, else the repeated
    ``<field>`` (one value for both axes, or one per axis), else ``default``."""
    if per_axis_fields and p.HasField(f"{field}_h") and p.HasField(f"{field}_w"):
        return getattr(p, f"{field}_h"), getattr(p, f"{field}_w")
    values = list(getattr(p, field)) or [default]
    return values[0], values[-1]


def _conv_geometry(layer: CaffeLayer) -> dict[str, tuple[int, int] | int] | None:
    """Stride, padding, dilation and groups of a Convolution layer, as ``nn.Conv2d`` names them."""
    p = layer.sub("convolution_param")
    if p is None:
        return None
    return {
        "stride": _spatial(p, "stride", 1),
        "padding": _spatial(p, "pad", 0),
        "dilation": _spatial(p, "dilation", 1, per_axis_fields=False),
        "groups": p.group,
    }


def _fit(value: torch.Tensor, shape: torch.Size) -> torch.Tensor | None:
    """``value`` in ``shape`` if they differ only by size-1 axes (legacy 4-D blobs), else None."""
    if value.shape == shape:
        return value
    squeeze = [d for d in value.shape if d != 1]
    if squeeze == [d for d in shape if d != 1]:
        return value.reshape(shape)
    return None


def caffe_state_dict(model: nn.Module, layers: dict[str, CaffeLayer]) -> dict[str, torch.Tensor]:
    """``model``'s state dict with every tensor taken from the Caffe ``layers`` (Caffe input
    convention, see the module docstring); raises ``ValueError`` listing every mismatch."""
    names = caffe_names(model)
    own = model.state_dict()
    out = dict(own)
    arch = getattr(model, "model_name", type(model).__name__)
    missing: dict[str, None] = {}
    shapes: list[str] = []
    geometry: list[str] = []
    used: set[tuple[str, int]] = set()
    for key, (lname, blob) in names.items():
        layer = layers.get(lname)
        if layer is None:
            missing[lname] = None
            continue
        param = key.rsplit(".", 1)[-1]
        module = model.get_submodule(key.rsplit(".", 1)[0])
        if blob >= len(layer.blobs):
            scale = layer.sub("scale_param")
            if isinstance(module, nn.BatchNorm2d) and param == "bias" and not (scale and scale.bias_term):
                out[key] = torch.zeros_like(own[key])  # a Scale layer without beta
            else:
                missing[f"{lname} (blob {blob})"] = None
            continue
        value = layer.blobs[blob]
        used.add((lname, blob))
        if param in ("running_mean", "running_var"):
            if len(layer.blobs) < 3:
                missing[f"{lname} (blob 2, the moving-average factor)"] = None
                continue
            used.add((lname, 2))
            factor = float(layer.blobs[2].reshape(-1)[0])
            value = value * (0.0 if factor == 0 else 1.0 / factor)
            if param == "running_var":
                bn = layer.sub("batch_norm_param")
                eps = bn.eps if bn is not None else _CAFFE_EPS
                value = value + (eps - module.eps)
        ip = layer.sub("inner_product_param")
        if ip is not None and ip.transpose and param == "weight":
            value = value.reshape(value.shape[-2:]).t()
        fitted = _fit(value, own[key].shape)
        if fitted is None:
            shapes.append(f"{lname} blob {blob} {tuple(value.shape)} vs {key} {tuple(own[key].shape)}")
            continue
        out[key] = fitted.to(own[key].dtype).clone()
        geo = _conv_geometry(layer) if isinstance(module, nn.Conv2d) and param == "weight" else None
        if geo is not None:
            for attr, theirs in geo.items():
                ours = getattr(module, attr)
                if theirs != ours:
                    geometry.append(f"{lname}: {attr} {theirs} in the file, {ours} in {arch}")
    unused: list[str] = []
    for lname, layer in layers.items():
        idle = [str(i) for i in range(len(layer.blobs)) if (lname, i) not in used]
        if idle:
            unused.append(lname if len(idle) == len(layer.blobs) else f"{lname} (blob {', '.join(idle)})")
    if missing or shapes or geometry or unused:
        groups = [
            (f"layers {arch} needs that the file lacks", list(missing), 8),
            (f"layers of the file {arch} has no place for", unused, 8),
            ("shapes that differ", shapes, 4),
            ("convolutions that differ", geometry, 4),
        ]
        hint = (
            "  Is --arch the network of this file? The release's models are SE-ResNet-50/101/152 "
            "(se_resnet50/101/152), SE-ResNeXt-50/101 32x4d (se_resnext50_32x4d, se_resnext101_32x4d), "
            "SENet-154 (senet154) and SE-BN-Inception (se_bn_inception)."
        )
        raise ValueError(mismatch_message(f"the Caffe model does not match {arch}:", groups, hint))
    return out


def _first_conv_bn(model: nn.Module) -> tuple[str, nn.Conv2d, str | None]:
    """The convolution that reads the image, and the BN registered right after it (if any)."""
    conv_name, conv = None, None
    for name, m in model.named_modules():
        if conv is None and isinstance(m, nn.Conv2d):
            conv_name, conv = name, m
        elif conv is not None and isinstance(m, (nn.Conv2d, nn.BatchNorm2d)):
            bn = name if isinstance(m, nn.BatchNorm2d) and m.num_features == conv.out_channels else None
            return conv_name, conv, bn  # type: ignore[return-value]
    if conv is None:
        raise ValueError(f"{type(model).__name__} has no convolution to fold the input convention into")
    return conv_name, conv, None  # type: ignore[return-value]


def fold_caffe_input(
    model: nn.Module,
    state_dict: dict[str, torch.Tensor],
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    caffe_mean_bgr: tuple[float, float, float] = CAFFE_MEAN_BGR,
) -> None:
    """Rewrite ``state_dict`` (Caffe convention) in place so that the network takes RGB [0, 1]
    input normalised with ``mean`` / ``std`` (see the module docstring for the border effect)."""
    conv_name, conv, bn_name = _first_conv_bn(model)
    if conv.in_channels != 3:
        raise ValueError(f"the first convolution of the model reads {conv.in_channels} channels, not BGR")
    w = state_dict[f"{conv_name}.weight"].double().flip(1)  # BGR -> RGB input channels
    scale = 255.0 * torch.tensor(std, dtype=torch.float64)
    offset = 255.0 * torch.tensor(mean, dtype=torch.float64) - torch.tensor(
        caffe_mean_bgr[::-1], dtype=torch.float64
    )
    dtype = state_dict[f"{conv_name}.weight"].dtype
    state_dict[f"{conv_name}.weight"] = (w * scale.view(1, 3, 1, 1)).to(dtype)
    const = (w * offset.view(1, 3, 1, 1)).sum(dim=(1, 2, 3))
    if conv.bias is not None:
        key, sign = f"{conv_name}.bias", 1.0
    elif bn_name is not None:
        key, sign = f"{bn_name}.running_mean", -1.0
    else:
        raise ValueError(f"{conv_name} has no bias and no batch norm after it to absorb the input mean")
    state_dict[key] = (state_dict[key].double() + sign * const).to(state_dict[key].dtype)


def caffe_preprocessing(
    input_size: tuple[int, int, int] = (3, 224, 224), keep_caffe_input: bool = False
) -> Preprocessing:
    """The release's evaluation: 224 crop of the image resized to 256 on its short side, and either
    the Caffe input convention or (folded weights) the ImageNet mean/std on RGB [0, 1]."""
    if keep_caffe_input:
        return Preprocessing(
            CAFFE_MEAN_BGR, (1.0, 1.0, 1.0), order="BGR", value_range=255.0, input_size=input_size
        )
    return Preprocessing(IMAGENET_MEAN, IMAGENET_STD, input_size=input_size)


def convert_caffe(
    caffemodel: str | Path, arch: str, out: str | Path, *, keep_caffe_input: bool = False
) -> Path:
    """Convert a release ``.caffemodel`` into a checkpoint of ``arch`` at ``out`` (see the module
    docstring); returns the path written. Nothing is written if the file does not match ``arch``."""
    from ..factory import create_model
    from ..models import model_info

    info = model_info(arch)
    layers = read_caffemodel(caffemodel)
    num_classes = info.num_classes
    if "classifier" in layers and layers["classifier"].blobs[0].dim() >= 2:
        w = layers["classifier"].blobs[0]
        ip = layers["classifier"].sub("inner_product_param")
        num_classes = int(w.shape[-1] if ip is not None and ip.transpose else w.shape[-2])
    model = create_model(arch, num_classes=num_classes)
    state = caffe_state_dict(model, layers)
    if not keep_caffe_input:
        fold_caffe_input(model, state)
    model.load_state_dict(state)
    model.preprocessing = caffe_preprocessing(info.input_size, keep_caffe_input)
    source = {"format": "caffe", "file": Path(caffemodel).name, "input_folded": not keep_caffe_input}
    return save_weights(model, out, converted_from=source)
