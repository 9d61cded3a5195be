"""The batched CIFAR augmentation against per-image references (slicing, torchvision)."""

from __future__ import annotations

import torch
from torch.nn import functional as F
from torchvision.transforms import v2

from senet.data import BatchAugment, draw_augment, normalize
from senet.data.transforms import AugmentDraws, folder_transforms

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def _images(n: int = 16, size: int = 32) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8)


def test_normalize_matches_torchvision():
    x = _images()
    ref = v2.Normalize(MEAN, STD)(x.float() / 255)
    torch.testing.assert_close(normalize(x, MEAN, STD), ref, atol=1e-5, rtol=1e-5)


def test_crops_are_windows_of_the_zero_padded_image_and_flips_flip():
    x = _images(32)
    g = torch.Generator().manual_seed(1)
    draws = draw_augment(len(x), (32, 32), 4, g)
    out = BatchAugment(MEAN, STD, padding=4, flip=True)(x, draws)
    for i in range(len(x)):
        padded = F.pad(x[i], (4, 4, 4, 4))  # zeros in pixel space, as torchvision's RandomCrop(padding=4)
        dy, dx = int(draws.dy[i]), int(draws.dx[i])
        win = padded[:, dy : dy + 32, dx : dx + 32]
        if draws.flip[i]:
            win = win.flip(-1)
        torch.testing.assert_close(out[i], normalize(win[None], MEAN, STD)[0])
    assert draws.flip.any() and (~draws.flip).any()


def test_flip_only_mirrors_left_right():
    x = _images(4)
    n = len(x)
    draws = AugmentDraws(
        torch.zeros(n, dtype=torch.long),
        torch.zeros(n, dtype=torch.long),
        torch.ones(n, dtype=torch.bool),
        torch.zeros(n, dtype=torch.long),
        torch.zeros(n, dtype=torch.long),
    )
    out = BatchAugment(MEAN, STD, padding=0, flip=True)(x, draws)
    torch.testing.assert_close(out, normalize(x, MEAN, STD).flip(3))
    assert not torch.allclose(out, normalize(x, MEAN, STD))


def test_draws_cover_every_offset_evenly():
    d = draw_augment(90_000, (32, 32), 4, torch.Generator().manual_seed(0))
    counts = torch.bincount(d.dy, minlength=9).float()
    assert counts.numel() == 9 and d.dy.min() == 0 and d.dy.max() == 8
    assert (counts / counts.mean() - 1).abs().max() < 0.05
    assert abs(d.flip.float().mean().item() - 0.5) < 0.01
    assert d.cy.min() == 0 and d.cy.max() == 31


def test_cutout_zeroes_a_clipped_16x16_square():
    x = torch.full((2, 3, 32, 32), 200, dtype=torch.uint8)
    n = 2
    zero = torch.zeros(n, dtype=torch.long)
    draws = AugmentDraws(
        zero, zero, torch.zeros(n, dtype=torch.bool), torch.tensor([16, 0]), torch.tensor([16, 0])
    )
    out = BatchAugment(MEAN, STD, padding=0, flip=False, cutout=16)(x, draws)
    zeros = (out == 0).all(1).sum((1, 2))
    assert zeros.tolist() == [16 * 16, 8 * 8]  # centred: the full square; at a corner: a quarter
    assert (out[0, :, 8:24, 8:24] == 0).all() and (out[0, :, :8] != 0).all()


def test_folder_transforms_match_the_paper():
    train = folder_transforms(
        "imagenet", train=True, image_size=224, eval_crop=224, eval_resize=0, mean=MEAN, std=STD
    )
    rrc = train.transforms[0]
    assert isinstance(rrc, v2.RandomResizedCrop) and rrc.scale == (0.08, 1.0)
    assert abs(rrc.ratio[0] - 3 / 4) < 1e-9 and abs(rrc.ratio[1] - 4 / 3) < 1e-9
    ev = folder_transforms(
        "imagenet", train=False, image_size=224, eval_crop=224, eval_resize=0, mean=MEAN, std=STD
    )
    assert ev.transforms[0].size == [256] and ev.transforms[1].size == (224, 224)
    ev320 = folder_transforms(
        "imagenet", train=False, image_size=320, eval_crop=320, eval_resize=0, mean=MEAN, std=STD
    )
    assert ev320.transforms[0].size == [366]
