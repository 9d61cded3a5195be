"""Kill a training process with SIGKILL mid-run, resume it, and get the uninterrupted run's weights."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import torch

from senet.train import load_checkpoint


def test_sigkill_then_resume_equals_uninterrupted(tiny, cli, tmp_path):
    extra = dict(epochs=4, train_subset=20)  # 10 steps per epoch
    full = cli(tiny("full", **extra))
    assert full.returncode == 0, full.stderr

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "senet", *tiny("killed", **extra)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    last = tmp_path / "killed" / "last.pt"
    deadline = time.time() + 240
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # into the next epoch
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(last)["epoch"]
    assert 1 <= killed_at < 4

    resumed = cli(tiny("killed", resume="true", **extra))
    assert resumed.returncode == 0, resumed.stderr
    a = load_checkpoint(tmp_path / "full" / "last.pt")
    b = load_checkpoint(last)
    assert a["epoch"] == b["epoch"] == 4
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=0, atol=1e-6, msg=key)
    lines = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4  # epochs after the checkpoint were logged once, not twice
