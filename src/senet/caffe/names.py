"""Which Caffe layer and blob of the official release (hujie-frank/SENet) holds each of our tensors.

The release's prototxts name layers regularly (``models/SE-ResNet-50.prototxt`` and siblings):

==========================================  ==============================================
ours                                        Caffe layer (blob)
==========================================  ==============================================
``stem.conv1``                              ``conv1/7x7_s2`` (0); SENet-154's deep stem:
                                            ``conv1_1/3x3_s2``, ``conv1_2/3x3``, ``conv1_3/3x3``
``layer{s}.{b}.conv1`` / ``conv2`` /        ``conv{s+1}_{b+1}_1x1_reduce`` / ``_3x3`` /
``conv3``                                   ``_1x1_increase`` (0)
``layer{s}.0.downsample.0``                 ``conv{s+1}_1_1x1_proj`` (0; a 3x3 kernel in SENet-154)
any BN ``running_mean`` / ``running_var``   ``<conv>/bn`` (0 / 1, each divided by blob 2)
any BN ``weight`` / ``bias``                ``<conv>/bn/scale`` (0 / 1)
``layer{s}.{b}.se.fc1`` / ``se.fc2``        ``conv{s+1}_{b+1}_1x1_down`` / ``_1x1_up`` (0 weight, 1 bias)
``fc``                                      ``classifier`` (0 weight, 1 bias)
==========================================  ==============================================

BN-Inception's rule lives beside the network (:func:`senet.models.inception.bn_inception_caffe_name`).
"""

from __future__ import annotations

from functools import partial

from torch import nn

__all__ = ["caffe_names", "resnet_caffe_name"]

_BLOCK_CONVS = {"1": "_1x1_reduce", "2": "_3x3", "3": "_1x1_increase"}
_SE_CONVS = {"fc1": "_1x1_down", "fc2": "_1x1_up"}
_BN_BLOBS = {
    "running_mean": ("/bn", 0),
    "running_var": ("/bn", 1),
    "weight": ("/bn/scale", 0),
    "bias": ("/bn/scale", 1),
}
_WB = {"weight": 0, "bias": 1}


def resnet_caffe_name(key: str, deep_stem: bool = False) -> tuple[str, int]:
    """The Caffe layer and blob index of a bottleneck :class:`~senet.models.resnet.ResNet` key.

    ``layer3.0.conv1.weight`` -> ``("conv4_1_1x1_reduce", 0)``; ``stem.bn1.running_var`` ->
    ``("conv1/7x7_s2/bn", 1)``. Keys without a counterpart in the release (``num_batches_tracked``,
    SE variants such as ``se_3x3``) raise ``KeyError``.
    """
    parts = key.split(".")
    try:
        if parts[0] == "fc":
            return "classifier", _WB[parts[1]]
        if parts[0] == "stem":
            kind, i = parts[1][:-1], int(parts[1][-1])
            conv = ("conv1_1/3x3_s2", "conv1_2/3x3", "conv1_3/3x3")[i - 1] if deep_stem else "conv1/7x7_s2"
            if not deep_stem and i != 1:
                raise KeyError(key)
        elif parts[0].startswith("layer"):
            prefix = f"conv{int(parts[0][len('layer') :]) + 1}_{int(parts[1]) + 1}"
            sub = parts[2]
            if sub == "se":
                return prefix + _SE_CONVS[parts[3]], _WB[parts[4]]
            if sub == "downsample":
                conv, kind = prefix + "_1x1_proj", ("conv", "bn")[int(parts[3])]
            else:
                conv, kind = prefix + _BLOCK_CONVS[sub[-1]], sub[:-1]
        else:
            raise KeyError(key)
        param = parts[-1]
        if kind == "conv" and param == "weight":
            return conv, 0
        if kind == "bn":
            suffix, blob = _BN_BLOBS[param]
            return conv + suffix, blob
    except (KeyError, ValueError, IndexError):
        pass
    raise KeyError(f"{key!r} has no counterpart in the Caffe release")


def caffe_names(model: nn.Module) -> dict[str, tuple[str, int]]:
    """``{state-dict key: (Caffe layer, blob index)}`` for every tensor of ``model`` except
    ``num_batches_tracked``; refuses networks and options the release has no layers for."""
    from ..models.inception import BNInception, bn_inception_caffe_name
    from ..models.resnet import Bottleneck, ResNet

    name = getattr(model, "model_name", type(model).__name__)
    if isinstance(model, BNInception):
        rule = bn_inception_caffe_name
    elif isinstance(model, ResNet) and isinstance(model.layer1[0], Bottleneck):
        modes = {getattr(m, "se_mode", "standard") for m in model.modules() if isinstance(m, Bottleneck)}
        if not modes <= {"standard", "none"}:
            raise ValueError(
                f"{name} places SE as {sorted(modes - {'standard', 'none'})}; the release places it on the "
                "residual branch before the summation (integration='standard', position='after_block')"
            )
        rule = partial(resnet_caffe_name, deep_stem=hasattr(model.stem, "conv2"))
    else:
        raise ValueError(
            f"{name} has no counterpart in the Caffe release: convert into se_resnet50/101/152, "
            "se_resnext50_32x4d, se_resnext101_32x4d, senet154 or se_bn_inception"
        )
    out, unknown = {}, []
    for key in model.state_dict():
        if key.endswith("num_batches_tracked"):
            continue
        try:
            out[key] = rule(key)
        except KeyError:
            unknown.append(key)
    if unknown:
        more = f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else ""
        raise ValueError(
            f"{name} has tensors with no counterpart in the Caffe release ({', '.join(unknown[:5])}{more}): "
            "convert into the network as released, with default options"
        )
    return out
