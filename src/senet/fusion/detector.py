"""The two-stream RGB + event detector: torchvision's RetinaNet / Faster R-CNN on fused feature maps.

The "SENet" fusion rows of CAFR / FRN (Cao et al., ECCV 2024, arXiv 2407.12582; official code
HuCaoFighting/FRN, ``retinanet/model.py``): one backbone per modality (ResNet-50 in FRN, the event
stream's stem taking the 5-bin voxel grid), the two streams fused at each of the stages of stride 4,
8, 16 and 32 (C2..C5), an FPN on the fused maps and a detection head. Nothing of the detector is
re-implemented: the streams are :class:`~senet.features.FeatureExtractor` s of the registry, the
pyramid is torchvision's FPN (:class:`senet.detection.BackboneWithFPN`), the heads, anchors, losses
and post-processing are torchvision's ``RetinaNet`` / ``FasterRCNN``.

torchvision's detectors take one image tensor per sample (``GeneralizedRCNNTransform`` normalises,
resizes and batches it), so the modalities travel as ONE tensor ``[3 + C, H, W]``: RGB channels first,
then the C event channels (only the modalities present), split again in the backbone. Normalisation
uses ImageNet's mean / std for the RGB channels and 0 / 1 for the event channels (FRN normalises the
frames only, ``retinanet/dataloader.py: Normalizer``).

Labels at this module's API are 0-based class indices ``0..num_classes-1`` for both heads (targets in,
predictions out); :class:`Detector` hides Faster R-CNN's reserved background label 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool, LastLevelP6P7

from ..detection import BackboneWithFPN, pyramid_extractor
from .events import MODALITIES, check_modalities
from .modules import FUSIONS, _unknown_choice, make_fusion

__all__ = [
    "HEADS",
    "MODALITIES",
    "Detector",
    "TwoStreamBackbone",
    "TwoStreamBody",
    "create_detector",
    "retinanet_anchors",
]

HEADS = ("retinanet", "fasterrcnn")
RGB_CHANNELS = 3
EXTRA_BLOCKS = ("p6p7", "maxpool")


def _whole(key: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{key}={value!r} must be a whole number >= 1")
    return value


def _probability(p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"rgb_blank_prob={p!r} must be a probability in [0, 1]")
    return float(p)


class TwoStreamBody(nn.Module):
    """The streams and their fusions: ``[N, 3 + C, H, W]`` -> the fused maps of strides 4, 8, 16, 32.

    ``streams`` holds one :class:`~senet.features.FeatureExtractor` per modality (``"rgb"``,
    ``"events"``), ``fusions`` one fusion module per pyramid stage (empty with one modality: that
    stream's maps are the output). See :class:`TwoStreamBackbone` for the arguments.
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        *,
        modalities: str | Sequence[str] = MODALITIES,
        event_channels: int = 5,
        fusion: str = "se",
        fusion_kwargs: Mapping[str, Any] | None = None,
        weights_backbone: str | Path | Mapping[str, Any] | None = None,
        backbone_kwargs: Mapping[str, Any] | None = None,
        rgb_blank_prob: float = 0.0,
    ) -> None:
        super().__init__()
        self.modalities = check_modalities(modalities)
        self.event_channels = _whole("event_channels", event_channels)
        if fusion not in FUSIONS:
            raise _unknown_choice("fusion", fusion, FUSIONS)
        self.rgb_blank_prob = _probability(rgb_blank_prob)
        if weights_backbone is not None and "rgb" not in self.modalities:
            raise ValueError(
                "weights_backbone initialises the RGB stream (FRN loads ImageNet weights into it only); "
                "an events-only detector has none: drop weights_backbone"
            )
        kwargs = dict(backbone_kwargs or {})
        if "in_chans" in kwargs:
            raise ValueError("in_chans is set per stream (3 for RGB, event_channels for events): drop it")
        self.in_chans = {"rgb": RGB_CHANNELS, "events": self.event_channels}
        weights = {"rgb": weights_backbone, "events": None}
        self.streams = nn.ModuleDict(
            {
                m: pyramid_extractor(backbone, weights=weights[m], in_chans=self.in_chans[m], **kwargs)
                for m in self.modalities
            }
        )
        # with both streams the first is RGB's: the FPN sees a single-stream network's widths
        first = self.streams[self.modalities[0]]
        self.strides, self.channels = list(first.strides), list(first.channels)
        self.fusions = nn.ModuleList()  # one per stage, with both streams
        if len(self.streams) > 1:
            for cr, ce in zip(first.channels, self.streams["events"].channels, strict=True):
                self.fusions.append(make_fusion(fusion, cr, ce, cr, **(fusion_kwargs or {})))

    def split(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The per-modality parts of ``x`` [N, 3 + C, H, W] (RGB channels first)."""
        widths = [self.in_chans[m] for m in self.modalities]
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != sum(widths):
            shape = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            layout = " + ".join(f"{w} {m}" for m, w in zip(self.modalities, widths, strict=True))
            raise ValueError(
                f"the two-stream backbone takes (N, {sum(widths)}, H, W) inputs ({layout} channels, in this "
                f"order), got {shape}"
            )
        return dict(zip(self.modalities, torch.split(x, widths, 1), strict=True))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        parts = self.split(x)
        if self.training and self.rgb_blank_prob > 0 and "rgb" in parts:
            # FRN zeroes the normalised RGB input with probability 0.15 per training step
            # (ResNet_fpn_fusion.forward, batch 1); here each sample is drawn on its own.
            rgb = parts["rgb"]
            keep = torch.rand(rgb.shape[0], 1, 1, 1, device=rgb.device) >= self.rgb_blank_prob
            parts["rgb"] = rgb * keep.to(rgb.dtype)
        feats = {m: self.streams[m](parts[m]) for m in self.modalities}
        if not len(self.fusions):
            return feats[self.modalities[0]]
        return [fuse(r, e) for fuse, r, e in zip(self.fusions, feats["rgb"], feats["events"], strict=True)]


class TwoStreamBackbone(BackboneWithFPN):
    """Two streams of a registered network, fused per stage, then torchvision's FPN.

    Args (all but ``out_channels`` and ``extra_blocks`` build the :class:`TwoStreamBody`):
        backbone: a registered name with stages of stride 4, 8, 16, 32 (``resnet50`` in FRN,
            ``se_resnet50``, ``mobilenet``, ``se_vgg16``, ...); both streams use it.
        modalities: ``("rgb", "events")``, ``("rgb",)`` or ``("events",)``; with one there is no fusion.
        event_channels: input channels of the event stream (FRN: a 5-bin voxel grid).
        fusion: ``"add"``, ``"concat"`` or ``"se"`` (:mod:`senet.fusion.modules`); each outputs the
            RGB stage's width, so the FPN sees the widths of a single-stream network.
        fusion_kwargs: SE options of the ``"se"`` fusion (``reduction``, ``init``, ...).
        out_channels: FPN width (256, as FRN and torchvision).
        weights_backbone: ImageNet weights for the RGB stream (the event stream starts at random).
        backbone_kwargs: ``create_model`` options for both streams (SE knobs, ``layout``,
            ``frozen_stages``, ``norm_eval``). FRN freezes every BN of both streams
            (``ResNet_fpn_fusion.freeze_bn``, batch 1): ``{"norm_eval": True}``, the recipe's default.
        extra_blocks: ``"p6p7"`` for RetinaNet: P6 by a stride-2 3x3 convolution of the (fused) C5,
            as the RetinaNet paper, FRN (``PyramidFeatures.P6``) and torchvision's
            ``retinanet_resnet50_fpn_v2`` (its v1 reads P5 instead), and P7 from P6 as torchvision
            does (FRN's pyramid stops at P6: P2..P6). ``"maxpool"`` for Faster R-CNN: P6 max-pooled
            from P5 (torchvision's ``LastLevelMaxPool``).
        rgb_blank_prob: in training, the probability of zeroing a sample's (normalised) RGB input
            (FRN: 0.15), so the detector learns to work from events alone.

    Input: ONE tensor ``[N, 3 + C, H, W]`` (RGB channels first, then the event channels; only the
    modalities present). Output: torchvision's ``OrderedDict`` of pyramid levels.
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        *,
        out_channels: int = 256,
        extra_blocks: str = "p6p7",
        **body_kwargs: Any,
    ) -> None:
        if extra_blocks not in EXTRA_BLOCKS:
            raise ValueError(f"extra_blocks={extra_blocks!r} is not one of {EXTRA_BLOCKS}")
        body = TwoStreamBody(backbone, **body_kwargs)
        out_channels = _whole("out_channels", out_channels)
        if extra_blocks == "p6p7":
            extra: ExtraFPNBlock = LastLevelP6P7(body.channels[-1], out_channels)
            extra_strides = [2 * body.strides[-1], 4 * body.strides[-1]]
        else:
            extra = LastLevelMaxPool()
            extra_strides = [2 * body.strides[-1]]
        super().__init__(body, out_channels, extra)
        self.level_strides = [*body.strides, *extra_strides]

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.body.modalities

    @property
    def event_channels(self) -> int:
        return self.body.event_channels

    @property
    def in_chans(self) -> int:
        """Channels of the one input tensor."""
        return sum(self.body.in_chans[m] for m in self.body.modalities)

    @property
    def rgb_blank_prob(self) -> float:
        return self.body.rgb_blank_prob

    @rgb_blank_prob.setter
    def rgb_blank_prob(self, p: float) -> None:
        self.body.rgb_blank_prob = _probability(p)


def retinanet_anchors(level_strides: Sequence[int]) -> AnchorGenerator:
    """RetinaNet's anchors for pyramid levels of the given strides: base size 4 x stride, scales
    2^0, 2^(1/3), 2^(2/3), aspect ratios 1:2, 1:1, 2:1 (the RetinaNet paper; FRN's ``anchors.py``
    uses ``2 ** (level + 2)``; torchvision's ``_default_anchorgen`` the same sizes, truncated to
    integers, for P3..P7)."""
    sizes = tuple((4 * s, int(4 * s * 2 ** (1 / 3)), int(4 * s * 2 ** (2 / 3))) for s in level_strides)
    return AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))


def _normalisation(bb: TwoStreamBackbone) -> tuple[list[float], list[float]]:
    """Mean / std per input channel: the RGB stream's weights' preprocessing (ImageNet's by default)
    for images in [0, 1], then 0 / 1 for the event channels (FRN normalises frames only)."""
    mean: list[float] = []
    std: list[float] = []
    if "rgb" in bb.modalities:
        prep = bb.body.streams["rgb"].preprocessing
        if prep.order != "RGB":
            raise ValueError(
                f"the RGB stream's weights expect {prep.order} input; the detector feeds RGB: load weights "
                "converted to RGB, or give image_mean / image_std for the channels as fed"
            )
        mean += [v / prep.value_range for v in prep.mean]
        std += [v / prep.value_range for v in prep.std]
    if "events" in bb.modalities:
        mean += [0.0] * bb.event_channels
        std += [1.0] * bb.event_channels
    return mean, std


class Detector(nn.Module):
    """A torchvision detector on a :class:`TwoStreamBackbone`, taking per-sample modality dicts.

    ``forward(inputs, targets=None)``: ``inputs`` is a list of dicts ``{"rgb": [3, H, W], "events":
    [C, H, W]}`` (float; RGB in [0, 1], the model normalises; keys of absent modalities are ignored),
    ``targets`` a list of dicts ``{"boxes": [K, 4] (x1, y1, x2, y2 pixels), "labels": [K] in
    0..num_classes-1}``. Returns torchvision's loss dict in training and a list of ``{"boxes",
    "scores", "labels"}`` (labels 0-based) in eval. ``create_kwargs`` rebuilds the detector:
    ``create_detector(**det.create_kwargs)``.
    """

    def __init__(
        self,
        model: RetinaNet | FasterRCNN,
        *,
        num_classes: int,
        label_offset: int,
        class_names: Sequence[str] | None = None,
        create_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.num_classes = num_classes
        self.label_offset = label_offset  # 1 for Faster R-CNN, whose label 0 is the background
        self.class_names = tuple(class_names) if class_names is not None else None
        self.create_kwargs = dict(create_kwargs or {})

    @property
    def backbone(self) -> TwoStreamBackbone:
        return self.model.backbone

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.backbone.modalities

    @property
    def event_channels(self) -> int:
        return self.backbone.event_channels

    def _image(self, i: int, sample: Any) -> torch.Tensor:
        if not isinstance(sample, Mapping):
            raise TypeError(
                f"sample {i} is a {type(sample).__name__}, not a dict of modality tensors "
                f"{{'rgb': [3, H, W], 'events': [C, H, W]}}"
            )
        parts = []
        for m in self.modalities:
            if m not in sample:
                built = f"this detector was built with modalities {self.modalities}"
                raise ValueError(f"sample {i} has no {m!r} tensor; {built}")
            x, c = sample[m], self.backbone.body.in_chans[m]
            if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[0] != c:
                shape = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise ValueError(f"sample {i}: {m!r} must be a [{c}, H, W] tensor, got {shape}")
            if not x.is_floating_point():
                raise TypeError(f"sample {i}: {m!r} is {x.dtype}; give float tensors (RGB scaled to [0, 1])")
            if parts and x.shape[1:] != parts[0].shape[1:]:
                raise ValueError(
                    f"sample {i}: 'rgb' is {tuple(parts[0].shape[1:])} but 'events' is {tuple(x.shape[1:])} "
                    "(H, W); resize both modalities to the same size"
                )
            parts.append(x)
        return torch.cat(parts, 0) if len(parts) > 1 else parts[0]

    def _targets(self, targets: Any, n: int) -> list[dict[str, torch.Tensor]]:
        if not isinstance(targets, Sequence) or len(targets) != n:
            got = f"{len(targets)} targets" if isinstance(targets, Sequence) else repr(type(targets).__name__)
            raise ValueError(f"training needs one target dict per sample: {n} samples, got {got}")
        out = []
        for i, t in enumerate(targets):
            if not isinstance(t, Mapping) or "boxes" not in t or "labels" not in t:
                raise ValueError(f"target {i} must be a dict with 'boxes' [K, 4] and 'labels' [K]")
            labels = t["labels"]
            if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.dim() != 1:
                raise ValueError(f"target {i}: 'labels' must be a 1-D integer tensor, got {labels!r}")
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
                raise ValueError(
                    f"target {i}: labels must be class indices in 0..{self.num_classes - 1} (0-based, no "
                    f"background class), got {labels.tolist()}"
                )
            out.append({**t, "labels": labels.long() + self.label_offset})
        return out

    def forward(
        self, inputs: Sequence[Mapping[str, torch.Tensor]], targets: Sequence[Mapping[str, Any]] | None = None
    ) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        if not isinstance(inputs, Sequence) or isinstance(inputs, (str, Mapping)) or not inputs:
            raise TypeError(
                "inputs must be a non-empty list of per-sample dicts {'rgb': [3, H, W], 'events': [C, H, W]}"
            )
        images = [self._image(i, s) for i, s in enumerate(inputs)]
        if self.training:
            if targets is None:
                raise ValueError("in training mode the detector needs targets (or call .eval() to detect)")
            return self.model(images, self._targets(targets, len(images)))
        detections = self.model(images)
        if not self.label_offset:
            return detections
        return [{**d, "labels": d["labels"] - self.label_offset} for d in detections]

    def extra_repr(self) -> str:
        return f"modalities={self.modalities}, num_classes={self.num_classes}"


def create_detector(
    backbone: str = "resnet50",
    num_classes: int = 3,
    *,
    head: str = "retinanet",
    modalities: str | Sequence[str] = MODALITIES,
    event_channels: int = 5,
    fusion: str = "se",
    fusion_kwargs: Mapping[str, Any] | None = None,
    min_size: int = 800,
    max_size: int = 1333,
    weights_backbone: str | Path | Mapping[str, Any] | None = None,
    rgb_blank_prob: float = 0.0,
    backbone_kwargs: Mapping[str, Any] | None = None,
    class_names: Sequence[str] | None = None,
    out_channels: int = 256,
    **detector_kwargs: Any,
) -> Detector:
    """The two-stream detector: torchvision's RetinaNet (FRN's head) or Faster R-CNN.

    Args:
        backbone, modalities, event_channels, fusion, fusion_kwargs, out_channels, weights_backbone,
            backbone_kwargs, rgb_blank_prob: as :class:`TwoStreamBackbone`.
        num_classes: object classes, no background (DSEC in FRN: person, large_vehicle, car = 3).
        head: ``"retinanet"`` (FRN; FPN levels P2..P7 with :func:`retinanet_anchors`) or
            ``"fasterrcnn"`` (P2..P6, torchvision's default anchors 32..512).
        min_size, max_size: the resize of torchvision's transform (its defaults 800 / 1333; FRN's
            DSEC recipe resizes to 480 x 640, DDD17 to 260 x 346).
        class_names: optional names of the classes, stored on the detector.
        detector_kwargs: more options of torchvision's ``RetinaNet`` / ``FasterRCNN``
            (``image_mean`` / ``image_std`` with one value per input channel, ``score_thresh``, ...).
    """
    if head not in HEADS:
        raise _unknown_choice("head", head, HEADS)
    num_classes = _whole("num_classes", num_classes)
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"class_names has {len(class_names)} names for num_classes={num_classes}")
    # weights_backbone is left out: a checkpoint's state dict holds the weights it rebuilds with.
    create_kwargs = {
        "backbone": backbone,
        "num_classes": num_classes,
        "head": head,
        "modalities": check_modalities(modalities),
        "event_channels": event_channels,
        "fusion": fusion,
        "fusion_kwargs": dict(fusion_kwargs) if fusion_kwargs else None,
        "min_size": min_size,
        "max_size": max_size,
        "rgb_blank_prob": rgb_blank_prob,
        "backbone_kwargs": dict(backbone_kwargs) if backbone_kwargs else None,
        "class_names": tuple(class_names) if class_names is not None else None,
        "out_channels": out_channels,
        **detector_kwargs,
    }
    bb = TwoStreamBackbone(
        backbone,
        modalities=modalities,
        event_channels=event_channels,
        fusion=fusion,
        fusion_kwargs=fusion_kwargs,
        out_channels=out_channels,
        weights_backbone=weights_backbone,
        backbone_kwargs=backbone_kwargs,
        extra_blocks="p6p7" if head == "retinanet" else "maxpool",
        rgb_blank_prob=rgb_blank_prob,
    )
    if "image_mean" not in detector_kwargs and "image_std" not in detector_kwargs:
        detector_kwargs["image_mean"], detector_kwargs["image_std"] = _normalisation(bb)
    for key in ("image_mean", "image_std"):
        if len(detector_kwargs[key]) != bb.in_chans:
            raise ValueError(
                f"{key} has {len(detector_kwargs[key])} values for {bb.in_chans} input channels "
                f"({' + '.join(bb.modalities)}): give one per channel, RGB first"
            )
    if head == "retinanet":
        detector_kwargs.setdefault("anchor_generator", retinanet_anchors(bb.level_strides))
        model: nn.Module = RetinaNet(bb, num_classes, min_size=min_size, max_size=max_size, **detector_kwargs)
        offset = 0  # torchvision's RetinaNet takes 0-based labels (background = no match)
    else:
        model = FasterRCNN(bb, num_classes + 1, min_size=min_size, max_size=max_size, **detector_kwargs)
        offset = 1
    return Detector(
        model,
        num_classes=num_classes,
        label_offset=offset,
        class_names=class_names,
        create_kwargs=create_kwargs,
    )
