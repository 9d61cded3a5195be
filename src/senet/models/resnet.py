"""ResNet, ResNeXt and SENet-154, each with and without SE (paper Sec. 3.2, 6.1, Table 1).

Two layouts compute different functions from the same parameter names:

* ``layout="release"`` (default) follows the official Caffe release (hujie-frank/SENet) and its
  PyTorch ports (Cadene ``pretrainedmodels``, timm ``legacy_*``): the stem max-pool uses ceil mode
  with no padding, and in ResNet-50/101/152 the stride of a stage sits on the first 1x1
  convolution of its first bottleneck (original Caffe ResNet; 3.86 GFLOPs for ResNet-50, as in
  Table 2). In ResNeXt and SENet-154 the stride sits on the 3x3 (grouped) convolution.
* ``layout="torchvision"`` follows torchvision and timm's ``seresnet*``: max-pool with padding 1,
  stride on the 3x3 convolution ("ResNet v1.5").

``stride_in_1x1`` overrides the stride placement alone. SE sits on the residual branch before the
summation (Fig. 3); ``SEConfig.integration`` / ``position`` / ``stages`` give the variants of
Sec. 7 (Fig. 5, SE_3x3, SE_Stage_k). Stages are numbered as in the paper: conv2_x .. conv5_x = 2..5.

``feature_info`` (``features_only=True``): the stem after its max-pool (stride 4, stage 1) and
``layer1`` .. ``layer4`` (conv2_x .. conv5_x) at strides 4, 8, 16, 32.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from ..se import SEConfig
from .common import ClassifierNet, SEResidualUnit, init_weights
from .registry import register_network

__all__ = ["BasicBlock", "Bottleneck", "ResNet"]

LAYOUTS = ("release", "torchvision")


def conv3x3(in_ch: int, out_ch: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride, 1, groups=groups, bias=False)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)


class _ResidualBlock(SEResidualUnit):
    """Post-activation ResNet unit: ``relu(residual(x) + shortcut(x))`` (He et al. 2016)."""

    last_bn = ""  # the BN that ends the residual branch
    merge_is_add_relu = True

    def _end(self, se: SEConfig | None, out_ch: int, downsample: nn.Module | None) -> None:
        """Register what follows the branch: SE ("standard", "post", "identity"), the shortcut, the ReLU."""
        self._add_se(se, out_ch, "standard", "post", "identity")
        self.downsample = downsample
        self.relu = nn.ReLU(inplace=True)

    def zero_init_last_bn(self) -> None:
        """Zero the scale of the branch's last BN: the unit starts as its shortcut (Goyal et al.
        2017, "Accurate, Large Minibatch SGD", Sec. 5.1; torchvision's ``zero_init_residual``)."""
        nn.init.zeros_(getattr(self, self.last_bn).weight)

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, (x if self.downsample is None else self.downsample(x))

    def merge(self, out: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        out += shortcut  # in place, as torchvision: a new feature map costs more than the sum (CPU)
        return self.relu(out)


class BasicBlock(_ResidualBlock):
    """Two 3x3 convolutions (ResNet-18/34)."""

    expansion = 1
    last_bn = "bn2"

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        *,
        se: SEConfig | None = None,
        groups: int = 1,
        base_width: int = 64,
        stride_in_1x1: bool = False,
        first_width: float = 1.0,
    ) -> None:
        super().__init__()
        if groups != 1 or base_width != 64 or first_width != 1.0:
            raise ValueError("BasicBlock supports groups=1, base_width=64 and first_width=1 only")
        if se is not None and se.position == "3x3":
            raise ValueError("SE position '3x3' needs a bottleneck block (ResNet-50 and deeper)")
        self._add_se(se, inplanes, "pre")
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self._end(se, planes, downsample)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(out))


class Bottleneck(_ResidualBlock):
    """1x1 -> 3x3 (grouped for ResNeXt) -> 1x1, expansion 4.

    ``width = planes * base_width / 64 * groups`` channels in the 3x3 convolution;
    ``first_width`` scales the output of the first 1x1 (0.5 in SENet-154: "the number of channels
    of the first 1x1 convolution in each bottleneck halved", Sec. 6.1).
    """

    expansion = 4
    last_bn = "bn3"

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        *,
        se: SEConfig | None = None,
        groups: int = 1,
        base_width: int = 64,
        stride_in_1x1: bool = False,
        first_width: float = 1.0,
    ) -> None:
        super().__init__()
        width = int(planes * base_width / 64) * groups
        mid = int(width * first_width)
        out_ch = planes * self.expansion
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self._add_se(se, inplanes, "pre")
        self.conv1 = conv1x1(inplanes, mid, s1)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = conv3x3(mid, width, s3, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.se_3x3 = se.block(width) if self.se_mode == "3x3" else None
        self.conv3 = conv1x1(width, out_ch)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self._end(se, out_ch, downsample)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        if self.se_3x3 is not None:
            out = self.se_3x3(out)
        return self.bn3(self.conv3(out))


def _stem(in_chans: int, inplanes: int, deep: bool, ceil_pool: bool) -> nn.Sequential:
    """7x7/2 conv (or SENet-154's three 3x3 convs), BN, ReLU, 3x3/2 max-pool.

    The names follow the release's ``layer0`` (``conv1, bn1, relu1, ..., pool``).
    """
    convs = (
        [(in_chans, 64, 3, 2), (64, 64, 3, 1), (64, inplanes, 3, 1)] if deep else [(in_chans, inplanes, 7, 2)]
    )
    layers: list[tuple[str, nn.Module]] = []
    for i, (cin, cout, k, s) in enumerate(convs, 1):
        layers += [
            (f"conv{i}", nn.Conv2d(cin, cout, k, s, k // 2, bias=False)),
            (f"bn{i}", nn.BatchNorm2d(cout)),
            (f"relu{i}", nn.ReLU(inplace=True)),
        ]
    pool = nn.MaxPool2d(3, 2, ceil_mode=True) if ceil_pool else nn.MaxPool2d(3, 2, padding=1)
    return nn.Sequential(OrderedDict([*layers, ("pool", pool)]))


class ResNet(ClassifierNet):
    """ResNet / ResNeXt / SENet-154 with optional SE blocks.

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        layers: blocks per stage (conv2_x..conv5_x).
        se: an :class:`SEConfig`, or ``None`` for the plain network.
        num_classes, in_chans: classifier width and input channels.
        groups, base_width: cardinality and width per group (ResNeXt 32x4d: 32, 4).
        layout: ``"release"`` or ``"torchvision"`` (see the module docstring).
        stride_in_1x1: where the stride of a bottleneck sits; ``None`` = the layout's choice.
        deep_stem: three 3x3 convolutions instead of the 7x7 (SENet-154).
        stem_width: channels after the stem (64; 128 in SENet-154).
        first_width: scale of the first 1x1 convolution of each bottleneck (0.5 in SENet-154).
        downsample_kernel: kernel of the projection shortcuts of stages 3-5 (3 in SENet-154; the
            first stage keeps a 1x1 projection, as in the release).
        drop_rate: dropout before the classifier (0.2 in SENet-154, 0 elsewhere).
        zero_init_residual: start every unit as its shortcut (last BN of each branch at scale 0);
            not in the paper, a training aid for short schedules (as torchvision's keyword).
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        *,
        se: SEConfig | None = None,
        num_classes: int = 1000,
        in_chans: int = 3,
        groups: int = 1,
        base_width: int = 64,
        layout: str = "release",
        stride_in_1x1: bool | None = None,
        deep_stem: bool = False,
        stem_width: int = 64,
        first_width: float = 1.0,
        downsample_kernel: int = 1,
        drop_rate: float = 0.0,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__(in_chans, num_classes, 32, drop_rate)
        if layout not in LAYOUTS:
            raise ValueError(f"layout={layout!r} is not one of {LAYOUTS}")
        if len(layers) != 4:
            raise ValueError(f"ResNet has 4 stages, got layers={tuple(layers)}")
        if se is not None:
            se.check_supported("ResNet", stages=(2, 3, 4, 5))
        if stride_in_1x1 is None:
            stride_in_1x1 = layout == "release" and groups == 1
        self.layout = layout
        self.stem = _stem(in_chans, stem_width, deep_stem, ceil_pool=layout == "release")
        self.add_feature("stem", stem_width, 4, stage=1)
        block_kw = dict(
            groups=groups, base_width=base_width, stride_in_1x1=stride_in_1x1, first_width=first_width
        )
        inplanes = stem_width
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            stage_se = se and se.for_stage(i + 2)
            kernel, stride = (1, 1) if i == 0 else (downsample_kernel, 2)
            out_ch = planes * block.expansion
            downsample = None
            if stride != 1 or inplanes != out_ch:
                conv = nn.Conv2d(inplanes, out_ch, kernel, stride, kernel // 2, bias=False)
                downsample = nn.Sequential(conv, nn.BatchNorm2d(out_ch))
            units = [block(inplanes, planes, stride, downsample, se=stage_se, **block_kw)]
            units += [block(out_ch, planes, se=stage_se, **block_kw) for _ in range(1, n)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*units))
            self.add_feature(f"layer{i + 1}", out_ch, 4 * 2**i, i + 2)
            inplanes = out_ch
        self.add_head(inplanes, num_classes, drop_rate)
        init_weights(self, zero_init_residual)


# name: (block, blocks per stage, cardinality and width per group); each with its SE twin "se_<name>".
RESNETS = {
    "resnet18": (BasicBlock, (2, 2, 2, 2), {}),
    "resnet34": (BasicBlock, (3, 4, 6, 3), {}),
    "resnet50": (Bottleneck, (3, 4, 6, 3), {}),
    "resnet101": (Bottleneck, (3, 4, 23, 3), {}),
    "resnet152": (Bottleneck, (3, 8, 36, 3), {}),
    "resnext50_32x4d": (Bottleneck, (3, 4, 6, 3), dict(groups=32, base_width=4)),
    "resnext101_32x4d": (Bottleneck, (3, 4, 23, 3), dict(groups=32, base_width=4)),
}
for _name, (_block, _layers, _kw) in RESNETS.items():
    register_network((_name, f"se_{_name}"), ResNet, _block, _layers, **_kw)

# SENet-154 (Sec. 6.1): ResNeXt-152 64x4d with SE, a deep stem, halved first 1x1 convs, 3x3 projection
# shortcuts and dropout 0.2. ``se=False`` gives the same network without SE.
SENET154 = dict(deep_stem=True, stem_width=128, first_width=0.5, downsample_kernel=3, drop_rate=0.2)
register_network(
    ("senet154",),
    ResNet,
    Bottleneck,
    (3, 8, 36, 3),
    groups=64,
    base_width=4,
    defaults=SENET154,
    info=dict(se_names=("senet154",)),
)
