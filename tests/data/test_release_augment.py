"""``augment: release``: each of the release's operations is applied, measured over many draws.

The input is a synthetic image whose red channel is a horizontal ramp, green a vertical ramp and blue
a constant: from each output the crop's size (gradient magnitudes), the flip (sign of the red
gradient), the rotation (direction of the red gradient) and the pixel jitter (the blue level) can be
read back, and the per-channel normalisation is undone with the recipe's mean and std.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from senet.data.transforms import RELEASE_JITTER, RELEASE_ROTATION, PixelJitter, folder_transforms

SIZE, OUT, DRAWS = 96, 32, 300
MEAN, STD = (0.45, 0.5, 0.55), (0.2, 0.25, 0.3)
STEP = 255 / (SIZE - 1)  # grey levels per source pixel of both ramps


def _ramps() -> Image.Image:
    r = np.tile(np.linspace(0, 255, SIZE), (SIZE, 1))
    rgb = np.stack([r, r.T, np.full_like(r, 128)], axis=-1)
    return Image.fromarray(rgb.round().astype(np.uint8))


def _measure(augment: str) -> dict[str, np.ndarray]:
    tf = folder_transforms(
        augment, train=True, image_size=OUT, eval_crop=OUT, eval_resize=0, mean=MEAN, std=STD, scale_min=0.08
    )
    img = _ramps()
    ii, jj = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    design = torch.stack([jj.flatten(), ii.flatten(), torch.ones(256)], 1)  # plane: a*col + b*row + c
    rows = []
    for _ in range(DRAWS):
        x = tf(img)
        pix = (x * torch.tensor(STD).view(3, 1, 1) + torch.tensor(MEAN).view(3, 1, 1)) * 255
        c = pix[:, 8:24, 8:24]  # the centre: away from the empty corners a rotation leaves
        fit = torch.linalg.lstsq(design, c.reshape(3, 256).T).solution  # (3 coefficients, 3 channels)
        d_col, d_row = fit[0], fit[1]
        flipped = float(d_col[0]) < 0
        angle = math.degrees(math.atan2(float(d_row[0]), abs(float(d_col[0]))))
        width = math.hypot(float(d_col[0]), float(d_row[0])) * OUT / STEP / SIZE  # of the image's
        height = math.hypot(float(d_col[1]), float(d_row[1])) * OUT / STEP / SIZE
        rows.append((flipped, angle, width, height, float(c[2].median()) - 128))
    return dict(zip(("flip", "angle", "width", "height", "jitter"), np.array(rows).T, strict=True))


@pytest.fixture(scope="module")
def release() -> dict[str, np.ndarray]:
    torch.manual_seed(0)
    return _measure("release")


def test_flip_half_of_the_time(release):
    assert 0.38 < release["flip"].mean() < 0.62


def test_rotation_within_ten_degrees_and_used(release):
    a = release["angle"]
    assert np.abs(a).max() <= RELEASE_ROTATION + 3.5  # read from 8-bit ramps: +-3 degrees on small crops
    assert np.abs(a).max() > 0.7 * RELEASE_ROTATION and a.std() > 3.0  # uniform on -10..10: std 5.8
    assert (a > 2).mean() > 0.2 and (a < -2).mean() > 0.2


def test_random_size_crop_areas_and_aspect_ratios(release):
    w, h = release["width"], release["height"]
    area, aspect = w * h, w / h
    assert area.max() <= 1.1 and area.min() >= 0.08 * 0.8
    assert area.min() < 0.25 and area.max() > 0.7  # small and large crops both drawn
    assert aspect.min() > 0.75 * 0.85 and aspect.max() < 4 / 3 * 1.15


def test_pixel_jitter_in_twenty_grey_levels(release):
    j = release["jitter"]
    assert np.abs(j).max() <= RELEASE_JITTER + 1
    assert j.min() < -0.7 * RELEASE_JITTER and j.max() > 0.7 * RELEASE_JITTER
    assert 9 < j.std() < 14.5  # uniform on -20..20: std 11.8


def test_imagenet_augmentation_has_neither_rotation_nor_jitter():
    torch.manual_seed(0)
    m = _measure("imagenet")
    assert np.abs(m["jitter"]).max() < 1.0  # blue stays 128: the normalisation is undone exactly
    assert np.abs(m["angle"]).max() < 1.0
    assert 0.38 < m["flip"].mean() < 0.62


def test_pixel_jitter_takes_uint8_and_clips():
    x = torch.tensor([0, 255, 128], dtype=torch.uint8).view(3, 1, 1).expand(3, 4, 4).clone()
    out = torch.stack([PixelJitter(20)(x) for _ in range(200)]).int()
    assert out.dtype == torch.int32 and out.min() >= 0 and out.max() <= 255
    assert (out[:, 2] - 128).abs().max() == 20  # both ends of -20..20 drawn over 200 draws
    assert (out[:, :, :1, :1] == out[:, :, :, :]).all()  # one offset per image and channel
    with pytest.raises(TypeError, match="uint8"):
        PixelJitter(20)(x.float())
