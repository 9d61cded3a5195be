"""BN-Inception and Inception-ResNet-v2, each with and without SE (paper Sec. 4, Fig. 2, Table 2).

**BN-Inception** (Ioffe & Szegedy 2015, the "Inception-v2 with BN" of the official release) follows
``models/SE-BN-Inception.prototxt`` of hujie-frank/SENet layer for layer: convolutions without bias,
each followed by BN (Caffe's eps 1e-5) and ReLU; 3x3/2 max-pools in Caffe's ceil mode; 3x3/1
average pools inside the modules (padding counted, as Caffe does); a 3x3/1 max-pool in
``inception_5b``; no dropout. SE sits on the output of every whole Inception module, after the
concat (Fig. 2), reductions 3c and 4e included: 256->16, 320->20, 576->36, ..., 1056->66,
1024->64. Module names are the release's (``inception_3a`` ...) and each convolution is named
``conv_<Caffe name>``, so :func:`bn_inception_caffe_name` and :func:`bn_inception_cadene_name` are
one-line rules (Cadene's ``bninception`` mirrors the Caffe names; its convolutions carry a bias,
which a converter folds into the BN running mean). One deliberate difference from Caffe: the
reduction modules' max-pool pads odd grids (:class:`ReductionMaxPool`).

**Inception-ResNet-v2** (Szegedy et al. 2016) has the layer shapes and parameter names of the
TF-slim model that every public port uses (timm's / Cadene's ``inception_resnet_v2``: the TF-slim
stem + ``mixed_5b`` with 320 channels, 10x block35 at scale 0.17, ``mixed_6a``, 20x block17 at
0.10, ``mixed_7a``, 9x block8 at 0.20 + one block8 without ReLU, ``conv2d_7b`` 1536; BN eps 1e-3);
its state dict maps to timm's by renaming ``classif`` to ``fc`` (Cadene: ``last_linear``).
SE placement ("similar schemes", Sec. 4): on the residual branch of every residual module, after
its linear 1x1 up-projection and before the scaled summation, ``x + scale * SE(conv2d(...))``
(as Fig. 3 for ResNet); on the output of the three non-residual modules (``mixed_5b``,
``mixed_6a``, ``mixed_7a``), after the concat, as Fig. 2 treats whole Inception modules.
``SEConfig.integration`` moves the SE of the residual modules as in Fig. 5 (pre / post /
identity); the non-residual modules keep theirs on the output.

Stages (``SEConfig.stages``) are numbered as the paper's SE_stageID naming of ResNet, by the grid a
module works on: 3 = stride 8, 4 = stride 16, 5 = stride 32. BN-Inception: the release's module
names ``inception_3x``, ``4x``, ``5x`` (the reductions 3c and 4e belong to the stage they are named
after). Inception-ResNet-v2: 3 = ``mixed_5b`` + block35 (35x35), 4 = ``mixed_6a`` + block17
(17x17), 5 = ``mixed_7a`` + block8 (8x8), i.e. TF's Mixed_5/6/7 groups.

``feature_info`` (``features_only=True``) has the last module at each resolution, as timm's
``inception_v3`` / ``inception_resnet_v2``: BN-Inception ``stem.conv1_7x7_s2`` (stride 2),
``stem.conv2_3x3`` (4), ``blocks.inception_3b`` (8), ``blocks.inception_4d`` (16),
``blocks.inception_5b`` (32); Inception-ResNet-v2 ``conv2d_2b``, ``conv2d_4a``, ``repeat``,
``repeat_1``, ``conv2d_7b`` (the names and channels of timm's). Inception-ResNet-v2 pads 'VALID',
so its maps are a few pixels smaller than input / stride (8x8 at stride 32 for 299x299).

Cost (Table 2, multiply-adds): BN-Inception 2.03 / SE 2.04 G at 224x224. Inception-ResNet-v2's
11.75 / 11.76 G is not what this network costs at its 299x299 input (13.16 G, the same as timm's
count): the figure holds within 0.2% at 297x297 or 298x298 (11.73 / 11.74 G, final grid 7x7 instead
of 8x8); the paper does not say how it was counted, and the network is kept as published.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..se import SEConfig
from .common import ClassifierNet, ConvBNAct, SEResidualUnit, init_weights
from .registry import register_network

__all__ = [
    "BNInception",
    "InceptionModule",
    "InceptionResNetV2",
    "InceptionSpec",
    "bn_inception_cadene_name",
    "bn_inception_caffe_name",
]


# --------------------------------------------------------------------------------------------------
# BN-Inception
# --------------------------------------------------------------------------------------------------


class InceptionSpec(NamedTuple):
    """One Inception module of BN-Inception, as ``num_output`` values of the release's prototxt.

    ``c1x1 = 0`` and ``pool_proj = 0`` mark the reduction modules (3c, 4e): no 1x1 branch, a 3x3/2
    max-pool branch without projection, stride 2 on the last conv of both 3x3 branches.
    """

    name: str
    c1x1: int
    c3x3_reduce: int
    c3x3: int
    double3x3_reduce: int
    double3x3: int
    pool: str
    pool_proj: int
    stride: int = 1


# models/SE-BN-Inception.prototxt (hujie-frank/SENet), inception_3a .. inception_5b.
BN_INCEPTION_SPECS: tuple[InceptionSpec, ...] = (
    InceptionSpec("3a", 64, 64, 64, 64, 96, "avg", 32),
    InceptionSpec("3b", 64, 64, 96, 64, 96, "avg", 64),
    InceptionSpec("3c", 0, 128, 160, 64, 96, "max", 0, stride=2),
    InceptionSpec("4a", 224, 64, 96, 96, 128, "avg", 128),
    InceptionSpec("4b", 192, 96, 128, 96, 128, "avg", 128),
    InceptionSpec("4c", 160, 128, 160, 128, 160, "avg", 128),
    InceptionSpec("4d", 96, 128, 192, 160, 192, "avg", 128),
    InceptionSpec("4e", 0, 128, 192, 192, 256, "max", 0, stride=2),
    InceptionSpec("5a", 352, 192, 320, 160, 224, "avg", 128),
    InceptionSpec("5b", 352, 192, 320, 192, 224, "max", 128),
)


class ReductionMaxPool(nn.Module):
    """3x3/2 max-pool in Caffe's ceil mode whose output grid always equals a 3x3/2/pad-1 conv's.

    On an even grid this is exactly Caffe's pooling; on an odd grid one row/column of ``-inf`` is
    added at the bottom/right (Caffe's pool would be one pixel short of the convolutions and the
    concat would fail).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad_h, pad_w = x.shape[-2] % 2, x.shape[-1] % 2
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), value=float("-inf"))
        return F.max_pool2d(x, 3, 2, ceil_mode=True)


class InceptionModule(nn.Module):
    """A BN-Inception module: 1x1 | 1x1-3x3 | 1x1-3x3-3x3 | pool(-1x1), concat, then SE (Fig. 2).

    Attribute names are the Caffe layer names with a ``conv_`` prefix (``conv_double3x3a`` is
    ``inception_3a/double3x3a``).
    """

    def __init__(self, in_ch: int, spec: InceptionSpec, se: SEConfig | None = None) -> None:
        super().__init__()
        s = spec.stride
        self.conv_1x1 = ConvBNAct(in_ch, spec.c1x1, 1) if spec.c1x1 else None
        self.conv_3x3_reduce = ConvBNAct(in_ch, spec.c3x3_reduce, 1)
        self.conv_3x3 = ConvBNAct(spec.c3x3_reduce, spec.c3x3, 3, s)
        self.conv_double3x3_reduce = ConvBNAct(in_ch, spec.double3x3_reduce, 1)
        self.conv_double3x3a = ConvBNAct(spec.double3x3_reduce, spec.double3x3, 3)
        self.conv_double3x3b = ConvBNAct(spec.double3x3, spec.double3x3, 3, s)
        if s == 2:
            self.pool: nn.Module = ReductionMaxPool()
        elif spec.pool == "avg":
            self.pool = nn.AvgPool2d(3, 1, 1, ceil_mode=True, count_include_pad=True)
        else:
            self.pool = nn.MaxPool2d(3, 1, 1, ceil_mode=True)
        self.conv_pool_proj = ConvBNAct(in_ch, spec.pool_proj, 1) if spec.pool_proj else None
        pool_ch = spec.pool_proj or in_ch
        self.out_channels = spec.c1x1 + spec.c3x3 + spec.double3x3 + pool_ch
        self.se = se.block(self.out_channels) if se is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [] if self.conv_1x1 is None else [self.conv_1x1(x)]
        outs.append(self.conv_3x3(self.conv_3x3_reduce(x)))
        outs.append(self.conv_double3x3b(self.conv_double3x3a(self.conv_double3x3_reduce(x))))
        pooled = self.pool(x)
        outs.append(pooled if self.conv_pool_proj is None else self.conv_pool_proj(pooled))
        out = torch.cat(outs, 1)
        return out if self.se is None else self.se(out)


def _bn_inception_stem(in_chans: int) -> nn.Sequential:
    """conv1/7x7_s2, pool1/3x3_s2, conv2/3x3_reduce, conv2/3x3, pool2/3x3_s2 (ceil-mode pools)."""
    return nn.Sequential(
        OrderedDict(
            [
                ("conv1_7x7_s2", ConvBNAct(in_chans, 64, 7, 2, 3)),
                ("pool1_3x3_s2", nn.MaxPool2d(3, 2, ceil_mode=True)),
                ("conv2_3x3_reduce", ConvBNAct(64, 64, 1)),
                ("conv2_3x3", ConvBNAct(64, 192, 3)),
                ("pool2_3x3_s2", nn.MaxPool2d(3, 2, ceil_mode=True)),
            ]
        )
    )


class BNInception(ClassifierNet):
    """BN-Inception / SE-BN-Inception (see the module docstring).

    Args:
        se: an :class:`SEConfig` (integration ``"standard"`` and position ``"after_block"`` only:
            the modules have no shortcut and no bottleneck), or ``None`` for the plain network.
        num_classes, in_chans: classifier width and input channels.
        drop_rate: dropout before the classifier (0: the release and the BN paper have none).
    """

    def __init__(
        self,
        *,
        se: SEConfig | None = None,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__(in_chans, num_classes, 7, drop_rate)
        if se is not None:
            se.check_supported(
                "BNInception", stages=(3, 4, 5), integration=("standard",), position=("after_block",)
            )
        self.stem = _bn_inception_stem(in_chans)
        self.add_feature("stem.conv1_7x7_s2", 64, 2, stage=1)
        self.add_feature("stem.conv2_3x3", 192, 4, stage=2)
        modules: list[tuple[str, nn.Module]] = []
        channels, reduction = 192, 8
        for i, spec in enumerate(BN_INCEPTION_SPECS):
            module = InceptionModule(channels, spec, se and se.for_stage(int(spec.name[0])))
            modules.append((f"inception_{spec.name}", module))
            channels = module.out_channels
            reduction *= spec.stride
            following = BN_INCEPTION_SPECS[i + 1 :]
            if not following or following[0].stride == 2:  # the last module at this resolution
                self.add_feature(f"blocks.inception_{spec.name}", channels, reduction, int(spec.name[0]))
        self.blocks = nn.Sequential(OrderedDict(modules))
        self.add_head(channels, num_classes, drop_rate)
        init_weights(self)


_CAFFE_BN = {
    "running_mean": ("/bn", 0),
    "running_var": ("/bn", 1),
    "weight": ("/bn/scale", 0),
    "bias": ("/bn/scale", 1),
}
_SE_CAFFE = {"fc1": "_1x1_down", "fc2": "_1x1_up"}


def bn_inception_caffe_name(key: str) -> tuple[str, int]:
    """The Caffe layer and blob index of a :class:`BNInception` state-dict key (official release).

    ``stem.conv1_7x7_s2.conv.weight`` -> ``("conv1/7x7_s2", 0)``; BN ``running_mean`` / ``running_var``
    -> blobs 0 / 1 of ``<conv>/bn`` (divide by its blob 2), BN ``weight`` / ``bias`` -> blobs 0 / 1
    of ``<conv>/bn/scale``; ``blocks.inception_3a.se.fc1.weight`` -> ``("inception_3a_1x1_down", 0)``;
    ``fc.*`` -> ``classifier``. ``num_batches_tracked`` has no Caffe counterpart (KeyError).
    """
    parts = key.split(".")
    if parts[0] == "fc":
        return "classifier", ("weight", "bias").index(parts[1])
    if parts[0] == "blocks" and parts[2] == "se":
        return parts[1] + _SE_CAFFE[parts[3]], ("weight", "bias").index(parts[4])
    if parts[0] == "stem":
        layer = parts[1].replace("_", "/", 1)
    elif parts[0] == "blocks":
        layer = f"{parts[1]}/{parts[2].removeprefix('conv_')}"
    else:
        raise KeyError(f"{key!r} is not a BNInception parameter")
    if parts[-2] == "conv" and parts[-1] == "weight":
        return layer, 0
    if parts[-2] == "bn" and parts[-1] in _CAFFE_BN:
        suffix, blob = _CAFFE_BN[parts[-1]]
        return layer + suffix, blob
    raise KeyError(f"{key!r} has no Caffe counterpart")


def bn_inception_cadene_name(key: str) -> str:
    """The Cadene ``pretrainedmodels`` ``bninception`` key of a plain :class:`BNInception` key.

    Cadene's names are the Caffe names with ``/`` -> ``_`` and ``double3x3a/b`` ->
    ``double_3x3_1/2``; its convolutions also have a bias (fold it into the BN running mean).
    """
    if key.startswith("fc."):
        return "last_linear." + key[3:]
    layer, _ = bn_inception_caffe_name(key)
    layer = layer.removesuffix("/bn/scale").removesuffix("/bn")
    layer = layer.replace("double3x3a", "double_3x3_1").replace("double3x3b", "double_3x3_2")
    layer = layer.replace("double3x3_reduce", "double_3x3_reduce").replace("/", "_")
    kind, name = key.split(".")[-2:]
    return f"{layer}_bn.{name}" if kind == "bn" else f"{layer}.{name}"


register_network(("bn_inception", "se_bn_inception"), BNInception)


# --------------------------------------------------------------------------------------------------
# Inception-ResNet-v2
# --------------------------------------------------------------------------------------------------


def _conv(
    in_ch: int, out_ch: int, k: int | tuple[int, int], stride: int = 1, padding: int | tuple = 0
) -> ConvBNAct:
    """Conv-BN-ReLU with TF-slim's BN eps 1e-3; padding 0 ('VALID') unless given."""
    return ConvBNAct(in_ch, out_ch, k, stride, padding, eps=1e-3)


def _concat_branches(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The outputs of the ``branch*`` children of ``module`` on ``x``, concatenated."""
    return torch.cat([m(x) for name, m in module.named_children() if name.startswith("branch")], 1)


class _InceptionResidual(SEResidualUnit):
    """What the three residual modules share: ``act(x + scale * conv2d(concat(branches(x))))``.

    ``conv2d`` is the linear 1x1 up-projection (with bias, no BN) of the paper's Figs. 16, 17, 19.
    SE sits on the residual branch before the scaled summation (``"standard"``), or where
    ``SEConfig.integration`` puts it (Fig. 5): the shared :class:`~senet.models.common.SEResidualUnit`.
    Subclasses call ``__init__``, register their ``branch*`` modules, then call ``_end``.
    """

    def __init__(self, channels: int, scale: float, se: SEConfig | None) -> None:
        super().__init__()
        self.scale = scale
        self._add_se(se, channels, "pre")

    def _end(self, branch_ch: int, channels: int, se: SEConfig | None, relu: bool = True) -> None:
        self.conv2d = nn.Conv2d(branch_ch, channels, 1)
        self._add_se(se, channels, "standard", "identity", "post")
        self.act = nn.ReLU(inplace=True) if relu else None

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x

    def branches(self, x: torch.Tensor) -> torch.Tensor:
        return _concat_branches(self, x)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2d(self.branches(x))

    def merge(self, out: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        out = out * self.scale + shortcut
        return out if self.act is None else self.act(out)


class Block35(_InceptionResidual):
    """Inception-ResNet-A, 35x35x320 (Szegedy et al. 2016, Fig. 16; TF-slim widths)."""

    def __init__(self, scale: float = 0.17, se: SEConfig | None = None) -> None:
        super().__init__(320, scale, se)
        self.branch0 = _conv(320, 32, 1)
        self.branch1 = nn.Sequential(_conv(320, 32, 1), _conv(32, 32, 3, padding=1))
        self.branch2 = nn.Sequential(
            _conv(320, 32, 1), _conv(32, 48, 3, padding=1), _conv(48, 64, 3, padding=1)
        )
        self._end(128, 320, se)


class Block17(_InceptionResidual):
    """Inception-ResNet-B, 17x17x1088 (Fig. 17; TF-slim widths)."""

    def __init__(self, scale: float = 0.10, se: SEConfig | None = None) -> None:
        super().__init__(1088, scale, se)
        self.branch0 = _conv(1088, 192, 1)
        self.branch1 = nn.Sequential(
            _conv(1088, 128, 1),
            _conv(128, 160, (1, 7), padding=(0, 3)),
            _conv(160, 192, (7, 1), padding=(3, 0)),
        )
        self._end(384, 1088, se)


class Block8(_InceptionResidual):
    """Inception-ResNet-C, 8x8x2080 (Fig. 19; TF-slim widths); the last one has no ReLU."""

    def __init__(self, scale: float = 0.20, se: SEConfig | None = None, *, relu: bool = True) -> None:
        super().__init__(2080, scale, se)
        self.branch0 = _conv(2080, 192, 1)
        self.branch1 = nn.Sequential(
            _conv(2080, 192, 1),
            _conv(192, 224, (1, 3), padding=(0, 1)),
            _conv(224, 256, (3, 1), padding=(1, 0)),
        )
        self._end(448, 2080, se, relu)


class _InceptionConcat(nn.Module):
    """A non-residual Inception module: concat of its branches, then SE on the output (Fig. 2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = _concat_branches(self, x)
        return out if self.se is None else self.se(out)


class Mixed5b(_InceptionConcat):
    """TF-slim's 35x35 module after the stem: 96 | 48-64(5x5) | 64-96-96 | avgpool-64 = 320."""

    def __init__(self, se: SEConfig | None = None) -> None:
        super().__init__()
        self.branch0 = _conv(192, 96, 1)
        self.branch1 = nn.Sequential(_conv(192, 48, 1), _conv(48, 64, 5, padding=2))
        self.branch2 = nn.Sequential(
            _conv(192, 64, 1), _conv(64, 96, 3, padding=1), _conv(96, 96, 3, padding=1)
        )
        self.branch3 = nn.Sequential(nn.AvgPool2d(3, 1, 1, count_include_pad=False), _conv(192, 64, 1))
        self.se = se.block(320) if se is not None else None


class Mixed6a(_InceptionConcat):
    """Reduction-A (Fig. 7, k=l=256, m=n=384): 35x35x320 -> 17x17x1088."""

    def __init__(self, se: SEConfig | None = None) -> None:
        super().__init__()
        self.branch0 = _conv(320, 384, 3, 2)
        self.branch1 = nn.Sequential(_conv(320, 256, 1), _conv(256, 256, 3, padding=1), _conv(256, 384, 3, 2))
        self.branch2 = nn.MaxPool2d(3, 2)
        self.se = se.block(1088) if se is not None else None


class Mixed7a(_InceptionConcat):
    """Reduction-B (Fig. 18; TF-slim widths): 17x17x1088 -> 8x8x2080."""

    def __init__(self, se: SEConfig | None = None) -> None:
        super().__init__()
        self.branch0 = nn.Sequential(_conv(1088, 256, 1), _conv(256, 384, 3, 2))
        self.branch1 = nn.Sequential(_conv(1088, 256, 1), _conv(256, 288, 3, 2))
        self.branch2 = nn.Sequential(
            _conv(1088, 256, 1), _conv(256, 288, 3, padding=1), _conv(288, 320, 3, 2)
        )
        self.branch3 = nn.MaxPool2d(3, 2)
        self.se = se.block(2080) if se is not None else None


class InceptionResNetV2(ClassifierNet):
    """Inception-ResNet-v2 / SE-Inception-ResNet-v2 (see the module docstring); 299x299 input.

    Args:
        se: an :class:`SEConfig` (any ``integration`` for the residual modules; position
            ``"after_block"`` only: there is no bottleneck 3x3), or ``None`` for the plain network.
        num_classes, in_chans: classifier width and input channels.
        drop_rate: dropout before the classifier; 0.2 as in Szegedy et al. 2016, Fig. 15
            ("Dropout (keep 0.8)").
    """

    def __init__(
        self,
        *,
        se: SEConfig | None = None,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.2,
    ) -> None:
        super().__init__(in_chans, num_classes, 75, drop_rate)
        if se is not None:
            se.check_supported("InceptionResNetV2", stages=(3, 4, 5), position=("after_block",))
        se3, se4, se5 = (se and se.for_stage(s) for s in (3, 4, 5))
        self.conv2d_1a = _conv(in_chans, 32, 3, 2)
        self.conv2d_2a = _conv(32, 32, 3)
        self.conv2d_2b = _conv(32, 64, 3, padding=1)
        self.add_feature("conv2d_2b", 64, 2, stage=1)
        self.maxpool_3a = nn.MaxPool2d(3, 2)
        self.conv2d_3b = _conv(64, 80, 1)
        self.conv2d_4a = _conv(80, 192, 3)
        self.add_feature("conv2d_4a", 192, 4, stage=2)
        self.maxpool_5a = nn.MaxPool2d(3, 2)
        self.mixed_5b = Mixed5b(se3)
        self.repeat = nn.Sequential(*[Block35(0.17, se3) for _ in range(10)])
        self.add_feature("repeat", 320, 8, stage=3)
        self.mixed_6a = Mixed6a(se4)
        self.repeat_1 = nn.Sequential(*[Block17(0.10, se4) for _ in range(20)])
        self.add_feature("repeat_1", 1088, 16, stage=4)
        self.mixed_7a = Mixed7a(se5)
        self.repeat_2 = nn.Sequential(*[Block8(0.20, se5) for _ in range(9)])
        self.block8 = Block8(1.0, se5, relu=False)
        self.conv2d_7b = _conv(2080, 1536, 1)
        self.add_feature("conv2d_7b", 1536, 32, stage=5)
        self.add_head(1536, num_classes, drop_rate)
        init_weights(self)


register_network(
    ("inception_resnet_v2", "se_inception_resnet_v2"), InceptionResNetV2, info=dict(input_size=(3, 299, 299))
)
