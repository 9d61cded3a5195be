"""MobileNet v1 (Howard et al. 2017, width 1.0), with and without SE (paper Table 3).

A 3x3/2 convolution (32 channels) and thirteen depthwise separable units, each a 3x3 depthwise
convolution and a 1x1 pointwise convolution, both followed by BN and ReLU (Howard et al., Table 1;
the 7x7 unit listed there as "s2" has stride 1, as in every implementation), then global average
pooling and the classifier ``fc``. No dropout: the paper trains it without ("less regularization").

SE placement: the paper says only "similar schemes" (Sec. 3.3). MobileNet v1 has no shortcut, so,
as for VGG (Sec. 3.3), SE follows the non-linearity of each unit: ``dw -> pw -> SE``, i.e. after
the pointwise convolution and its ReLU. It is the placement that reproduces Table 3: 0.49M SE
parameters (4.23M -> 4.72M; the paper: 4.2M -> 4.7M), whereas SE after each depthwise convolution
instead would add 0.35M (4.59M) and after both 0.84M (5.07M). The paper's +3 MFLOPs (569 -> 572)
is this placement's cost when the channel-wise scaling is counted too: 0.49M multiply-adds in the
excitation FCs plus 2.7M multiplications by the gates (``senet.analysis.profile`` counts only the
former, so it reports 569.2M).

Stages are numbered by output stride, as the ResNets' conv2_x .. conv5_x: stage k holds the units
whose output is at stride 2^k (1: the 64-channel unit at 112x112; 2: 128 ch; 3: 256 ch;
4: the six 512-channel units; 5: 1024 ch). SE options: ``integration="standard"`` and
``position="after_block"`` only (there is no residual branch to put SE before or around).

``feature_info`` (``features_only=True``): the stem (stride 2, stage 0) and the outputs of stages
1 .. 5 at strides 2, 4, 8, 16, 32 (as timm's ``mobilenetv1_100``: the last unit before each
stride-2 unit, and the last unit).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from ..se import SEConfig
from .common import ClassifierNet, ConvBNAct, init_weights
from .registry import register_network

__all__ = ["DepthwiseSeparable", "MobileNet"]

# Pointwise output channels of the depthwise separable units, one tuple per stage (stage 1..5).
# The first unit of every stage but the first has stride 2.
MOBILENET_V1_STAGES: tuple[tuple[int, ...], ...] = ((64,), (128, 128), (256, 256), (512,) * 6, (1024, 1024))


class DepthwiseSeparable(nn.Module):
    """3x3 depthwise conv-BN-ReLU, 1x1 pointwise conv-BN-ReLU, then SE if given."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, *, se: SEConfig | None = None) -> None:
        super().__init__()
        self.dw = ConvBNAct(in_ch, in_ch, 3, stride, groups=in_ch)
        self.pw = ConvBNAct(in_ch, out_ch, 1)
        self.se = se.block(out_ch) if se is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pw(self.dw(x))
        return x if self.se is None else self.se(x)


class MobileNet(ClassifierNet):
    """MobileNet v1 with optional SE blocks.

    Args:
        stages: pointwise output channels of the units of each stage.
        se: an :class:`SEConfig`, or ``None`` for the plain network.
        num_classes, in_chans: classifier width and input channels.
        stem_width: channels of the first (full) convolution (32).
    """

    def __init__(
        self,
        stages: Sequence[Sequence[int]] = MOBILENET_V1_STAGES,
        *,
        se: SEConfig | None = None,
        num_classes: int = 1000,
        in_chans: int = 3,
        stem_width: int = 32,
    ) -> None:
        super().__init__(in_chans, num_classes, 2 ** len(stages))
        stage_ids = range(1, len(stages) + 1)
        if se is not None:
            se.check_supported(
                "MobileNet", stages=stage_ids, integration=("standard",), position=("after_block",)
            )
        self.stem = ConvBNAct(in_chans, stem_width, 3, 2)
        self.add_feature("stem", stem_width, 2, stage=0)
        ch = stem_width
        for stage, widths in zip(stage_ids, stages, strict=True):
            stage_se = se and se.for_stage(stage)
            units: list[tuple[str, nn.Module]] = []
            for i, out_ch in enumerate(widths):
                stride = 2 if i == 0 and stage > 1 else 1
                units.append((f"unit{i + 1}", DepthwiseSeparable(ch, out_ch, stride, se=stage_se)))
                ch = out_ch
            setattr(self, f"stage{stage}", nn.Sequential(OrderedDict(units)))
            self.add_feature(f"stage{stage}", ch, 2**stage, stage)
        self.add_head(ch, num_classes)
        init_weights(self)


# MobileNet v1, width 1.0 (Table 3).
register_network(("mobilenet", "se_mobilenet"), MobileNet, MOBILENET_V1_STAGES)
