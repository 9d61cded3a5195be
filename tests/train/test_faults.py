"""Faults during training: signals, kills during checkpoint writes, a full disk, bad run folders.

Each test checks the message the user gets and what is left on disk; the resumed runs must end equal
to an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from senet.train import load_checkpoint
from senet.train.runlog import read_metrics

TIMING = {"seconds", "eval_seconds", "images_per_s"}
# python -m senet with os.fsync slowed down: a checkpoint write then lasts long enough to kill in it.
SLOW_FSYNC = (
    "import os, runpy, time; _f = os.fsync; "
    "os.fsync = lambda fd: (time.sleep(float(os.environ.get('FSYNC_DELAY', '0'))), _f(fd))[1]; "
    "runpy.run_module('senet', run_name='__main__')"
)


def _start(args: list[str], fsync_delay: float = 0.0, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FSYNC_DELAY": str(fsync_delay)}
    return subprocess.Popen(
        [sys.executable, "-c", SLOW_FSYNC, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kw,
    )


def _same_run(a: Path, b: Path, atol: float = 0.0) -> None:
    """Same final weights and the same metrics (timings aside) in two run folders."""
    ca, cb = load_checkpoint(a / "last.pt"), load_checkpoint(b / "last.pt")
    assert ca["epoch"] == cb["epoch"] and "partial" not in cb
    for key, value in ca["model"].items():
        torch.testing.assert_close(cb["model"][key], value, rtol=0, atol=atol, msg=key)
    strip = [{k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(a / "metrics.jsonl")]
    got = [{k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(b / "metrics.jsonl")]
    if atol == 0:
        assert got == strip
    else:
        assert [r["epoch"] for r in got] == [r["epoch"] for r in strip]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_epoch_saves_its_step_and_resumes_exactly(sig, uninterrupted_25, tiny, cli, tmp_path):
    args = tiny("stopped", train_subset=50, log_interval=1)
    proc = _start(args)
    for line in proc.stdout:  # progress lines, one a step (no terminal)
        if "epoch 2/2 step 3/25" in line:
            proc.send_signal(sig)
            break
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + sig, err
    (line,) = [ln for ln in err.splitlines() if ln.strip()]
    assert f"interrupted ({sig.name}) at epoch 2 step" in line and "resume with --resume" in line
    assert "Traceback" not in err
    ckpt = load_checkpoint(tmp_path / "stopped" / "last.pt")
    assert ckpt["epoch"] == 1 and ckpt["partial"]["epoch"] == 2 and 3 <= ckpt["partial"]["step"] < 25
    assert len(read_metrics(tmp_path / "stopped" / "metrics.jsonl")) == 1

    resumed = cli(tiny("stopped", train_subset=50, log_interval=1, resume="true"))
    assert resumed.returncode == 0, resumed.stderr
    _same_run(uninterrupted_25, tmp_path / "stopped")


def test_kills_at_random_moments_and_during_checkpoint_writes_then_resume(tiny, cli, tmp_path):
    """Fault injection: kill -9 three times (twice while a checkpoint is being written) and SIGTERM
    once, resuming after each; the run ends equal to an uninterrupted one."""
    extra = dict(epochs=3, train_subset=20, log_interval=1)  # 10 steps an epoch
    full = cli(tiny("full", **extra))
    assert full.returncode == 0, full.stderr
    out = tmp_path / "faulty"
    rng = random.Random(4)
    landed_in_write = 0
    for fault in ["kill-in-write", "kill", "kill-in-write", "term"]:
        resume = (out / "last.pt").exists()
        proc = _start(tiny("faulty", **extra, resume=str(resume).lower()), fsync_delay=0.4)
        deadline = time.time() + 240
        if fault == "kill-in-write":
            while proc.poll() is None and time.time() < deadline:
                if any(out.glob(".*.pt.*.tmp")):  # inside atomic_save: the temporary file exists
                    proc.kill()
                    landed_in_write += 1
                    break
                time.sleep(0.005)
        elif fault == "kill":
            time.sleep(rng.uniform(2.0, 6.0))  # start-up takes ~2-4 s: before or in training
            if proc.poll() is None:
                proc.kill()
        else:  # SIGTERM at a random moment of training (after the first progress line)
            next(line for line in proc.stdout if " step " in line)
            time.sleep(rng.uniform(0.0, 0.5))
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=240)
        assert proc.returncode in (0, -signal.SIGKILL, 128 + signal.SIGTERM), err
        assert "Traceback" not in err
        if (out / "last.pt").exists():
            load_checkpoint(out / "last.pt")  # never a half-written checkpoint
    assert landed_in_write == 2
    final = cli(tiny("faulty", **extra, resume=str((out / "last.pt").exists()).lower()))
    assert final.returncode == 0, final.stderr
    assert not list(out.glob(".*.tmp")), "temporary files of killed writes are removed"
    _same_run(tmp_path / "full", out, atol=1e-6)


def test_a_full_disk_is_one_line_and_keeps_the_previous_checkpoint(tiny, cli, tmp_path):
    first = cli(tiny("run", epochs=1))
    assert first.returncode == 0, first.stderr
    before = (tmp_path / "run" / "last.pt").read_bytes()
    limit = 300_000  # bytes: the logs fit, a checkpoint (~2 MB) does not

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    full = cli(tiny("run", epochs=2, resume="true"), preexec_fn=small_disk)
    assert full.returncode == 2, full.stderr
    (line,) = [ln for ln in full.stderr.splitlines() if ln.strip()]
    assert line.startswith("senet train: error: could not write ") and "disk full" in line
    assert "the previous file is unchanged" in line
    assert (tmp_path / "run" / "last.pt").read_bytes() == before
    assert not list((tmp_path / "run").glob(".*.tmp"))
    again = cli(tiny("run", epochs=2, resume="true"))
    assert again.returncode == 0, again.stderr
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 2


def test_checkpoints_get_the_run_folders_permissions(tiny, cli, tmp_path):
    run = cli(tiny("run", epochs=1))
    assert run.returncode == 0, run.stderr
    mode = stat.S_IMODE((tmp_path / "run" / "last.pt").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "run" / "metrics.jsonl").stat().st_mode)


def test_resume_with_fewer_epochs_is_refused_before_anything_is_written(tiny, cli, tmp_path):
    assert cli(tiny("run", epochs=2)).returncode == 0
    config = (tmp_path / "run" / "config.yaml").read_text()
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text()
    again = cli(tiny("run", epochs=1, resume="true"))
    assert again.returncode == 2
    assert "has already trained 2 epochs, more than --epochs 1: give --epochs 2 or more" in again.stderr
    assert (tmp_path / "run" / "config.yaml").read_text() == config
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == metrics


def test_resume_with_a_lower_lr_is_allowed_and_stated(tiny, cli, tmp_path):
    """The divergence advice (lower --lr, then --resume) can be followed."""
    assert cli(tiny("run", epochs=1, lr=0.2, schedule="constant", warmup_epochs=0)).returncode == 0
    again = cli(tiny("run", epochs=2, lr=0.05, schedule="constant", warmup_epochs=0, resume="true"))
    assert again.returncode == 0, again.stderr
    assert "resumed with lr 0.05 (the run so far used 0.2)" in again.stdout
    assert [r["lr"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")] == pytest.approx([0.2, 0.05])


def test_resume_refuses_data_with_other_classes(tiny, cli, cifar10_jpeg, tmp_path):
    assert cli(tiny("run", epochs=1)).returncode == 0
    data = tmp_path / "renamed"
    for split in ("train", "test"):
        for cls in sorted(p.name for p in (cifar10_jpeg / split).iterdir()):
            (data / split).mkdir(parents=True, exist_ok=True)
            (data / split / ("kitty" if cls == "cat" else cls)).symlink_to(cifar10_jpeg / split / cls)
    args = tiny("run", epochs=2, resume="true")
    args[args.index("--data-dir") + 1] = str(data)
    again = cli(args)
    assert again.returncode == 2
    assert "classes only in the checkpoint: ['cat'], only in" in again.stderr and "['kitty']" in again.stderr


def test_a_bad_metrics_line_is_named(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"epoch": 1, "val_top1": 10.0}) + "\n{garbage\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl line 2 is not a JSON record"):
        read_metrics(path)


def test_stale_temporary_files_are_removed_on_resume(tiny, cli, tmp_path):
    assert cli(tiny("run", epochs=1)).returncode == 0
    stale = tmp_path / "run" / ".last.pt.abc123.tmp"
    stale.write_bytes(b"\0" * 1000)
    again = cli(tiny("run", epochs=2, resume="true"))
    assert again.returncode == 0, again.stderr
    assert not stale.exists()
    assert "removed the temporary files of an interrupted save" in again.stdout
