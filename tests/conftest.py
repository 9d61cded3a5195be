"""Shared test fixtures: seeded RNG, the real data sets folder (skipped with a reason when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

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
