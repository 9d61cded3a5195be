"""Decoding, caching, subsets and sharding of the in-memory data on the real CIFAR-10 copy."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

from senet.data import BatchAugment, MemoryLoader, build_data, load_array_split, normalize
from senet.data import datasets as ds_mod

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_real_subset_decodes_like_pil(cifar10_jpeg, tmp_path):
    data = load_array_split(cifar10_jpeg, train=False, per_class=3, cache_dir=str(tmp_path))
    assert data.classes == CLASSES
    assert data.images.shape == (30, 3, 32, 32) and data.images.dtype == torch.uint8
    assert data.labels.tolist() == [c for c in range(10) for _ in range(3)]
    first = sorted(os.listdir(cifar10_jpeg / "test" / "bird"))[1]
    ref = np.asarray(Image.open(cifar10_jpeg / "test" / "bird" / first).convert("RGB"))
    assert np.array_equal(data.images[7].permute(1, 2, 0).numpy(), ref)


def test_statistics_of_the_normalised_training_subset(cifar10_jpeg):
    data = build_data(cifar10_jpeg, train_subset=300, val_subset=1, batch_size=500, seed=0)
    # README: training mean (0.4913, 0.4821, 0.4465), std (0.2452, 0.2428, 0.2606) of the 50,000 images.
    x = normalize(data.train.data.images, MEAN, STD)
    assert x.mean((0, 2, 3)).abs().max() < 0.05
    assert (x.std((0, 2, 3)) - 1).abs().max() < 0.05
    # Augmented batches: the same images, shifted by up to 4 pixels with black borders.
    aug = torch.cat([xb for xb, _ in data.train])
    assert aug.shape == x.shape and not torch.allclose(aug.mean(), x.mean())
    black = normalize(torch.zeros(1, 3, 1, 1, dtype=torch.uint8), MEAN, STD).flatten()
    pad_share = (aug == black.view(1, 3, 1, 1)).all(1).float().mean()
    assert 0.05 < pad_share < 0.2  # E[padded rows and columns] = 2 * 2.22 / 32 - overlap ~ 0.13


def test_cache_is_reused_and_invalidated(tmp_path, monkeypatch):
    root = tmp_path / "tiny"
    for split in ("train", "test"):
        for c, name in enumerate(("a", "b")):
            (root / split / name).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(np.full((8, 8, 3), 40 * c + i, np.uint8)).save(
                    root / split / name / f"{i}.png"
                )
    cache = tmp_path / "cache"
    first = load_array_split(root, True, cache_dir=str(cache))
    assert len(list(cache.glob("train-*.npy"))) == 1

    def boom(samples):
        raise AssertionError("decoded again although cached")

    monkeypatch.setattr(ds_mod, "_decode_folder", boom)
    again = load_array_split(root, True, cache_dir=str(cache))
    assert torch.equal(first.images, again.images)
    time.sleep(0.01)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "train" / "b" / "3.png")
    with pytest.raises(AssertionError, match="decoded again"):
        load_array_split(root, True, cache_dir=str(cache))


def test_missing_folder_is_one_line_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_data(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="train/ and val/"):
        build_data(tmp_path / "empty")


def test_two_ranks_see_the_single_process_batches():
    images = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
    from senet.data import ArrayDataset

    data = ArrayDataset(images, torch.arange(40) % 4, list("abcd"))
    aug = BatchAugment((0.5,) * 3, (0.25,) * 3, padding=2, flip=True)
    single = MemoryLoader(data, 10, aug, True, seed=3)
    ranks = [MemoryLoader(data, 5, aug, True, seed=3, rank=r, world=2) for r in range(2)]
    for loader in (single, *ranks):
        loader.set_epoch(2)
    assert len(single) == len(ranks[0]) == 4
    for (xs, ys), (x0, y0), (x1, y1) in zip(single, *ranks, strict=True):
        torch.testing.assert_close(xs, torch.cat([x0, x1]))
        assert torch.equal(ys, torch.cat([y0, y1]))
    single.set_epoch(3)
    other = torch.cat([y for _, y in single])
    single.set_epoch(2)
    assert not torch.equal(other, torch.cat([y for _, y in single]))  # a new order every epoch
