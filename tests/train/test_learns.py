"""Training on a real CIFAR-10 subset reaches test accuracy far above chance (10%)."""

from __future__ import annotations

import pytest

from senet.train import load_config, train


def _train(data, tmp_path, **overrides):
    base = dict(data_dir=str(data), out=str(tmp_path / "run"), cache_dir="", seed=0, warmup_epochs=0.5)
    return train(load_config("cifar10-quick", overrides={**base, **overrides}))


def test_narrow_se_resnet20_learns_in_120_steps(cifar10_jpeg, tmp_path):
    # 1,000 training images, 4 epochs of 31 steps; a quarter-cost (half-width) SE-ResNet-20 keeps it fast.
    r = _train(
        cifar10_jpeg,
        tmp_path,
        model_kwargs={"widths": [8, 16, 32]},
        train_subset=100,
        val_subset=30,
        batch_size=32,
        epochs=4,
        lr=0.05,
    )
    assert r.history[-1]["train_loss"] < r.history[0]["train_loss"]
    assert r.final["val_top1"] > 22.0, r.history  # 300 balanced test images; chance is 10%


@pytest.mark.slow
def test_se_resnet20_reaches_40_percent_in_300_steps(cifar10_jpeg, tmp_path):
    # 5,000 training images, 4 epochs of 78 steps (312 steps of 64 images).
    r = _train(
        cifar10_jpeg, tmp_path, model="se_resnet20", train_subset=500, val_subset=100, batch_size=64, epochs=4
    )
    assert r.final["val_top1"] > 40.0, r.history  # 1,000 balanced test images; chance is 10%
