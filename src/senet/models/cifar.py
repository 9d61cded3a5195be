"""CIFAR networks of the paper's Tables 4-5, each with and without SE (32x32 input, 10 or 100 classes).

* ``resnet20/32/56/110``: He et al., "Deep Residual Learning" Sec. 4.2: a 3x3 stem convolution
  with 16 channels, three stages of n basic blocks (depth 6n + 2) with 16, 32, 64 channels, global
  average pooling, a linear classifier. The blocks are :class:`~senet.models.resnet.BasicBlock`.
* ``resnet164``: pre-activation bottleneck ResNet (He et al., "Identity Mappings in Deep Residual
  Networks"), 18 bottlenecks per stage, output widths 64, 128, 256.
* ``wrn16_8``: Wide ResNet 16-8 (Zagoruyko & Komodakis), pre-activation basic blocks, widths
  128, 256, 512, no dropout (the SE paper's WRN-16-8 rows use none).
* ``shake_shake26_2x96d``: Shake-Shake 26 2x96d (Gastaldi 2017, as in his Torch code): 3x3 stem
  conv-BN with 16 channels, three stages of 4 units with widths 96, 192, 384, each unit two
  ReLU-3x3-BN-ReLU-3x3-BN branches mixed by Shake-Shake-Image; the shortcut is the identity, or
  where the width changes ReLU and two strided 1x1 convolutions (one on the input shifted by a
  pixel) concatenated, then BN; a final ReLU, pooling and the classifier.
* ``shake_even29_2x4x64d``: the CIFAR-100 network of Table 5, ResNeXt-29 2x4x64d: 3 units per stage,
  each branch a ResNeXt bottleneck of cardinality 4 with 64 channels per group (widths 256, 512,
  1024), 64-channel stem, Shake-Even-Image. Gastaldi's code for it is not public, so the unit
  layout follows his Shake-Shake 26 (ReLU at the start of each branch, same shortcut); the
  parameter count is his 34.4M within 0.4%. Registered with 100 classes.

Gastaldi's naming (Sec. 2.2): "Shake" draws a new coefficient for the pass, "Even" uses 0.5, "Keep"
reuses the forward coefficient in the backward pass. So Shake-Even means a random forward alpha and
a backward beta of 0.5 (``shake_backward="even"``); beta = alpha is Shake-Keep (``"keep"``).

SE placement (the paper gives none for these networks, so as in Sec. 4 / Fig. 3): the SE block sits
on the non-identity branch, after its last layer and before the summation with the shortcut. For
Shake-Shake that branch is the mix of the two residual branches, so one SE block per residual unit
recalibrates the mixed output (this keeps the SE cost of Eq. 5 at one block per unit; SE on each
branch before the mix would double it).

``SEConfig.stages`` numbers the three stages 1, 2, 3 (16/32/64 channels in ResNet-20..110).
``SEConfig.integration`` (Fig. 5) is supported by every family here; ``position="3x3"`` (SE_3x3)
only by the bottleneck network ResNet-164.

``feature_info`` (``features_only=True``) of every family: the stem (stride 1, stage 0) and the
outputs of ``layer1`` .. ``layer3`` at strides 1, 2, 4. As in timm's pre-activation ResNetV2, the
``layer3`` feature of ResNet-164, WRN and Shake-Shake is the stage output itself, without the final
BN-ReLU / ReLU that ``forward_features`` adds.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from ..se import SEConfig
from .common import ClassifierNet, ConvBNAct, SEResidualUnit, init_weights
from .registry import register_network
from .resnet import BasicBlock

__all__ = [
    "CifarResNet",
    "PreActBasicBlock",
    "PreActBottleneck",
    "PreActResNet",
    "ShakeBlock",
    "ShakeShake",
    "ShakeShakeFunction",
    "ShakeShakeNet",
    "ShakeShortcut",
    "ZeroPadShortcut",
]

SHORTCUTS = ("A", "B")
STAGES = (1, 2, 3)
CIFAR = dict(dataset="cifar", input_size=(3, 32, 32), num_classes=10)


class ZeroPadShortcut(nn.Module):
    """Option A shortcut of He et al.: subsample by ``stride`` and append zero channels, no parameters."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        if out_ch < in_ch:
            raise ValueError(f"a zero-padding shortcut cannot shrink {in_ch} channels to {out_ch}")
        self.in_ch, self.out_ch, self.stride = in_ch, out_ch, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cl = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        x = x[:, :, :: self.stride, :: self.stride]
        out = x.new_zeros(x.shape[0], self.out_ch, x.shape[2], x.shape[3])
        if cl:  # keep channels-last: a contiguous shortcut would turn every later sum contiguous
            out = out.contiguous(memory_format=torch.channels_last)
        out[:, : self.in_ch] = x
        return out

    def extra_repr(self) -> str:
        return f"{self.in_ch}, {self.out_ch}, stride={self.stride}"


class CifarResNet(ClassifierNet):
    """He et al.'s CIFAR ResNet (depth 6n + 2) built from :class:`BasicBlock`, with optional SE.

    Args:
        depth: 20, 32, 44, 56, 110, ... (6n + 2).
        se: an :class:`SEConfig` (stages 1, 2, 3), or ``None`` for the plain network.
        shortcut: ``"A"`` (default) zero-padding identity shortcuts when the width doubles, as in
            He et al. Sec. 4.2 and its reference implementation (fb.resnet.torch ``shortcutType A``
            for CIFAR): this is the network of the paper's 0.27M / 1.7M figures and the ResNet-110
            the SE paper compares against. ``"B"``: 1x1 convolution + BN projections (torchvision
            style, +2.7K parameters).
        widths: channels of the three stages.
        zero_init_residual: start every unit as its shortcut (last BN of each branch at scale 0;
            not in the paper: a training aid for short schedules, torchvision's keyword).
    """

    def __init__(
        self,
        depth: int = 20,
        /,
        *,
        se: SEConfig | None = None,
        num_classes: int = 10,
        in_chans: int = 3,
        shortcut: str = "A",
        widths: Sequence[int] = (16, 32, 64),
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__(in_chans, num_classes, 8)
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2 (20, 32, 56, 110, ...), got {depth}")
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut={shortcut!r} is not one of {SHORTCUTS} (A: zero pad, B: 1x1 conv)")
        if len(widths) != 3:
            raise ValueError(f"CIFAR ResNet has 3 stages, got widths={tuple(widths)}")
        if se is not None:
            se.check_supported("CifarResNet", stages=STAGES, position=("after_block",))
        n = (depth - 2) // 6
        self.depth = depth
        self.shortcut_type = shortcut
        self.stem = ConvBNAct(in_chans, widths[0], 3)
        self.add_feature("stem", widths[0], 1, stage=0)
        inplanes = widths[0]
        for i, planes in enumerate(widths):
            stage_se = se and se.for_stage(i + 1)
            stride = 1 if i == 0 else 2
            down = None
            if (stride != 1 or inplanes != planes) and shortcut == "A":
                down = ZeroPadShortcut(inplanes, planes, stride)
            elif stride != 1 or inplanes != planes:
                down = nn.Sequential(
                    nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
                )
            blocks = [BasicBlock(inplanes, planes, stride, down, se=stage_se)]
            blocks += [BasicBlock(planes, planes, se=stage_se) for _ in range(1, n)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            self.add_feature(f"layer{i + 1}", planes, 2**i, stage=i + 1)
            inplanes = planes
        self.add_head(inplanes, num_classes)
        init_weights(self, zero_init_residual)


class _PreActUnit(SEResidualUnit):
    """Pre-activation unit (He et al., "Identity Mappings", Fig. 4e): ``x + F(relu(bn(x)))``.

    When the width or resolution changes, the shortcut is a 1x1 convolution of the pre-activated
    input (as in the reference Torch code of both ResNet-164 and WRN); otherwise it is ``x``.
    With "pre" integration, SE recalibrates the pre-activated input of the residual convolutions.
    """

    def _preact_and_shortcut(self, in_ch: int, out_ch: int, stride: int, se: SEConfig | None) -> None:
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.relu = nn.ReLU(inplace=True)
        needs_proj = stride != 1 or in_ch != out_ch
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1, stride, bias=False) if needs_proj else None
        self._add_se(se, in_ch, "pre")

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pre = self.relu(self.bn1(x))
        return pre, (x if self.shortcut is None else self.shortcut(pre))


class PreActBottleneck(_PreActUnit):
    """BN-ReLU-1x1, BN-ReLU-3x3 (stride), BN-ReLU-1x1 with expansion 4 (ResNet-164).

    SE_3x3 (``position="3x3"``) recalibrates the output of the 3x3 convolution after its BN-ReLU.
    """

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1, *, se: SEConfig | None = None) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self._preact_and_shortcut(in_ch, out_ch, stride, se)
        self.conv1 = nn.Conv2d(in_ch, planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.se_3x3 = se.block(planes) if self.se_mode == "3x3" else None
        self.conv3 = nn.Conv2d(planes, out_ch, 1, bias=False)
        self._add_se(se, out_ch, "standard", "post", "identity")

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.relu(self.bn3(out))
        if self.se_3x3 is not None:
            out = self.se_3x3(out)
        return self.conv3(out)


class PreActBasicBlock(_PreActUnit):
    """BN-ReLU-3x3 (stride), BN-ReLU-3x3: the wide basic block of WRN (no dropout, as in Table 4)."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int = 1, *, se: SEConfig | None = None) -> None:
        super().__init__()
        if se is not None and se.position == "3x3":
            raise ValueError("SE position '3x3' needs a bottleneck block (e.g. resnet164)")
        self._preact_and_shortcut(in_ch, planes, stride, se)
        self.conv1 = nn.Conv2d(in_ch, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self._add_se(se, planes, "standard", "post", "identity")

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.relu(self.bn2(self.conv1(x))))


class PreActResNet(ClassifierNet):
    """Pre-activation ResNet for CIFAR: 3x3 stem conv, three stages, BN-ReLU, pooling, classifier.

    Args:
        block: :class:`PreActBottleneck` (ResNet-164) or :class:`PreActBasicBlock` (WRN).
        blocks: units per stage (18 for ResNet-164: depth 9n + 2; 2 for WRN-16-k: depth 6n + 4).
        planes: inner width of the three stages (outputs: ``planes * block.expansion``).
        se: an :class:`SEConfig` (stages 1, 2, 3), or ``None`` for the plain network.
        stem_width: channels of the stem convolution (16 in both papers).
    """

    def __init__(
        self,
        block: type[PreActBottleneck] | type[PreActBasicBlock],
        blocks: int,
        planes: Sequence[int],
        /,
        *,
        se: SEConfig | None = None,
        num_classes: int = 10,
        in_chans: int = 3,
        stem_width: int = 16,
    ) -> None:
        super().__init__(in_chans, num_classes, 8)
        if len(planes) != 3 or blocks < 1:
            raise ValueError(
                f"PreActResNet has 3 stages of >= 1 blocks, got planes={tuple(planes)}, {blocks=}"
            )
        if se is not None:
            positions = ("after_block", "3x3") if block.expansion > 1 else ("after_block",)
            se.check_supported(type(self).__name__, stages=STAGES, position=positions)
        self.stem = nn.Conv2d(in_chans, stem_width, 3, 1, 1, bias=False)  # the first unit starts with BN-ReLU
        self.add_feature("stem", stem_width, 1, stage=0)
        in_ch = stem_width
        for i, p in enumerate(planes):
            stage_se = se and se.for_stage(i + 1)
            units = [block(in_ch, p, 1 if i == 0 else 2, se=stage_se)]
            in_ch = p * block.expansion
            units += [block(in_ch, p, se=stage_se) for _ in range(1, blocks)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*units))
            self.add_feature(f"layer{i + 1}", in_ch, 2**i, stage=i + 1)
        self.bn = nn.BatchNorm2d(in_ch)
        self.relu = nn.ReLU(inplace=True)
        self.add_head(in_ch, num_classes)
        init_weights(self)


class ShakeShakeFunction(torch.autograd.Function):
    """``alpha * x1 + (1 - alpha) * x2`` forward, gradients ``beta * g`` and ``(1 - beta) * g`` backward.

    Gastaldi 2017, Sec. 2: the backward coefficient beta is drawn independently of the forward alpha
    ("Shake-Shake"); beta = 0.5 is "Shake-Even", beta = alpha is "Shake-Keep" (an ordinary weighted sum).
    """

    @staticmethod
    def forward(
        ctx, x1: torch.Tensor, x2: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor
    ) -> torch.Tensor:
        ctx.save_for_backward(beta)
        return x1 * alpha + x2 * (1 - alpha)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (beta,) = ctx.saved_tensors
        return grad * beta, grad * (1 - beta), None, None


SHAKE_FORWARD = ("shake", "even")
SHAKE_BACKWARD = ("shake", "even", "keep")
SHAKE_LEVELS = ("image", "batch")


class ShakeShake(nn.Module):
    """Mixes the two residual branches: random in training, the plain average (0.5 each) in eval.

    Args:
        forward: ``"shake"`` (alpha ~ U(0, 1)) or ``"even"`` (alpha = 0.5).
        backward: ``"shake"`` (beta ~ U(0, 1), independent of alpha), ``"even"`` (beta = 0.5) or
            ``"keep"`` (beta = alpha).
        level: ``"image"`` (one coefficient per image, Gastaldi's best setting) or ``"batch"``.
    """

    def __init__(self, forward: str = "shake", backward: str = "shake", level: str = "image") -> None:
        super().__init__()
        for name, value, allowed in (
            ("shake_forward", forward, SHAKE_FORWARD),
            ("shake_backward", backward, SHAKE_BACKWARD),
            ("shake_level", level, SHAKE_LEVELS),
        ):
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not one of {allowed}")
        self.forward_mode, self.backward_mode, self.level = forward, backward, level

    def _coefficient(self, mode: str, x: torch.Tensor) -> torch.Tensor:
        shape = (x.shape[0] if self.level == "image" else 1, 1, 1, 1)
        if mode == "shake":
            return torch.rand(shape, dtype=x.dtype, device=x.device)
        return torch.full(shape, 0.5, dtype=x.dtype, device=x.device)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return 0.5 * (x1 + x2)
        alpha = self._coefficient(self.forward_mode, x1)
        beta = alpha if self.backward_mode == "keep" else self._coefficient(self.backward_mode, x1)
        return ShakeShakeFunction.apply(x1, x2, alpha, beta)

    def extra_repr(self) -> str:
        return f"forward={self.forward_mode!r}, backward={self.backward_mode!r}, level={self.level!r}"


class ShakeShortcut(nn.Module):
    """Gastaldi's shortcut when the width changes: ReLU, then two 1x1 convolutions with ``stride`` on
    the input and on the input shifted by one pixel right and down, each giving half the channels,
    concatenated, then BN. Without parameters ("identity") when the shapes match.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.relu = nn.ReLU()
        self.conv1 = nn.Conv2d(in_ch, out_ch // 2, 1, bias=False)
        self.conv2 = nn.Conv2d(in_ch, out_ch - out_ch // 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        s = self.stride
        shifted = nn.functional.pad(x[:, :, :-1, :-1], (1, 0, 1, 0))
        out = torch.cat((self.conv1(x[:, :, ::s, ::s]), self.conv2(shifted[:, :, ::s, ::s])), dim=1)
        return self.bn(out)


def _shake_branch(in_ch: int, out_ch: int, stride: int, width: int | None, groups: int) -> nn.Sequential:
    """One residual branch, starting with its own ReLU (so the sum needs none after it).

    ``width=None``: ReLU-3x3-BN-ReLU-3x3-BN (Shake-Shake 26); otherwise a ResNeXt bottleneck
    ReLU-1x1-BN-ReLU-3x3 (``groups``)-BN-ReLU-1x1-BN with ``width`` inner channels.
    """
    if width is None:
        convs = [(in_ch, out_ch, 3, stride, 1), (out_ch, out_ch, 3, 1, 1)]
    else:
        convs = [(in_ch, width, 1, 1, 1), (width, width, 3, stride, groups), (width, out_ch, 1, 1, 1)]
    layers: list[tuple[str, nn.Module]] = []
    for i, (cin, cout, k, s, g) in enumerate(convs, 1):
        # the first ReLU must not be in place: its input is shared with the other branch and the shortcut
        layers += [
            (f"relu{i}", nn.ReLU(inplace=i > 1)),
            (f"conv{i}", nn.Conv2d(cin, cout, k, s, k // 2, groups=g, bias=False)),
            (f"bn{i}", nn.BatchNorm2d(cout)),
        ]
    return nn.Sequential(OrderedDict(layers))


class ShakeBlock(SEResidualUnit):
    """A 3-branch residual unit: ``shortcut(x) + shake(branch1(x), branch2(x))``, SE on the mixed branch."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int = 1,
        *,
        se: SEConfig | None = None,
        width: int | None = None,
        groups: int = 1,
        shake: ShakeShake | None = None,
    ) -> None:
        super().__init__()
        needs_proj = stride != 1 or in_ch != out_ch
        self.shortcut = ShakeShortcut(in_ch, out_ch, stride) if needs_proj else None
        self._add_se(se, in_ch, "pre")
        self.branch1 = _shake_branch(in_ch, out_ch, stride, width, groups)
        self.branch2 = _shake_branch(in_ch, out_ch, stride, width, groups)
        self.shake = shake if shake is not None else ShakeShake()
        self._add_se(se, out_ch, "standard", "post", "identity")

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, (x if self.shortcut is None else self.shortcut(x))

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.shake(self.branch1(x), self.branch2(x))


class ShakeShakeNet(ClassifierNet):
    """Shake-Shake ResNet for CIFAR (Gastaldi 2017): stem conv-BN, three stages of 3-branch units, ReLU,
    pooling, classifier.

    Args:
        blocks: units per stage (4 for depth 26 = 6 * 4 + 2; 3 for ResNeXt-29 = 9 * 3 + 2).
        widths: output channels of the three stages (96, 192, 384 for 2x96d).
        se: an :class:`SEConfig` (stages 1, 2, 3), or ``None`` for the plain network.
        stem_width: channels of the stem convolution (16; 64 for ResNeXt-29).
        bottleneck_widths: inner widths of ResNeXt bottleneck branches per stage (``None``: two 3x3
            convolutions per branch); ``groups``: their cardinality.
        shake_forward, shake_backward, shake_level: see :class:`ShakeShake`.
    """

    def __init__(
        self,
        blocks: int = 4,
        widths: Sequence[int] = (96, 192, 384),
        /,
        *,
        se: SEConfig | None = None,
        num_classes: int = 10,
        in_chans: int = 3,
        stem_width: int = 16,
        bottleneck_widths: Sequence[int] | None = None,
        groups: int = 1,
        shake_forward: str = "shake",
        shake_backward: str = "shake",
        shake_level: str = "image",
    ) -> None:
        super().__init__(in_chans, num_classes, 8)
        if len(widths) != 3 or blocks < 1:
            raise ValueError(
                f"ShakeShakeNet has 3 stages of >= 1 blocks, got widths={tuple(widths)}, {blocks=}"
            )
        if bottleneck_widths is not None and len(bottleneck_widths) != 3:
            raise ValueError(f"bottleneck_widths needs one width per stage, got {tuple(bottleneck_widths)}")
        if se is not None:
            se.check_supported(type(self).__name__, stages=STAGES, position=("after_block",))
        self.stem = ConvBNAct(in_chans, stem_width, 3, act=False)  # each branch starts with a ReLU
        self.add_feature("stem", stem_width, 1, stage=0)
        in_ch = stem_width
        for i, out_ch in enumerate(widths):
            stage_se = se and se.for_stage(i + 1)
            width = None if bottleneck_widths is None else bottleneck_widths[i]
            units = []
            for j in range(blocks):
                shake = ShakeShake(shake_forward, shake_backward, shake_level)
                stride = 2 if i > 0 and j == 0 else 1
                units.append(
                    ShakeBlock(in_ch, out_ch, stride, se=stage_se, width=width, groups=groups, shake=shake)
                )
                in_ch = out_ch
            setattr(self, f"layer{i + 1}", nn.Sequential(*units))
            self.add_feature(f"layer{i + 1}", in_ch, 2**i, stage=i + 1)
        self.relu = nn.ReLU(inplace=True)
        self.add_head(in_ch, num_classes)
        init_weights(self)


for _depth in (20, 32, 56, 110):
    register_network((f"resnet{_depth}", f"se_resnet{_depth}"), CifarResNet, _depth, info=CIFAR)
# Pre-activation ResNet-164 (18 bottlenecks per stage, outputs 64-128-256); Wide ResNet 16-8 (2 blocks
# per stage, widths 16k-32k-64k with k = 8).
register_network(("resnet164", "se_resnet164"), PreActResNet, PreActBottleneck, 18, (16, 32, 64), info=CIFAR)
register_network(("wrn16_8", "se_wrn16_8"), PreActResNet, PreActBasicBlock, 2, (128, 256, 512), info=CIFAR)
# Shake-Shake-Image 26 2x96d (the CIFAR-10 row of Table 4).
register_network(
    ("shake_shake26_2x96d", "se_shake_shake26_2x96d"), ShakeShakeNet, 4, (96, 192, 384), info=CIFAR
)
# Shake-Even-Image ResNeXt-29 2x4x64d (the CIFAR-100 row of Table 5): each of the two branches is a ResNeXt
# bottleneck of cardinality 4 and 64 channels per group (256-512-1024 inner and output widths).
register_network(
    ("shake_even29_2x4x64d", "se_shake_even29_2x4x64d"),
    ShakeShakeNet,
    3,
    (256, 512, 1024),
    defaults=dict(stem_width=64, bottleneck_widths=(256, 512, 1024), groups=4, shake_backward="even"),
    info={**CIFAR, "num_classes": 100},
)
