"""Small pieces every family shares: the network base class with its classifier head, input checks,
weight initialisation, conv-BN-ReLU units, SE residual units."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import TypedDict

import torch
from torch import nn

from ..se import SEConfig

__all__ = ["ClassifierNet", "ConvBNAct", "FeatureInfo", "SEResidualUnit", "check_input", "init_weights"]


class FeatureInfo(TypedDict):
    """One feature map a network declares (:mod:`senet.features`), timm's ``feature_info`` entry plus
    the family's stage number.

    ``module``: path of the module whose output it is (a child of the network, or a dotted path
    through ``nn.Sequential`` children); ``num_chs``: its channels; ``reduction``: its stride with
    respect to the input; ``stage``: the family's ``SEConfig.stages`` number of the stage it ends.
    """

    module: str
    num_chs: int
    reduction: int
    stage: int


class ClassifierNet(nn.Module):
    """A network of the zoo: a backbone (``forward_features``) and one head for all -- global
    pooling, ``pre_logits`` (dropout, VGG's fc6/fc7, or identity), ``fc``.

    Subclasses register the backbone's modules in the order they run, then ``global_pool``,
    ``pre_logits`` and ``fc``: ``forward_features`` runs the children before ``global_pool``. The split
    follows timm, so ``forward_features`` is the backbone output for detection and analysis.

    ``feature_info`` lists the stage outputs, shallow to deep, declared with :meth:`add_feature`;
    entry 0 is the stem (or first stage). ``create_model(name, features_only=True)`` builds on it.
    """

    def __init__(self, in_chans: int, num_classes: int, min_input_size: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate={drop_rate} must be in [0, 1)")
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.min_input_size = min_input_size
        self.feature_info: list[FeatureInfo] = []

    def add_feature(self, module: str, num_chs: int, reduction: int, stage: int) -> None:
        """Append the output of ``module`` to ``feature_info`` (call in execution order)."""
        self.feature_info.append(
            FeatureInfo(module=module, num_chs=num_chs, reduction=reduction, stage=stage)
        )

    def add_head(self, num_features: int, num_classes: int, drop_rate: float = 0.0) -> None:
        """The classifier every family ends with: global average pooling, dropout when ``drop_rate``
        is set (SENet-154, Inception-ResNet-v2, Sec. 6.1) and a linear layer, registered in the
        order they run. ``num_features`` (the channels of ``forward_features``) is then also
        ``head_hidden_size``, the width ``fc`` reads (as in timm; VGG's differ: 512 and 4096)."""
        self.num_features = self.head_hidden_size = num_features
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.pre_logits = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc = nn.Linear(num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map: the checked input through the children registered before ``global_pool``."""
        check_input(x, self.in_chans, self.min_input_size, type(self).__name__)
        for name, module in self.named_children():
            if name == "global_pool":
                break
            x = module(x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pre_logits(torch.flatten(self.global_pool(x), 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def check_input(x: torch.Tensor, in_chans: int, min_size: int, name: str) -> None:
    """Refuse a batch that is not (N, in_chans, H, W) with H, W >= min_size, naming the fix.

    Without this, a wrong input fails deep inside a convolution or pooling layer with a message
    about some intermediate tensor.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{name} expects a torch.Tensor, got {type(x).__module__}.{type(x).__name__}"
            + (": convert with torch.from_numpy(x)" if type(x).__module__ == "numpy" else "")
        )
    if not x.is_floating_point():
        raise TypeError(
            f"{name} expects floating-point images normalised as model.preprocessing says, got {x.dtype}: "
            "use senet.predict for image files, or scale and normalise (x.float() / 255 - mean) / std"
        )
    if x.dim() != 4 or x.shape[1] != in_chans or x.shape[2] < min_size or x.shape[3] < min_size:
        raise ValueError(
            f"{name} expects a batch of images of shape (N, {in_chans}, H, W) with H, W >= {min_size}, "
            f"got a tensor of shape {tuple(x.shape)}"
            + (" (add a batch dimension with x.unsqueeze(0))" if x.dim() == 3 else "")
        )


def init_weights(model: nn.Module, zero_init_residual: bool = False) -> None:
    """He-normal convolutions (fan-out, as in the paper's Caffe models), BN gamma 1 / beta 0.

    SE blocks are initialised last, on their own random stream (:func:`senet.se.se_random_stream`),
    so the other layers of an SE network get the same weights as its plain twin's for the same seed.
    Modules that set up their own initial values (an identity-initialised SE block, marked by a
    ``ScaledSigmoid`` gate whose ``fc2`` is zero) are left as they are. ``zero_init_residual`` then
    calls ``zero_init_last_bn()`` of every residual unit that has one.
    """
    from ..se import ScaledSigmoid, SEBlock, se_random_stream

    se_blocks = [m for m in model.modules() if isinstance(m, SEBlock)]
    in_se = {id(m) for b in se_blocks for m in b.modules()}
    _init_modules(m for m in model.modules() if id(m) not in in_se)
    with se_random_stream():
        for b in se_blocks:
            keep_fc2 = isinstance(b.gate, ScaledSigmoid) and not b.fc2.weight.any()
            _init_modules(m for m in b.modules() if not (keep_fc2 and m is b.fc2))
    if zero_init_residual:
        units = [m for m in model.modules() if hasattr(m, "zero_init_last_bn")]
        if not units:
            raise ValueError(f"zero_init_residual: {type(model).__name__} has no residual unit to zero")
        for m in units:
            m.zero_init_last_bn()


def _init_modules(modules: Iterable[nn.Module]) -> None:
    for m in modules:
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ConvBNAct(nn.Sequential):
    """Convolution (no bias), batch norm, optional ReLU: keys ``conv``, ``bn``."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int | tuple[int, int] = 3,
        stride: int = 1,
        padding: int | tuple[int, int] | None = None,
        groups: int = 1,
        act: bool = True,
        eps: float = 1e-5,
    ) -> None:
        if padding is None:
            k = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
            padding = (k[0] // 2, k[1] // 2)
        layers: list[tuple[str, nn.Module]] = [
            ("conv", nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding, groups=groups, bias=False)),
            ("bn", nn.BatchNorm2d(out_ch, eps=eps)),
        ]
        if act:
            layers.append(("act", nn.ReLU(inplace=True)))
        super().__init__(OrderedDict(layers))


class SEResidualUnit(nn.Module):
    """Where SE sits relative to the summation of a residual unit (Fig. 5), for every family.

    Subclasses build their layers and define ``split(x) -> (branch input, shortcut)``,
    ``residual(branch input)`` (SE_3x3 is applied inside it) and, when the sum is followed by a
    non-linearity, ``merge``. "standard" recalibrates the residual branch before the summation,
    "pre" the input of the residual branch, "post" the merged output, "identity" the shortcut.
    """

    def _add_se(self, se: SEConfig | None, channels: int, *modes: str) -> None:
        """Register ``self.se`` if this unit's SE mode is one of ``modes`` (call order = execution order)."""
        self.se_mode = "none" if se is None else (se.integration if se.position == "after_block" else "3x3")
        if se is not None and self.se_mode in modes:
            self.se = se.block(channels)
        elif not hasattr(self, "se"):
            self.se = None

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def merge(self, out: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        return out + shortcut

    # Whether ``merge`` is ``relu(out + shortcut)``: then "standard" SE and the merge run as one
    # operation (SEBlock.scale_add_relu).
    merge_is_add_relu = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch, shortcut = self.split(x)
        if self.se_mode == "pre":
            branch = self.se(branch)
        out = self.residual(branch)
        # The unit owns its branch and merge outputs and may scale them in place, unless a forward
        # hook (on any module of the unit, or global) has been handed them: it would see them change.
        owned = self.se_mode in ("standard", "post") and not self._hooked()
        if self.se_mode == "standard" and self.merge_is_add_relu:
            return self.se.scale_add_relu(out, shortcut, inplace=owned)
        if self.se_mode == "standard":
            out = self.se(out, inplace=owned)
        elif self.se_mode == "identity":
            shortcut = self.se(shortcut)
        out = self.merge(out, shortcut)
        if self.se_mode == "post":
            out = self.se(out, inplace=owned)
        return out

    def _hooked(self) -> bool:
        return bool(nn.modules.module._global_forward_hooks) or any(m._forward_hooks for m in self.modules())
