"""``insert_se``: add SE blocks to an existing torchvision network, in place, where the paper puts them.

Supported networks and positions:

* torchvision ``resnet*``, ``resnext*``, ``wide_resnet*`` (``BasicBlock`` and ``Bottleneck``): SE on
  the residual branch after its last batch norm, before the summation with the identity (Fig. 3).
  Stages are numbered as in the paper: ``layer1`` .. ``layer4`` = conv2_x .. conv5_x = 2 .. 5.
* torchvision ``vgg*_bn`` (and ``vgg*``): SE after the ReLU that follows each convolution
  (Sec. 3.3, "VGG-like plain networks"). Stages are the five blocks between max-pools, 1 .. 5.

The block's own ``forward`` is not touched and no hooks are used: the module that the SE block must
follow (the block's ``bn3`` / ``bn2``, or the VGG ReLU) is replaced by a small container that calls
it and then the SE block (:class:`BNThenSE`, :class:`ActThenSE`). The SE blocks are therefore
ordinary registered submodules: they appear in ``model.modules()``, are saved in ``state_dict()``,
follow ``.to()``, and survive ``copy.deepcopy``, ``pickle`` and ``torch.compile``.

State-dict keys after insertion (ResNet-50 shown; ``bn2`` for a BasicBlock)::

    layer1.0.bn3.weight        -> layer1.0.bn3.bn.weight  (likewise bias, running_mean, running_var,
                                                           num_batches_tracked)
    (new)                         layer1.0.bn3.se.fc1.weight, .fc1.bias, .fc2.weight, .fc2.bias
    VGG: features.2 (a ReLU, no state)  ->  features.2.se.fc1.weight, ... (conv/BN keys unchanged)

A checkpoint of the network *without* SE (e.g. torchvision's pretrained weights) still loads: the
old ``bn3.weight``-style keys are renamed on load, so ``model.load_state_dict(plain, strict=False)``
reports exactly the SE parameters as missing. Loading the pretrained weights first and calling
``insert_se(model, init="identity")`` afterwards gives the same network.

``init="identity"`` makes each new block the exact identity (zero ``fc2``, gate ``2*sigmoid``), so a
trained network keeps its outputs until fine-tuning moves them; the default initialises the SE
convolutions He-normal like every senet network (:func:`senet.models.common.init_weights`).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

from .models.common import init_weights
from .se import SEBlock, SEConfig

__all__ = ["ActThenSE", "BNThenSE", "insert_se"]

M = TypeVar("M", bound=nn.Module)

SUPPORTED = (
    "torchvision ResNet blocks (resnet*, resnext*, wide_resnet*: BasicBlock, Bottleneck) "
    "and torchvision VGG features (vgg*_bn, vgg*)"
)

_RESNET_STAGE = re.compile(r"(?:^|\.)layer([1-4])\.")


class BNThenSE(nn.Module):
    """The last normalisation of a residual branch followed by SE: ``se(bn(x))`` (Fig. 3).

    It takes the place of ``bn3`` in a torchvision Bottleneck (``bn2`` in a BasicBlock), so the
    block's unchanged ``forward`` recalibrates the residual branch before adding the identity.
    State dicts written before the insertion load too: ``<prefix>weight`` is read as
    ``<prefix>bn.weight`` when the new key is absent.
    """

    def __init__(self, bn: nn.Module, se: SEBlock) -> None:
        super().__init__()
        self.bn = bn
        self.se = se

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(self.bn(x))

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # ``load_state_dict`` hands every module its own copy of the dict, so renaming here leaves
        # the caller's checkpoint untouched.
        for key in [k for k in state_dict if k.startswith(prefix)]:
            rest = key[len(prefix) :]
            if rest.split(".", 1)[0] not in ("bn", "se") and prefix + "bn." + rest not in state_dict:
                state_dict[prefix + "bn." + rest] = state_dict.pop(key)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


class ActThenSE(nn.Module):
    """A non-linearity followed by SE: ``se(act(x))`` (plain networks, Sec. 3.3)."""

    def __init__(self, act: nn.Module, se: SEBlock) -> None:
        super().__init__()
        self.act = act
        self.se = se

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(self.act(x))


@dataclass
class _Site:
    """One place that gets an SE block: ``parent.<name>`` is wrapped, ``channels`` wide."""

    parent: nn.Module
    name: str
    channels: int
    stage: int
    like: torch.Tensor
    wrapper: type[BNThenSE] | type[ActThenSE]


def _resnet_sites(model: nn.Module) -> list[_Site]:
    from torchvision.models.resnet import BasicBlock, Bottleneck

    sites = []
    for qualname, m in model.named_modules():
        if isinstance(m, (BasicBlock, Bottleneck)):
            conv, name = (m.conv3, "bn3") if isinstance(m, Bottleneck) else (m.conv2, "bn2")
            match = _RESNET_STAGE.search(qualname + ".")
            stage = int(match.group(1)) + 1 if match else 0
            sites.append(_Site(m, name, conv.out_channels, stage, conv.weight, BNThenSE))
    return sites


def _vgg_sites(model: nn.Module) -> list[_Site]:
    from torchvision.models.vgg import VGG

    sites = []
    for vgg in (m for m in model.modules() if isinstance(m, VGG)):
        stage, conv = 1, None
        for name, layer in vgg.features.named_children():
            if isinstance(layer, nn.MaxPool2d):
                stage, conv = stage + 1, None
            elif isinstance(layer, nn.Conv2d):
                conv = layer
            elif isinstance(layer, nn.ReLU) and conv is not None:
                sites.append(_Site(vgg.features, name, conv.out_channels, stage, conv.weight, ActThenSE))
                conv = None
            elif not isinstance(layer, nn.BatchNorm2d):
                conv = None
    return sites


def _se_config(reduction: int, se_options: dict[str, Any]) -> SEConfig:
    fields = SEConfig.fields()
    for key in se_options:
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"insert_se got an unknown SE option {key!r}{hint}; options: {', '.join(fields)}"
            )
    return SEConfig(reduction=reduction, **se_options)


def insert_se(model: M, reduction: int = 16, **se_options: Any) -> M:
    """Add SE blocks to ``model`` in place, at the paper's position, and return it.

    Args:
        model: a torchvision ResNet / ResNeXt / Wide ResNet or VGG (possibly inside a larger module),
            without SE blocks.
        reduction: ratio r; each block has ``C // r`` hidden units (paper default 16).
        **se_options: block options of :class:`~senet.se.SEConfig` (``squeeze``, ``excitation``,
            ``bias``, ``divisor``, ``init``) and ``stages`` (which stages get SE; see the module
            docstring for the numbering). ``init="identity"`` keeps the outputs of a trained model.

    The new blocks take the device and dtype of the layer they follow and its train/eval mode.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(
            "insert_se takes an nn.Module such as torchvision.models.resnet50(), "
            f"got {type(model).__name__}; for senet's own networks use senet.create_model('se_...')"
        )
    cfg = _se_config(reduction, se_options)
    present = sum(isinstance(m, SEBlock) for m in model.modules())
    if present:
        raise ValueError(
            f"{type(model).__name__} already has {present} SE blocks (was insert_se applied before?); "
            "insert_se adds SE to a network without it"
        )
    sites = _resnet_sites(model) + _vgg_sites(model)
    if not sites:
        raise ValueError(
            f"insert_se found no block it supports in {type(model).__name__}; it supports {SUPPORTED} "
            "(senet's own networks come with SE from senet.create_model('se_...'))"
        )
    stages = {s.stage for s in sites}
    if cfg.stages is not None and 0 in stages:
        raise ValueError(
            f"insert_se cannot number the stages of {type(model).__name__} (ResNet blocks outside "
            "layer1..layer4); leave stages=None to add SE to every block"
        )
    cfg.check_supported(
        f"insert_se on {type(model).__name__}", stages, integration=("standard",), position=("after_block",)
    )
    for site in sites:
        if not cfg.in_stage(site.stage):
            continue
        old = getattr(site.parent, site.name)
        se = cfg.block(site.channels)
        init_weights(se)
        dtype = site.like.dtype if site.like.is_floating_point() else None
        se.to(device=site.like.device, dtype=dtype)
        new = site.wrapper(old, se)
        new.train(old.training)
        setattr(site.parent, site.name, new)
    return model
