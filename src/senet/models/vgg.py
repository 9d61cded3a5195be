"""VGG-16 with batch normalisation, with and without SE (paper Table 2, Sec. 3.3).

The paper trains VGG-16 and SE-VGG-16 "with batch normalisation after each convolution" (Table 2)
and, in a plain (non-residual) network, puts the SE block "after the non-linearity following each
convolution" (Sec. 3.3): every unit here is ``conv -> BN -> ReLU -> SE``, thirteen SE blocks in all.

Layer shapes are those of torchvision's ``vgg16_bn`` (and of Simonyan & Zisserman's VGG-16 with BN
added), so its weights map one-to-one onto the plain network:

* 3x3 convolutions keep their bias (as in torchvision, although BN makes it redundant);
* an adaptive 7x7 average pool before the classifier, so any input of at least 32x32 works (at
  224x224 it is the identity, as in the original network);
* the classifier of the original VGG: 4096 -> 4096 -> ``num_classes`` fully connected layers,
  ReLU and dropout 0.5 after each of the first two (``pre_logits``); the last layer is ``fc``.

Stages are numbered as VGG's convolution blocks conv1_x .. conv5_x = 1..5 (each ends with a 2x2
max-pool). SE options: ``integration`` is ``"standard"`` only (there is no shortcut to put SE on,
before or after) and ``position`` is ``"after_block"`` only (every convolution is already a 3x3 one).

``feature_info`` (``features_only=True``) follows timm's VGG: the output of each stage's last unit,
*before* its max-pool (``stage1.conv2`` .. ``stage5.conv3`` at strides 1, 2, 4, 8, 16), then the
output of the last stage after its max-pool (``stage5``, stride 32, the ``forward_features`` map).
Entry 0 (stride 1) is left out by default, as the other families' stems; ask for it with
``out_indices=(0, ...)``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from ..se import SEConfig
from .common import ClassifierNet, init_weights
from .registry import register_network

__all__ = ["VGG", "VGGUnit"]

# Output channels of each 3x3 convolution, one tuple per stage (conv1_x .. conv5_x).
VGG16_STAGES: tuple[tuple[int, ...], ...] = ((64, 64), (128, 128), (256,) * 3, (512,) * 3, (512,) * 3)


class VGGUnit(nn.Sequential):
    """3x3 convolution (with bias, as torchvision's ``vgg16_bn``), BN, ReLU, then SE if given (Sec. 3.3)."""

    def __init__(self, in_ch: int, out_ch: int, se: SEConfig | None = None) -> None:
        layers: list[tuple[str, nn.Module]] = [
            ("conv", nn.Conv2d(in_ch, out_ch, 3, padding=1)),
            ("bn", nn.BatchNorm2d(out_ch)),
            ("act", nn.ReLU(inplace=True)),
        ]
        if se is not None:
            layers.append(("se", se.block(out_ch)))
        super().__init__(OrderedDict(layers))


class VGG(ClassifierNet):
    """VGG with batch normalisation and optional SE blocks.

    Args:
        stages: output channels of the 3x3 convolutions of each stage (each stage ends with a
            2x2 max-pool).
        se: an :class:`SEConfig`, or ``None`` for the plain network.
        num_classes, in_chans: classifier width and input channels.
        hidden: width of the two hidden fully connected layers (4096).
        drop_rate: dropout after each hidden fully connected layer (0.5, as in the original VGG).
    """

    def __init__(
        self,
        stages: Sequence[Sequence[int]] = VGG16_STAGES,
        *,
        se: SEConfig | None = None,
        num_classes: int = 1000,
        in_chans: int = 3,
        hidden: int = 4096,
        drop_rate: float = 0.5,
    ) -> None:
        super().__init__(in_chans, num_classes, 2 ** len(stages), drop_rate)
        stage_ids = range(1, len(stages) + 1)
        if se is not None:
            se.check_supported("VGG", stages=stage_ids, integration=("standard",), position=("after_block",))
        ch = in_chans
        for stage, widths in zip(stage_ids, stages, strict=True):
            stage_se = se and se.for_stage(stage)
            layers: list[tuple[str, nn.Module]] = []
            for i, out_ch in enumerate(widths, 1):
                layers.append((f"conv{i}", VGGUnit(ch, out_ch, stage_se)))
                ch = out_ch
            layers.append(("pool", nn.MaxPool2d(2, 2)))
            setattr(self, f"stage{stage}", nn.Sequential(OrderedDict(layers)))
            self.add_feature(f"stage{stage}.conv{len(widths)}", ch, 2 ** (stage - 1), stage)
        self.add_feature(f"stage{len(stages)}", ch, 2 ** len(stages), len(stages))
        self.num_features = ch  # the channels of forward_features; the classifier reads fc7's
        self.head_hidden_size = hidden  # (timm's names): replace `fc` with nn.Linear(head_hidden_size, n)
        self.global_pool = nn.AdaptiveAvgPool2d(7)
        self.pre_logits = nn.Sequential(
            OrderedDict(
                [
                    ("fc6", nn.Linear(ch * 7 * 7, hidden)),
                    ("act6", nn.ReLU(inplace=True)),
                    ("drop6", nn.Dropout(drop_rate)),
                    ("fc7", nn.Linear(hidden, hidden)),
                    ("act7", nn.ReLU(inplace=True)),
                    ("drop7", nn.Dropout(drop_rate)),
                ]
            )
        )
        self.fc = nn.Linear(hidden, num_classes)
        init_weights(self)


register_network(("vgg16", "se_vgg16"), VGG, VGG16_STAGES)
