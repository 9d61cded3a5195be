"""A tiny real training run (seconds): ResNet-20 on 10 images per class of the CIFAR-10 copy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def tiny_args(data: Path, out: Path, **extra: object) -> list[str]:
    """CLI arguments of a 2-epoch run on 100 training images, no cache written, one thread."""
    fields = {
        "model": "resnet20",
        "train-subset": 10,
        "val-subset": 5,
        "batch-size": 20,
        "epochs": 2,
        "warmup-epochs": 0.5,
        "threads": 1,
        "cache-dir": "",
        "seed": 7,
        **{k.replace("_", "-"): v for k, v in extra.items()},
    }
    args = ["train", "--recipe", "cifar10-quick", "--data-dir", str(data), "--out", str(out)]
    for k, v in fields.items():
        args += [f"--{k}", str(v)]
    return args


def run_cli(args: list[str], timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "senet", *args], capture_output=True, text=True, timeout=timeout, env=env, **kw
    )


@pytest.fixture
def tiny(cifar10_jpeg, tmp_path):
    return lambda out="run", **extra: tiny_args(cifar10_jpeg, tmp_path / out, **extra)


@pytest.fixture
def cli():
    """Run ``python -m senet ARGS`` in a subprocess (one thread)."""
    return run_cli


@pytest.fixture(scope="module")
def uninterrupted_25(cifar10_jpeg, tmp_path_factory):
    """The run folder of a 2-epoch tiny run of 25 steps an epoch, never interrupted."""
    out = tmp_path_factory.mktemp("uninterrupted") / "full"
    run = run_cli(tiny_args(cifar10_jpeg, out, train_subset=50, log_interval=1))
    assert run.returncode == 0, run.stderr
    return out
