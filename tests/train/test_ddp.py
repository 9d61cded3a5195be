"""Two processes on CPU (torchrun, gloo) against one process with the same global batch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch

SCRIPT = r"""
import os, sys, torch
from senet.train import load_config, train

data, out, accum, sampling, ema = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], float(sys.argv[5])
overrides = dict(
    data_dir=data, out=out, model="resnet20", train_subset=8, val_subset=2, batch_size=16, accum_steps=accum,
    epochs=2, warmup_epochs=0.5, threads=1, cache_dir="", seed=5, sampling=sampling, ema_decay=ema,
)
result = train(load_config("cifar10-quick", overrides=overrides))
rank = int(os.environ.get("RANK", "0"))
torch.save({k: v.detach().clone() for k, v in result.model.state_dict().items()}, f"{out}/rank{rank}.pt")
"""


@pytest.mark.parametrize(("sampling", "ema"), [("uniform", "0"), ("balanced", "0.5")])
def test_two_processes_match_one_with_the_same_global_batch(cifar10_jpeg, tmp_path, sampling, ema):
    if shutil.which("torchrun") is None:
        pytest.skip("torchrun is not on PATH")
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run(
        [
            "torchrun",
            "--standalone",
            "--nproc_per_node=2",
            str(script),
            str(cifar10_jpeg),
            str(tmp_path / "ddp"),
            "1",
            sampling,
            ema,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    # One process, global batch 16 as two micro-batches of 8: per-batch BN statistics as on two ranks of 8.
    single = subprocess.run(
        [sys.executable, str(script), str(cifar10_jpeg), str(tmp_path / "one"), "2", sampling, ema],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    r0 = torch.load(tmp_path / "ddp" / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "ddp" / "rank1.pt", weights_only=True)
    ref = torch.load(tmp_path / "one" / "rank0.pt", weights_only=True)
    params = [k for k in r0 if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert len(params) > 20
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"ranks differ in {k}"
    moved = 0
    for k in params:
        torch.testing.assert_close(r0[k], ref[k], rtol=1e-4, atol=1e-5, msg=k)
    first = torch.load(tmp_path / "one" / "last.pt", weights_only=True)["model"]
    moved = sum(not torch.equal(first[k], ref[k]) for k in params)
    assert moved == 0  # last.pt holds the same final weights
    if float(ema):  # the weight average too, and its evaluation over both shards
        a = torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)["ema"]
        b = torch.load(tmp_path / "one" / "last.pt", weights_only=True)["ema"]
        for k in params:
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    # Only rank 0 wrote the run folder; its metrics cover the whole data (both shards).
    lines = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and "2 process(es)" in ddp.stdout
