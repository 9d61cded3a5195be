"""Real run folders for the report and excitation tests: a few training steps on the CIFAR-10 copy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


def _tiny_run(data: Path, out: Path, model: str) -> Path:
    from senet.train import load_config, train

    overrides = {
        "model": model,
        "data_dir": str(data),
        "out": str(out),
        "train_subset": 2,
        "val_subset": 3,
        "batch_size": 10,
        "eval_batch_size": 30,
        "epochs": 1,
        "warmup_epochs": 0,
        "cache_dir": "",
        "workers": 0,
        "seed": 3,
    }
    threads = torch.get_num_threads()
    try:
        train(load_config("cifar10-quick", overrides=overrides))
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="session")
def run20(cifar10_jpeg, tmp_path_factory) -> Path:
    """A finished one-epoch se_resnet20 run (2 training steps of 10 images)."""
    return _tiny_run(cifar10_jpeg, tmp_path_factory.mktemp("runs") / "se_resnet20", "se_resnet20")


@pytest.fixture(scope="session")
def run110(cifar10_jpeg, tmp_path_factory) -> Path:
    """A finished one-epoch se_resnet110 run (a network of the paper's Table 4)."""
    return _tiny_run(cifar10_jpeg, tmp_path_factory.mktemp("runs") / "se_resnet110", "se_resnet110")
