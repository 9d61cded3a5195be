"""Shared test fixtures: seeded RNG, the real data sets folder (skipped with a reason when absent),
BN statistics measured on data."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("SENET_DATASETS", REPO.parent / "shared" / "datasets"))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def cifar10_jpeg() -> Path:
    """The real CIFAR-10 copy in ../shared/datasets (ImageFolder layout)."""
    path = DATASETS / "cifar10-jpeg"
    if not (path / "train").is_dir():
        pytest.skip(f"real data set not found at {path} (set SENET_DATASETS to the shared/datasets folder)")
    return path


def _measure_bn(
    model: nn.Module, size: int = 64, *, batch: int = 8, affine: bool = True, seed: int = 1
) -> nn.Module:
    """Eval-mode ``model`` whose BNs hold statistics measured on one random batch, as a trained network's.

    With ``affine`` the BN scales and shifts are randomised first, so that a mis-mapped or mis-folded
    BN tensor shows in the outputs. Measured (not random) statistics keep activations O(1) through
    deep networks: random statistics make a 100-layer network blow logits up to ~1e3 and amplify
    float rounding chaotically, and fresh ones (mean 0, var 1) would let a broken BN path pass.
    """
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        if affine and m.affine:
            with torch.no_grad():
                m.weight.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.bias.copy_(0.2 * torch.rand(m.num_features, generator=g) - 0.1)
        m.reset_running_stats()
        m.momentum = None  # cumulative average: the statistics of the one batch below
    if bns:
        first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
        in_chans = getattr(model, "in_chans", first_conv.in_channels)
        model.train()
        with torch.no_grad():
            model(torch.randn(batch, in_chans, size, size, generator=g))
    for m in bns:
        m.momentum = 0.1
    return model.eval()


@pytest.fixture
def measure_bn() -> Callable[..., nn.Module]:
    """``measure_bn(model, size=64, *, batch=8, affine=True)``: see :func:`_measure_bn`."""
    return _measure_bn


@pytest.fixture(scope="session")
def cifar10_subset(cifar10_jpeg, tmp_path_factory) -> Path:
    """An ImageFolder tree over the real CIFAR-10 copy: all of train/ (a link) and the first 10 test
    images of each class in test/ (100 images), for evaluation and prediction tests."""
    root = tmp_path_factory.mktemp("cifar10-subset")
    (root / "train").symlink_to(cifar10_jpeg / "train")
    for cls in sorted(p for p in (cifar10_jpeg / "test").iterdir() if p.is_dir()):
        (root / "test" / cls.name).mkdir(parents=True)
        for f in sorted(cls.iterdir())[:10]:
            (root / "test" / cls.name / f.name).symlink_to(f)
    return root


@pytest.fixture(scope="session")
def trained_cifar(cifar10_jpeg, tmp_path_factory) -> Path:
    """last.pt of a short real run (SE-ResNet-20, 30 images per class, 3 epochs: ~25% top-1, so that
    its predictions vary from image to image)."""
    from senet.train import load_config, train

    out = tmp_path_factory.mktemp("trained-cifar") / "run"
    fields = dict(model="se_resnet20", train_subset=30, val_subset=10, batch_size=30, epochs=3, lr=0.05)
    fields.update(warmup_epochs=0.5, threads=1, cache_dir="", seed=7)
    fields.update(data_dir=str(cifar10_jpeg), out=str(out))
    train(load_config("cifar10-quick", overrides=fields))
    return out / "last.pt"
