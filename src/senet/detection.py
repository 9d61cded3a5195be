"""SE networks as detection backbones: torchvision's Faster R-CNN + FPN on our feature extractor.

The paper's Table 7 trains Faster R-CNN with SE-ResNet-50/101 trunks on COCO (AP 40.4 vs 38.0 for
ResNet-50). This module builds the same kind of detector from torchvision's detection models —
not a re-implementation — with any network of the registry that has stages of stride 4, 8, 16 and 32
(ResNet / ResNeXt, VGG, MobileNet, ShuffleNet, BN-Inception, ...) as the trunk. The pyramid stages are
read from the network's ``feature_info`` (:func:`pyramid_indices`), not assumed to be ResNet's
``layer1..layer4``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool

from .factory import create_model
from .features import FeatureExtractor

__all__ = ["PYRAMID_STRIDES", "BackboneWithFPN", "fasterrcnn_fpn", "pyramid_extractor", "pyramid_indices"]

PYRAMID_STRIDES = (4, 8, 16, 32)  # C2..C5 of the FPN paper (Lin et al., CVPR 2017)


def pyramid_indices(
    feature_info: Sequence[Mapping[str, Any]], strides: Sequence[int] = PYRAMID_STRIDES, name: str = "network"
) -> tuple[int, ...]:
    """The ``feature_info`` indices of the maps of each stride in ``strides``, shallow to deep.

    At each stride the deepest entry is taken (the output of the last stage working at that
    resolution: ResNet's ``layer1`` rather than its stem, both at stride 4, as torchvision's
    ``resnet_fpn_backbone`` does; VGG's ``stage3.conv3``; MobileNet's ``stage2``).
    """
    found = [e["reduction"] for e in feature_info]
    for s in strides:
        if s not in found:
            raise ValueError(
                f"{name} has feature maps at strides {sorted(set(found))}, none at stride {s}: a detection "
                f"pyramid needs strides {tuple(strides)}; use an ImageNet network (e.g. resnet50)"
            )
    return tuple(max(i for i, r in enumerate(found) if r == s) for s in strides)


def pyramid_extractor(
    name: str,
    *,
    weights: str | Path | Mapping[str, Any] | None = None,
    frozen_stages: int = -1,
    norm_eval: bool = False,
    strides: Sequence[int] = PYRAMID_STRIDES,
    **kwargs: Any,
) -> FeatureExtractor:
    """A :class:`FeatureExtractor` of the registered network ``name`` giving its stride-4..32 maps.

    ``kwargs`` go to :func:`~senet.factory.create_model` (SE knobs, ``in_chans``, ``layout``, ...);
    ``frozen_stages`` counts ``feature_info`` entries as ``create_model`` does.
    """
    if "out_indices" in kwargs or "features_only" in kwargs:
        raise ValueError(
            f"the pyramid of {name} takes its stages of stride {tuple(strides)} from feature_info: "
            "drop out_indices / features_only"
        )
    model = create_model(name, weights=weights, **kwargs)
    indices = pyramid_indices(model.feature_info, strides, name)
    return FeatureExtractor(model, indices, frozen_stages=frozen_stages, norm_eval=norm_eval)


class BackboneWithFPN(nn.Module):
    """A feature body followed by torchvision's FPN (plus, by default, the max-pooled P6 level).

    ``body`` is a :class:`FeatureExtractor` or any module mapping an image batch to a list of maps
    whose widths it lists in ``body.channels`` (e.g. the fused two-stream body of
    :mod:`senet.fusion.detector`); ``extra_blocks`` is torchvision's extra-level block
    (``LastLevelMaxPool`` for Faster R-CNN, ``LastLevelP6P7`` for RetinaNet). Returns the
    ``OrderedDict`` of pyramid levels torchvision's detectors expect and exposes ``out_channels``.
    """

    def __init__(
        self, body: nn.Module, out_channels: int = 256, extra_blocks: ExtraFPNBlock | None = None
    ) -> None:
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(
            list(body.channels), out_channels, extra_blocks=extra_blocks or LastLevelMaxPool()
        )
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(self.body(x))))


def fasterrcnn_fpn(
    backbone: str = "se_resnet50",
    num_classes: int = 91,
    *,
    weights_backbone: str | Path | dict | None = None,
    frozen_stages: int | None = None,
    norm_eval: bool | None = None,
    backbone_kwargs: dict[str, Any] | None = None,
    **detector_kwargs: Any,
) -> FasterRCNN:
    """torchvision's Faster R-CNN with an FPN on a registered backbone.

    The FPN takes the backbone's maps of stride 4, 8, 16 and 32 (:func:`pyramid_indices`), so the
    levels and torchvision's default anchors (32..512 on P2..P6) fit every family alike.

    Args:
        backbone: a registered name with stages of stride 4..32 (``se_resnet50``, ``resnet101``,
            ``se_resnext50_32x4d``, ``se_vgg16``, ``mobilenet``, ``shufflenet``, ...).
        num_classes: detector classes, background included (91 for COCO in torchvision).
        weights_backbone: ImageNet weights for the trunk (path, URL or state dict).
        frozen_stages, norm_eval: as in ``create_model``; by default, with backbone weights the stem
            and first stage are frozen and BN statistics fixed (the usual fine-tuning set-up,
            torchvision's ``trainable_layers=3``), without weights everything trains.
        backbone_kwargs: more ``create_model`` options (e.g. ``layout="torchvision"``).
        detector_kwargs: options of ``torchvision.models.detection.FasterRCNN`` (``min_size``, ...).
    """
    pretrained = weights_backbone is not None
    body = pyramid_extractor(
        backbone,
        weights=weights_backbone,
        frozen_stages=(1 if pretrained else -1) if frozen_stages is None else frozen_stages,
        norm_eval=pretrained if norm_eval is None else norm_eval,
        **(backbone_kwargs or {}),
    )
    prep = body.preprocessing
    if prep is not None:
        detector_kwargs.setdefault("image_mean", list(prep.mean))
        detector_kwargs.setdefault("image_std", list(prep.std))
    return FasterRCNN(BackboneWithFPN(body), num_classes=num_classes, **detector_kwargs)
