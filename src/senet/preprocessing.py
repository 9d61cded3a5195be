"""The input convention a set of weights expects, carried with the weights.

Weights are only correct with the preprocessing they were trained with: the official Caffe models
take BGR 0-255 images minus a mean and no std, the PyTorch ports RGB [0, 1] normalised with the
ImageNet mean/std (``shared/paper/SENET.md``, "Official release"), CIFAR networks the CIFAR
statistics at 32x32. :class:`Preprocessing` records this; :func:`preprocessing` returns the
evaluation transform of a model (resize the short side to ``size / crop_fraction``, centre crop).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
from torch import nn

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "IMAGENET_MEAN", "IMAGENET_STD", "Preprocessing", "preprocessing"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# CIFAR-10 training-set statistics (the original's; the JPEG copy differs in the 4th digit).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


@dataclass(frozen=True)
class Preprocessing:
    """How images must be prepared for a set of weights.

    ``mean``/``std`` apply to pixel values in the range ``[0, value_range]`` (1.0 for [0, 1],
    255.0 for the Caffe convention) in colour ``order`` ("RGB" or "BGR").
    """

    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    order: str = "RGB"
    value_range: float = 1.0
    input_size: tuple[int, int, int] = (3, 224, 224)
    crop_fraction: float = 0.875
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.order not in ("RGB", "BGR"):
            raise ValueError(f"preprocessing order={self.order!r} must be 'RGB' or 'BGR'")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"preprocessing interpolation={self.interpolation!r} is not one of {INTERPOLATIONS}"
            )
        if not 0 < self.crop_fraction <= 1:
            raise ValueError(f"preprocessing crop_fraction={self.crop_fraction} must be in (0, 1]")
        for name in ("mean", "std", "input_size"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown preprocessing fields {unknown}; known: {sorted(known)}")
        return cls(**d)

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def adjusted(
        self,
        *,
        crop: int | None = None,
        resize: int = 0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> Preprocessing:
        """A copy with some parts replaced (``senet eval`` / ``predict`` flags). ``crop`` alone keeps
        the crop fraction (so the resize follows, 256 for 224 at 0.875); ``resize`` sets it."""
        prep = self
        if crop:
            prep = replace(prep, input_size=(*prep.input_size[:-2], crop, crop))
        if resize:
            prep = replace(prep, crop_fraction=min(1.0, prep.input_size[-1] / resize))
        if mean is not None or std is not None:
            prep = replace(prep, mean=tuple(mean or prep.mean), std=tuple(std or prep.std))
        return prep

    def for_channels(self, n: int) -> Preprocessing:
        """This preprocessing for a network of ``n`` input channels (``create_model(in_chans=n)``).

        Colour statistics describe 3 channels. One channel is a grey image: mean and std are the
        average of the colour ones, the counterpart of :func:`senet.load_weights` summing RGB kernels
        for it (a grey image seen as itself in R, G and B). Any other count is not colours (e.g.
        FRN's 5-bin event voxel grid, which FRN's ``retinanet/dataloader.py`` feeds unnormalised):
        mean 0 and std 1 per channel, i.e. no normalisation; whoever makes such inputs sets
        ``model.preprocessing`` to their own statistics.
        """
        mean, std = self.mean, self.std
        if len(mean) != n:
            grey = ((sum(mean) / len(mean),), (sum(std) / len(std),))
            mean, std = grey if n == 1 else ((0.0,) * n, (1.0,) * n)
        return replace(self, mean=mean, std=std, input_size=(n, *self.input_size[1:]))

    @property
    def resize_size(self) -> int:
        """Short side before the centre crop (256 for a 224 crop at 0.875)."""
        return int(round(self.input_size[-1] / self.crop_fraction))

    def transform(self) -> nn.Module:
        """The evaluation transform (PIL image or uint8 tensor in, normalised float tensor out)."""
        from torchvision.transforms import InterpolationMode, v2

        # The short side is always resized (a no-op for images of that size already, such as CIFAR's
        # 32x32 at crop_fraction 1): a photo of any size gets the framing the weights were trained on.
        steps: list[nn.Module] = [
            v2.ToImage(),
            v2.Resize(self.resize_size, interpolation=InterpolationMode(self.interpolation), antialias=True),
            v2.CenterCrop(self.input_size[1:]),
            v2.ToDtype(torch.float32, scale=True),
        ]
        if self.input_size[0] == 1:  # a grey network: photos in colour become grey (ITU-R 601 luma)
            steps.insert(1, v2.Grayscale())
        if self.order == "BGR":
            steps.append(_FlipChannels())
        if self.value_range != 1.0:
            steps.append(_Scale(self.value_range))
        steps.append(v2.Normalize(list(self.mean), list(self.std)))
        return v2.Compose(steps)


class _FlipChannels(nn.Module):
    """RGB -> BGR on a (..., 3, H, W) tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(-3)


class _Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def default_preprocessing(dataset: str, input_size: tuple[int, int, int]) -> Preprocessing:
    """What a network of the registry expects when its weights say nothing else (for another channel
    count than 3: see :meth:`Preprocessing.for_channels`)."""
    cifar = dict(mean=CIFAR10_MEAN, std=CIFAR10_STD, crop_fraction=1.0) if dataset == "cifar" else {}
    return Preprocessing(input_size=input_size, **cifar).for_channels(input_size[0])


def preprocessing(model: nn.Module) -> nn.Module:
    """The evaluation transform matching ``model``'s weights (see :class:`Preprocessing`)."""
    prep = getattr(model, "preprocessing", None)
    if not isinstance(prep, Preprocessing):
        raise ValueError(
            f"{type(model).__name__} carries no preprocessing: build it with senet.create_model, "
            "or set model.preprocessing = senet.Preprocessing(...)"
        )
    return prep.transform()
