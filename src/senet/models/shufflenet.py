"""ShuffleNet v1 (Zhang et al. 2018, 1x, g=3), with and without SE (paper Table 3).

Stem: 3x3/2 convolution (24 channels), BN, ReLU, 3x3/2 max-pool. Stages 2-4 (the ShuffleNet
paper's numbering, Table 1) of 4, 8, 4 units with 240, 480, 960 output channels. A unit
(ShuffleNet Fig. 2):

* residual branch: 1x1 group convolution (g groups; not grouped in the first unit of stage 2,
  whose input has only 24 channels), BN, ReLU, channel shuffle, 3x3 depthwise convolution (stride
  1 or 2), BN, 1x1 group convolution, BN; bottleneck width = output channels / 4;
* stride 1: the branch is added to the identity; stride 2 (first unit of a stage): a 3x3/2 average
  pool of the input is concatenated with the branch, which then has ``out - in`` channels;
* ReLU after the addition / concatenation.

Then global average pooling and the classifier ``fc``.

SE placement: the paper says "similar schemes" (Sec. 3.3); as in SE-ResNet (Fig. 3) SE recalibrates
the residual branch before the addition / concatenation. This agrees with Table 3: 0.62M SE
parameters (1.87M -> 2.48M; the paper: 1.8M -> 2.4M, both figures apparently cut to one decimal),
whereas SE after the addition / concatenation would add 0.73M (2.59M).

Cost: 137.5M multiply-adds and 1.87M parameters, the figures of the official Megvii model
(its README: 138M, 1.9M). Table 3's "140 MFLOPs" is the ShuffleNet paper's nominal budget for the
whole 1x family (every group number); SE adds 0.6M multiply-adds in its FCs and 1.6M
multiplications by the gates, the paper's +2 MFLOPs (``senet.analysis.profile`` counts only the
FCs).

The integration variants of Fig. 5 (``"pre"``, ``"post"``, ``"identity"``: on the stride-2 units the
identity branch is the average-pooled shortcut) and ``position="3x3"`` (SE after the depthwise 3x3
convolution and its BN) are supported; ``stages`` uses the numbering 2, 3, 4.

``feature_info`` (``features_only=True``): the stem after its max-pool (stride 4, stage 1, as the
ResNets' stem) and the outputs of stages 2, 3, 4 at strides 8, 16, 32.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from ..se import SEConfig
from .common import ClassifierNet, ConvBNAct, SEResidualUnit, init_weights
from .registry import register_network

__all__ = ["ChannelShuffle", "ShuffleNet", "ShuffleUnit"]

# Output channels of stages 2-4 for each number of groups (ShuffleNet Table 1, 1x).
STAGE_WIDTHS: dict[int, tuple[int, int, int]] = {
    1: (144, 288, 576),
    2: (200, 400, 800),
    3: (240, 480, 960),
    4: (272, 544, 1088),
    8: (384, 768, 1536),
}
STAGE_DEPTHS: tuple[int, int, int] = (4, 8, 4)


class ChannelShuffle(nn.Module):
    """Interleave the channels of ``groups`` groups: (g, C/g) -> (C/g, g) (ShuffleNet Sec. 3.1).

    Same result as ``torch.nn.ChannelShuffle``, written with reshape/transpose so that the
    network exports to ONNX (``aten::channel_shuffle`` has no ONNX symbolic).
    """

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.reshape(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class ShuffleUnit(SEResidualUnit):
    """One ShuffleNet unit with optional SE (see the module docstring for where SE sits).

    Args:
        in_ch, out_ch: input and output channels (for stride 2 the residual branch gives
            ``out_ch - in_ch`` and the pooled shortcut the other ``in_ch``).
        stride: 1 (addition) or 2 (concatenation).
        groups: groups of the 1x1 convolutions.
        group_first: whether the first 1x1 convolution is grouped (not in the first unit of stage 2).
        se: an :class:`SEConfig`, or ``None``.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int = 1,
        *,
        groups: int = 3,
        group_first: bool = True,
        se: SEConfig | None = None,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"ShuffleUnit stride must be 1 or 2, got {stride}")
        if stride == 1 and in_ch != out_ch:
            raise ValueError(
                f"a stride-1 ShuffleUnit adds its input: in_ch={in_ch} must equal out_ch={out_ch}"
            )
        branch_ch = out_ch - in_ch if stride == 2 else out_ch
        mid = out_ch // 4
        if mid % groups or branch_ch % groups or (group_first and in_ch % groups):
            raise ValueError(f"ShuffleUnit({in_ch}, {out_ch}): channels must be divisible by groups={groups}")
        self.stride = stride
        self._add_se(se, in_ch, "pre")
        self.conv1 = ConvBNAct(in_ch, mid, 1, groups=groups if group_first else 1)
        self.shuffle = ChannelShuffle(groups) if groups > 1 else nn.Identity()
        self.conv2 = ConvBNAct(mid, mid, 3, stride, groups=mid, act=False)
        self._add_se(se, mid, "3x3")
        self.conv3 = ConvBNAct(mid, branch_ch, 1, groups=groups, act=False)
        self._add_se(se, branch_ch, "standard")
        self.shortcut = nn.AvgPool2d(3, 2, 1) if stride == 2 else nn.Identity()
        self._add_se(se, in_ch, "identity")
        self.relu = nn.ReLU(inplace=True)
        self._add_se(se, out_ch, "post")
        self._register_load_state_dict_pre_hook(_rename_se_keys)

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, self.shortcut(x)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.shuffle(self.conv1(x)))
        if self.se_mode == "3x3":
            out = self.se(out)
        return self.conv3(out)

    def merge(self, out: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        return self.relu(torch.cat((shortcut, out), 1) if self.stride == 2 else out + shortcut)


def _rename_se_keys(state_dict: dict, prefix: str, *args: object) -> None:
    """Checkpoints written before the unit's SE block was always ``se`` named it by its place
    (``se_pre``, ``se_3x3``, ``se_identity``, ``se_post``): read them under today's name."""
    for old in ("se_pre.", "se_3x3.", "se_identity.", "se_post."):
        for key in [k for k in state_dict if k.startswith(prefix + old)]:
            state_dict[prefix + "se." + key[len(prefix + old) :]] = state_dict.pop(key)


class ShuffleNet(ClassifierNet):
    """ShuffleNet v1 with optional SE blocks.

    Args:
        groups: groups of the 1x1 convolutions (1, 2, 3, 4 or 8; stage widths from ShuffleNet
            Table 1, scale 1x).
        depths: units in stages 2, 3, 4.
        se: an :class:`SEConfig`, or ``None`` for the plain network.
        num_classes, in_chans: classifier width and input channels.
        stem_width: channels of the first convolution (24).
    """

    def __init__(
        self,
        groups: int = 3,
        depths: Sequence[int] = STAGE_DEPTHS,
        *,
        se: SEConfig | None = None,
        num_classes: int = 1000,
        in_chans: int = 3,
        stem_width: int = 24,
    ) -> None:
        super().__init__(in_chans, num_classes, 32)
        if groups not in STAGE_WIDTHS:
            raise ValueError(f"ShuffleNet groups={groups} is not one of {tuple(STAGE_WIDTHS)}")
        if len(depths) != 3 or min(depths) < 1:
            raise ValueError(f"ShuffleNet has 3 stages of at least one unit, got depths={tuple(depths)}")
        if se is not None:
            se.check_supported("ShuffleNet", stages=(2, 3, 4))
        self.groups = groups
        self.stem = nn.Sequential(
            OrderedDict([("conv", ConvBNAct(in_chans, stem_width, 3, 2)), ("pool", nn.MaxPool2d(3, 2, 1))])
        )
        self.add_feature("stem", stem_width, 4, stage=1)
        ch = stem_width
        for stage, (out_ch, n) in enumerate(zip(STAGE_WIDTHS[groups], depths, strict=True), 2):
            stage_se = se and se.for_stage(stage)
            units: list[tuple[str, nn.Module]] = []
            for i in range(n):
                stride = 2 if i == 0 else 1
                group_first = not (stage == 2 and i == 0)
                unit = ShuffleUnit(ch, out_ch, stride, groups=groups, group_first=group_first, se=stage_se)
                units.append((f"unit{i + 1}", unit))
                ch = out_ch
            setattr(self, f"stage{stage}", nn.Sequential(OrderedDict(units)))
            self.add_feature(f"stage{stage}", ch, 2 ** (stage + 1), stage)
        self.add_head(ch, num_classes)
        init_weights(self)


# ShuffleNet v1, 1x, g=3 (Table 3).
register_network(("shufflenet", "se_shufflenet"), ShuffleNet, 3, STAGE_DEPTHS)
