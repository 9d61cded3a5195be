"""`senet compare`: paired SE-vs-plain runs, their statistics, resumption and refusals."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from senet.train.compare import compare, paired_summary, plan_runs, t_quantile_975


def test_t_quantiles_match_tables():
    # Student's t, two-sided 95% (scipy.stats.t.ppf(0.975, df)): 4.302653, 2.262157, 2.021075, 1.983972
    assert t_quantile_975(2) == pytest.approx(4.302653, abs=1e-6)
    assert t_quantile_975(9) == pytest.approx(2.262157, abs=1e-6)
    assert t_quantile_975(40) == pytest.approx(2.021075, abs=1e-4)
    assert t_quantile_975(100) == pytest.approx(1.983972, abs=1e-4)
    with pytest.raises(ValueError, match="at least 2 samples"):
        t_quantile_975(0)


def test_paired_interval_on_known_numbers():
    # d = (0.6, -0.1, 0.8): mean 0.433333, sd 0.472582, half-width 4.302653 * 0.472582 / sqrt(3)
    # = 1.173958 (computed with scipy.stats), interval [-0.740624, 1.607291].
    s = paired_summary([93.1, 92.8, 93.5], [92.5, 92.9, 92.7])
    assert s["n"] == 3
    assert s["diff"]["mean"] == pytest.approx(0.433333, abs=1e-6)
    assert s["diff"]["std"] == pytest.approx(0.472582, abs=1e-6)
    assert s["diff"]["ci95"] == pytest.approx([-0.740624, 1.607291], abs=1e-6)
    assert s["se"]["mean"] == pytest.approx(93.133333, abs=1e-6)
    assert paired_summary([1.0], [0.5])["diff"]["ci95"] is None
    with pytest.raises(ValueError, match="as many"):
        paired_summary([1.0, 2.0], [1.0])


def _fields(**extra: object) -> dict:
    return {
        "train_subset": 10,
        "val_subset": 5,
        "batch_size": 20,
        "epochs": 2,
        "warmup_epochs": 0.5,
        "threads": 1,
        "cache_dir": "",
        **extra,
    }


def test_identity_frozen_se_gives_exactly_zero_differences(cifar10_jpeg, tmp_path):
    """Identity-initialised SE blocks that never train compute x * 1: with the same data order and the
    same initial weights of the shared layers, the SE run is the plain run, bit for bit."""
    fields = _fields(
        data_dir=str(cifar10_jpeg),
        model_kwargs={"init": "identity"},
        freeze_params=["*.se.*"],
    )
    runs = plan_runs("cifar10-quick", "se_resnet20", 1, tmp_path, fields)
    assert [r.model for r in runs] == ["se_resnet20", "resnet20"]
    summary = compare(runs, tmp_path, echo=False)
    assert summary["paired_seeds"] == [0]
    assert summary["top1"]["diff"]["values"] == [0.0]
    se_hist = [json.loads(x) for x in (tmp_path / "se_resnet20/seed0/metrics.jsonl").read_text().splitlines()]
    pl_hist = [json.loads(x) for x in (tmp_path / "resnet20/seed0/metrics.jsonl").read_text().splitlines()]
    for a, b in zip(se_hist, pl_hist, strict=True):
        for key in ("train_loss", "train_acc", "val_loss", "val_top1", "val_top5"):
            assert a[key] == b[key], key
    se_w = torch.load(tmp_path / "se_resnet20/seed0/last.pt", weights_only=True)["model"]
    pl_w = torch.load(tmp_path / "resnet20/seed0/last.pt", weights_only=True)["model"]
    for key, value in pl_w.items():
        assert torch.equal(value, se_w[key]), key
    assert (tmp_path / "compare.md").is_file() and (tmp_path / "compare.png").stat().st_size > 0


def test_trainable_se_differs_from_plain(cifar10_jpeg, tmp_path):
    """The control: with SE blocks that train, the same pairing gives different runs."""
    runs = plan_runs("cifar10-quick", "resnet20", 1, tmp_path, _fields(data_dir=str(cifar10_jpeg), epochs=1))
    assert [r.model for r in runs] == ["se_resnet20", "resnet20"]  # the plain name picks its SE twin
    summary = compare(runs, tmp_path, echo=False)
    se_run, plain_run = summary["runs"]
    assert se_run["state"] == plain_run["state"] == "done"
    a = json.loads((tmp_path / "se_resnet20/seed0/metrics.jsonl").read_text().splitlines()[0])
    b = json.loads((tmp_path / "resnet20/seed0/metrics.jsonl").read_text().splitlines()[0])
    assert a["train_loss"] != b["train_loss"]


def _cli_args(data, out, **extra) -> list[str]:
    args = [
        "compare",
        "--recipe",
        "cifar10-quick",
        "--model",
        "se_resnet20",
        "--seeds",
        "1",
        "--out",
        str(out),
    ]
    for k, v in _fields(data_dir=str(data), **extra).items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    return args


def test_kill_and_rerun_equals_uninterrupted(cifar10_jpeg, tmp_path, cli):
    """kill -9 in the middle of the experiment, run the same command again: the final figures equal
    those of an uninterrupted experiment."""
    whole = tmp_path / "whole"
    r = cli(_cli_args(cifar10_jpeg, whole, epochs=3, train_subset=20))
    assert r.returncode == 0, r.stderr
    assert "Paired seeds: 1" in r.stdout

    cut = tmp_path / "cut"
    args = [sys.executable, "-m", "senet", *_cli_args(cifar10_jpeg, cut, epochs=3, train_subset=20)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        ckpt = cut / "se_resnet20" / "seed0" / "last.pt"
        while not ckpt.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert ckpt.exists(), "the first run wrote no checkpoint"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    r = cli(_cli_args(cifar10_jpeg, cut, epochs=3, train_subset=20))
    assert r.returncode == 0, r.stderr
    a = json.loads((whole / "compare.json").read_text())
    b = json.loads((cut / "compare.json").read_text())
    assert [x["top1"] for x in a["runs"]] == [x["top1"] for x in b["runs"]]
    assert [x["curve"] for x in a["runs"]] == [x["curve"] for x in b["runs"]]

    again = cli(_cli_args(cifar10_jpeg, cut, epochs=3, train_subset=20))
    assert again.returncode == 0 and again.stdout.count("finished (3 epochs), skipped") == 2


def test_refusals_name_the_problem(cifar10_jpeg, tmp_path, cli):
    r = cli(["compare", "--recipe", "cifar10-quick", "--model", "senet154", "--out", str(tmp_path / "x")])
    assert r.returncode == 2 and "no registered twin" in r.stderr and "Traceback" not in r.stderr
    r = cli(["compare", "--recipe", "cifar10-quick", "--seeds", "0", "--out", str(tmp_path / "x")])
    assert r.returncode == 2 and "argument --seeds: must be >= 1, got 0" in r.stderr
    r = cli(["compare", "--recipe", "cifar10-quick"])
    assert r.returncode == 2 and "--out" in r.stderr

    out = tmp_path / "exp"
    assert cli(_cli_args(cifar10_jpeg, out, epochs=1)).returncode == 0
    r = cli(_cli_args(cifar10_jpeg, out, epochs=1, lr=0.05))
    assert r.returncode == 2 and "another experiment" in r.stderr and "lr" in r.stderr

    summary = cli([*_cli_args(cifar10_jpeg, out, epochs=1), "--summary"])
    assert summary.returncode == 0 and "Paired seeds: 1" in summary.stdout


def test_second_command_on_the_same_out_is_refused(tmp_path):
    from senet.train.compare import _experiment_lock

    with _experiment_lock(tmp_path):
        code = (
            "import sys; from senet.train.compare import _experiment_lock\n"
            "try:\n    with _experiment_lock(__import__('pathlib').Path(sys.argv[1])): pass\n"
            "except ValueError as e:\n    print(e); sys.exit(3)\n"
        )
        r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 3 and "in use by another `senet compare`" in r.stdout


def test_freeze_params_pattern_must_match(cifar10_jpeg, tmp_path, cli, tiny):
    r = cli(tiny(freeze_params="*.nothing.*"))
    assert r.returncode == 2 and "matches no parameter" in r.stderr


def test_run_state_sees_a_run_in_progress(tmp_path):
    """A run folder whose training lock is held reads as running; released, as new/partial."""
    from senet.train.compare import run_state
    from senet.train.distributed import Dist
    from senet.train.engine import _run_lock

    (run,) = [r for r in plan_runs("cifar10-quick", "se_resnet20", 1, tmp_path) if r.model == "resnet20"]
    run.out.mkdir(parents=True)
    assert run_state(run) == ("new", 0)
    with _run_lock(run.out, Dist(device=torch.device("cpu"))):
        assert run_state(run) == ("running", 0)
        with pytest.raises(ValueError, match="being trained into by another process"):
            with _run_lock(run.out, Dist(device=torch.device("cpu"))):
                pass
    assert run_state(run) == ("new", 0)


def test_run_state_sees_a_checkpoint_behind_its_metrics(tmp_path):
    """A kill between the last metrics line and last.pt leaves a run to resume, not a finished one;
    finished runs copied without checkpoints (docs/results) stay finished."""
    import json

    from senet.train import save_checkpoint
    from senet.train.compare import run_state

    (run,) = [r for r in plan_runs("cifar10-quick", "se_resnet20", 1, tmp_path) if r.model == "resnet20"]
    run.out.mkdir(parents=True)
    epochs = run.config.epochs
    lines = "".join(json.dumps({"epoch": e, "val_top1": 50.0}) + "\n" for e in range(1, epochs + 1))
    (run.out / "metrics.jsonl").write_text(lines)
    assert run_state(run) == ("done", epochs)
    save_checkpoint({"epoch": epochs - 1}, run.out / "last.pt")
    assert run_state(run) == ("partial", epochs)
    save_checkpoint({"epoch": epochs}, run.out / "last.pt")
    assert run_state(run) == ("done", epochs)
