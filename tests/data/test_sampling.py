"""Balanced data sampling (Sec. 6.1) on an imbalanced ImageFolder made from the real CIFAR-10 copy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from senet.data import BalancedSampler, balanced_order, build_data
from senet.data.sampling import epoch_generator

MAJOR, MINOR = 200, 20  # 10:1 imbalance: class 0 has 200 images, the nine others 20 each


@pytest.fixture(scope="module")
def imbalanced(cifar10_jpeg, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("imbalanced")
    classes = sorted(p for p in (cifar10_jpeg / "train").iterdir() if p.is_dir())
    for split, counts in (("train", (MAJOR, MINOR)), ("test", (6, 5))):  # 51 test images
        for i, cls in enumerate(classes):
            n = counts[0] if i == 0 else counts[1]
            (root / split / cls.name).mkdir(parents=True)
            for f in sorted(cls.iterdir())[:n]:
                (root / split / cls.name / f.name).symlink_to(f)
    return root


def _epoch_labels(loader, epoch: int) -> torch.Tensor:
    loader.set_epoch(epoch)
    return torch.cat([y for _, y in loader])


def _data(root: Path, in_memory: bool, sampling: str, augment: str = "cifar", **kw):
    return build_data(
        root, augment=augment, in_memory=in_memory, cache_dir="", batch_size=20, workers=0,
        sampling=sampling, seed=3, **kw,
    )  # fmt: skip


@pytest.mark.parametrize("in_memory", [True, False], ids=["memory", "streamed"])
def test_balanced_epochs_have_equal_class_counts(imbalanced, in_memory):
    n = MAJOR + 9 * MINOR
    balanced = _data(imbalanced, in_memory, "balanced").train
    uniform = _data(imbalanced, in_memory, "uniform").train
    for epoch in (1, 2):
        counts = torch.bincount(_epoch_labels(balanced, epoch), minlength=10).float()
        assert counts.sum() == n // 20 * 20
        assert (counts - counts.mean()).abs().max() <= 0.03 * counts.mean(), counts
        plain = torch.bincount(_epoch_labels(uniform, epoch), minlength=10)
        assert plain[0] > 5 * plain[1:].max()  # the data set really is imbalanced


def test_balanced_sampling_shows_different_images_of_the_frequent_class(imbalanced):
    loader = _data(imbalanced, True, "balanced").train
    seen = []
    for epoch in (1, 2):
        loader.set_epoch(epoch)
        order = balanced_order(loader.data.labels, epoch_generator(3, epoch))
        seen.append(set(order[loader.data.labels[order] == 0].tolist()))
    assert seen[0] != seen[1]  # another random share of class 0's 200 images each epoch
    assert len(seen[0]) == (MAJOR + 9 * MINOR) // 10  # drawn without repetition within the class


@pytest.mark.parametrize("in_memory", [True, False], ids=["memory", "streamed"])
def test_two_processes_see_the_batches_of_one(imbalanced, in_memory):
    # Streamed augmentation is drawn per worker, not per sample: compare the images unaugmented there.
    augment = "cifar" if in_memory else "none"
    one = _data(imbalanced, in_memory, "balanced", augment=augment).train
    ranks = [
        build_data(
            imbalanced, augment=augment, in_memory=in_memory, cache_dir="", batch_size=10, workers=0,
            sampling="balanced", seed=3, rank=r, world=2,
        ).train
        for r in (0, 1)
    ]  # fmt: skip
    for epoch in (1, 4):
        for loader in (one, *ranks):
            loader.set_epoch(epoch)
        batches = list(one)
        split = list(zip(*ranks, strict=True))
        assert len(batches) == len(split)
        for (x, y), ((x0, y0), (x1, y1)) in zip(batches, split, strict=True):
            assert torch.equal(y, torch.cat([y0, y1]))
            assert torch.equal(x, torch.cat([x0, x1]))  # the same images (and augmentation in memory)


def test_balanced_order_is_deterministic_per_seed_and_epoch():
    labels = torch.tensor([0] * 90 + [1] * 9 + [2] * 1)
    a = balanced_order(labels, epoch_generator(0, 1))
    assert torch.equal(a, balanced_order(labels, epoch_generator(0, 1)))  # a resumed epoch replays it
    assert not torch.equal(a, balanced_order(labels, epoch_generator(0, 2)))
    assert not torch.equal(a, balanced_order(labels, epoch_generator(1, 1)))
    counts = torch.bincount(labels[a])
    assert counts.max() - counts.min() <= 1 and counts.sum() == 100
    # the single image of class 2 is repeated; class 1's 9 images each 3 or 4 times
    assert (torch.bincount(a[labels[a] == 1], minlength=99)[90:99] >= 3).all()


def test_sampler_shards_are_disjoint_positions_of_one_order():
    labels = torch.arange(40) % 4
    s = [BalancedSampler(labels, 5, seed=1, rank=r, world=2) for r in (0, 1)]
    for x in s:
        x.set_epoch(7)
    order = s[0].global_order()
    got = [list(x) for x in s]
    assert len(got[0]) == len(s[0]) == 20
    for k in range(4):
        assert got[0][5 * k : 5 * k + 5] + got[1][5 * k : 5 * k + 5] == order[10 * k : 10 * k + 10].tolist()


def test_unknown_sampling_is_refused(imbalanced):
    with pytest.raises(ValueError, match="sampling='weighted'.*uniform, balanced"):
        _data(imbalanced, True, "weighted")


@pytest.mark.parametrize("in_memory", [True, False], ids=["memory", "streamed"])
def test_evaluation_shards_count_every_image_once(imbalanced, in_memory):
    """Two processes evaluate 51 images as 25 + 26: no image repeated to even out the shares (torch's
    DistributedSampler would, and the accuracy would count it twice)."""
    for per_class, total in ((0, 51), (5, 50)):
        kw = dict(augment="none", in_memory=in_memory, cache_dir="", workers=0, eval_batch_size=7)
        one = build_data(imbalanced, val_subset=per_class, **kw).val
        ranks = [build_data(imbalanced, val_subset=per_class, rank=r, world=2, **kw).val for r in (0, 1)]
        labels = torch.cat([y for _, y in one])
        shards = [torch.cat([y for _, y in r]) for r in ranks]
        assert sum(r.num_samples for r in ranks) == one.num_samples == len(labels) == total
        assert torch.equal(torch.cat(shards), labels)
