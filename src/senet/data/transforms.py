"""The paper's augmentation, per image (torchvision.transforms.v2) and per batch (in-memory CIFAR).

* ImageNet (Sec. 6.1 / the paper's recipe): random-size crop (scale 8%-100%, aspect ratio 3/4-4/3)
  to 224 (299, 320), horizontal flip, per-channel mean/std normalisation; evaluation resizes the
  short side to ``crop * 256 / 224`` and takes the centre crop.
* The official release's training augmentation (``augment: release``, SENET.md "Official release"):
  rotation by -10..10 degrees, the same random-size crop, flip, pixel jitter -20..20 and the
  per-channel normalisation. "Pixel jitter" is read as a uniform integer offset in -20..20 grey
  levels added to each channel of the image (one draw per image and channel, clipped to 0..255).
* CIFAR (Sec. 5.1): "randomly horizontally flipped and zero-padded on each side with four pixels
  before taking a random 32 x 32 crop. Mean and standard deviation normalisation is also applied",
  plus Cutout (16x16, DeVries & Taylor 2017) for the Shake-Shake recipe.

:class:`BatchAugment` applies the CIFAR augmentation to a whole uint8 batch at once with tensor
indexing, given per-sample random draws (:class:`AugmentDraws`): on two CPU cores this is far
cheaper than per-image PIL work, and drawing the randomness for a whole epoch in the global sample
order makes a run on N processes see exactly the images a single process sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.transforms import v2

__all__ = [
    "AugmentDraws",
    "BatchAugment",
    "Cutout",
    "PixelJitter",
    "RELEASE_JITTER",
    "RELEASE_ROTATION",
    "draw_augment",
    "eval_resize_for",
    "folder_transforms",
    "normalize",
]


RELEASE_ROTATION = 10.0  # degrees, either way
RELEASE_JITTER = 20  # grey levels, either way


def eval_resize_for(crop: int, resize: int = 0) -> int:
    """Short side to resize to before a centre crop: 256 for 224 (ratio 0.875) unless given."""
    return resize if resize > 0 else round(crop * 256 / 224)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` in 0..255 -> float32 normalised per channel."""
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1) * 255.0
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1) * 255.0
    return (x.float() - m) / s


@dataclass
class AugmentDraws:
    """Per-sample random draws of the CIFAR augmentation: crop offsets, flips, Cutout centres."""

    dy: torch.Tensor
    dx: torch.Tensor
    flip: torch.Tensor
    cy: torch.Tensor
    cx: torch.Tensor

    def __getitem__(self, idx: slice | torch.Tensor) -> AugmentDraws:
        return AugmentDraws(self.dy[idx], self.dx[idx], self.flip[idx], self.cy[idx], self.cx[idx])


def draw_augment(n: int, size: tuple[int, int], padding: int, generator: torch.Generator) -> AugmentDraws:
    """Draw crop offsets in [0, 2*padding], a fair coin for the flip, Cutout centres in the image."""
    h, w = size
    return AugmentDraws(
        dy=torch.randint(0, 2 * padding + 1, (n,), generator=generator),
        dx=torch.randint(0, 2 * padding + 1, (n,), generator=generator),
        flip=torch.rand(n, generator=generator) < 0.5,
        cy=torch.randint(0, h, (n,), generator=generator),
        cx=torch.randint(0, w, (n,), generator=generator),
    )


class BatchAugment:
    """Pad-and-crop, flip, normalise and Cutout on a uint8 batch, given its :class:`AugmentDraws`.

    The padding is zeros in pixel space (black), as in the paper and torchvision's
    ``RandomCrop(32, padding=4)``; Cutout zeroes a ``cutout x cutout`` square of the normalised
    image centred on a random pixel, clipped at the border (DeVries & Taylor's implementation).
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        padding: int = 4,
        flip: bool = True,
        cutout: int = 0,
    ) -> None:
        self.mean, self.std = list(mean), list(std)
        self.padding, self.flip, self.cutout = padding, flip, cutout

    def __call__(self, x: torch.Tensor, draws: AugmentDraws | None) -> torch.Tensor:
        if draws is None:
            return normalize(x, self.mean, self.std)
        n, c, h, w = x.shape
        dev = x.device
        if self.padding > 0 or self.flip:
            # One gather does crop and flip: output pixel (i, j) of a flipped crop at offset
            # (dy, dx) is padded pixel (dy + i, dx + w - 1 - j). Much cheaper on CPU than
            # advanced indexing with four broadcast index tensors.
            p = self.padding
            padded = nn.functional.pad(x, (p, p, p, p)) if p > 0 else x
            j = torch.arange(w, device=dev)
            if self.flip:
                j = torch.where(draws.flip.to(dev).view(n, 1), j.flip(0), j)
            i = torch.arange(h, device=dev)
            cols = draws.dx.to(dev).view(n, 1) + j if p > 0 else j.expand(n, w)
            rows = draws.dy.to(dev).view(n, 1) + i if p > 0 else i.expand(n, h)
            idx = (rows.view(n, h, 1) * (w + 2 * p) + cols.view(n, 1, w)).view(n, 1, h * w)
            x = padded.flatten(2).gather(2, idx.expand(n, c, h * w)).view(n, c, h, w)
        x = normalize(x, self.mean, self.std)
        if self.cutout > 0:
            # pixel offsets from the square's top-left corner (centre - cutout // 2)
            half = self.cutout // 2
            ys = torch.arange(h, device=dev).view(1, h, 1) - draws.cy.to(dev).view(n, 1, 1) + half
            xs = torch.arange(w, device=dev).view(1, 1, w) - draws.cx.to(dev).view(n, 1, 1) + half
            inside = (ys >= 0) & (ys < self.cutout) & (xs >= 0) & (xs < self.cutout)
            x = x.masked_fill(inside.unsqueeze(1), 0.0)
        return x


class Cutout(nn.Module):
    """Cutout for a single normalised image tensor ``(C, H, W)`` (the per-image pipeline)."""

    def __init__(self, size: int = 16) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        cy, cx = int(torch.randint(0, h, ())), int(torch.randint(0, w, ()))
        y0, x0 = max(0, cy - self.size // 2), max(0, cx - self.size // 2)
        y1, x1 = min(h, cy - self.size // 2 + self.size), min(w, cx - self.size // 2 + self.size)
        x = x.clone()
        x[..., y0:y1, x0:x1] = 0.0
        return x


class PixelJitter(nn.Module):
    """Add a uniform integer offset in ``-amount..amount`` to each channel of a uint8 image (the
    release's "pixel jitter"), clipped to 0..255."""

    def __init__(self, amount: int = RELEASE_JITTER) -> None:
        super().__init__()
        self.amount = amount

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.uint8:
            raise TypeError(f"PixelJitter takes uint8 images (before ToDtype), got {x.dtype}")
        shift = torch.randint(-self.amount, self.amount + 1, (x.shape[-3], 1, 1), dtype=torch.int16)
        return (x.to(torch.int16) + shift).clamp_(0, 255).to(torch.uint8)

    def extra_repr(self) -> str:
        return f"amount={self.amount}"


def folder_transforms(
    augment: str,
    *,
    train: bool,
    image_size: int,
    eval_crop: int,
    eval_resize: int,
    mean: Sequence[float],
    std: Sequence[float],
    scale_min: float = 0.08,
    cutout: int = 0,
) -> v2.Compose:
    """Per-image transforms (PIL in, normalised float tensor out) for streamed ImageFolder data."""
    tail: list[nn.Module] = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    if augment in ("imagenet", "release"):
        if train:
            crop = v2.RandomResizedCrop(
                image_size, scale=(scale_min, 1.0), ratio=(3 / 4, 4 / 3), antialias=True
            )
            head: list[nn.Module] = [crop, v2.RandomHorizontalFlip()]
            if augment == "release":  # rotate the whole image first: fewer empty corners in the crop
                head.insert(
                    0, v2.RandomRotation(RELEASE_ROTATION, interpolation=v2.InterpolationMode.BILINEAR)
                )
                tail.insert(1, PixelJitter(RELEASE_JITTER))
        else:
            head = [
                v2.Resize(eval_resize_for(eval_crop, eval_resize), antialias=True),
                v2.CenterCrop(eval_crop),
            ]
    elif augment == "cifar" and train:
        head = [v2.RandomCrop(image_size, padding=4), v2.RandomHorizontalFlip()]
    else:  # CIFAR-style evaluation: the image as it is, unless another resize or crop is asked for
        head = []
        if not train and eval_resize:
            head.append(v2.Resize(eval_resize, antialias=True))
        if not train and eval_crop != image_size:
            head.append(v2.CenterCrop(eval_crop))
    if train and cutout > 0:
        tail.append(Cutout(cutout))
    return v2.Compose(head + tail)
