"""`senet train` / `senet eval` / `senet recipes` end to end on a tiny real subset, and their errors."""

from __future__ import annotations

import json
import re

import pytest
import torch
import yaml

import senet
from senet.cli import main
from senet.data import build_data
from senet.train import load_checkpoint


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_recipes_lists_the_shipped_recipes(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert "cifar10-quick" in out and "imagenet" in out and "senet154" in out
    assert main(["recipes", "imagenet"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["lr"] == 0.6


@pytest.mark.parametrize(
    "change, message",
    [
        ({"recipe": "cifar10-quik"}, "unknown recipe 'cifar10-quik'"),
        ({"epochs": "abc"}, "field 'epochs' must be int, got 'abc'"),
        ({"lr": "-3"}, "lr=-3.0 must be > 0"),
        ({"data-dir": "/nonexistent/cifar"}, "data folder /nonexistent/cifar does not exist"),
        ({"model": "se_resnet21"}, "Unknown model 'se_resnet21'"),
    ],
)
def test_setup_errors_are_one_line(capsys, tmp_path, change, message):
    args = {"recipe": "cifar10-quick", "data-dir": str(tmp_path), "out": str(tmp_path / "run"), **change}
    argv = ["train"] + [x for k, v in args.items() for x in (f"--{k}", v)]
    assert main(argv) == 2
    line = _error_line(capsys)
    assert line.startswith("senet train: error: ") and message in line
    assert not (tmp_path / "run" / "last.pt").exists()


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as e:
        main(["train", *argv, "--help"])
    assert e.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


def test_help_gives_each_field_its_meaning_and_the_recipes_default(capsys):
    from senet.train import Config

    plain = _help(capsys)
    assert re.search(
        r"--lr LR peak learning rate \(per lr_base_batch images when that is set\) \[default: 0\.1\]", plain
    )
    assert "give --recipe NAME to see its defaults" in plain
    quick = _help(capsys, "--recipe", "cifar10-quick")
    assert "defaults shown are cifar10-quick's" in quick
    assert re.search(r"--lr LR peak learning rate [^\[]*\[default: 0\.2\]", quick)  # the recipe's lr
    assert re.search(r"--schedule SCHEDULE lr schedule: [^\[]*\[default: triangle\]", quick)
    for name, meaning in Config.meanings().items():  # one source: a field without a meaning fails here
        assert meaning, f"Config.{name} has no meaning"
        if name != "recipe":
            assert f"--{name.replace('_', '-')}" in plain and meaning.split(" (")[0][:30] in plain


def test_list_fields_take_several_values(capsys, tmp_path):
    from senet.cli import _config_overrides, build_parser

    args = build_parser().parse_args(
        ["train", "--recipe", "x", "--mean", "0.5", "0.4", "0.3", "--milestones", "3,4"]
    )
    cfg = senet.train.load_config("cifar10-quick", overrides=_config_overrides(args))
    assert cfg.mean == [0.5, 0.4, 0.3] and cfg.milestones == [3, 4]


def test_unknown_field_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--recipe", "cifar10-quick", "--epoch", "3"])
    assert e.value.code == 2 and "unrecognized arguments: --epoch" in capsys.readouterr().err


def test_unwritable_out_is_one_line_error(capsys, cifar10_jpeg, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    argv = [
        "train",
        "--recipe",
        "cifar10-quick",
        "--data-dir",
        str(cifar10_jpeg),
        "--out",
        str(blocker / "run"),
    ]
    assert main(argv) == 2
    assert "cannot write to --out" in _error_line(capsys)


def test_run_folder_and_eval(capsys, tiny, tmp_path):
    assert main(tiny(epochs=2)) == 0
    out = capsys.readouterr().out
    assert "epoch   1/2" in out and "done: resnet20 test top-1" in out
    run = tmp_path / "run"
    names = {p.name for p in run.iterdir()}
    assert {"config.yaml", "metrics.jsonl", "last.pt", "best.pt", "curves.png", "events"} <= names
    assert any((run / "events").iterdir())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in ("train_loss", "train_acc", "val_top1", "val_top5", "lr", "seconds", "images_per_s"):
        assert all(isinstance(r[key], float) for r in rows), key
    ckpt = load_checkpoint(run / "last.pt")  # weights_only=True
    assert ckpt["epoch"] == 2 and ckpt["format"] == 2  # one format: the architecture recorded once
    assert ckpt["arch"] == "resnet20" and ckpt["create_kwargs"]["num_classes"] == 10
    assert not {"model_name", "model_kwargs", "num_classes"} & set(ckpt)
    assert {"model", "optimizer", "scheduler", "rng", "config"} <= set(ckpt)
    # The checkpoint rebuilds the model, and its accuracy is what the run logged for the last epoch.
    model = senet.create_model(ckpt["arch"], **ckpt["create_kwargs"])
    model.load_state_dict(ckpt["model"])
    assert main(["eval", "--checkpoint", str(run / "last.pt"), "--data-dir", str(tmp_path / "..")]) == 2
    capsys.readouterr()
    data_dir = yaml.safe_load((run / "config.yaml").read_text())["data_dir"]
    r = senet.train.evaluate(run / "last.pt", data_dir, val_subset=5)
    assert r["images"] == 50 and r["top1"] == pytest.approx(rows[-1]["val_top1"])
    assert r["top1_err"] == pytest.approx(100 - r["top1"])
    assert json.loads((run / "eval-last-32.json").read_text())["top5"] == r["top5"]
    # --flip: the mean of the class probabilities of each image and its mirror image
    rf = senet.train.evaluate(run / "last.pt", data_dir, val_subset=5, flip=True)
    cfg = ckpt["config"]
    data = build_data(data_dir, train=False, val_subset=5, mean=cfg["mean"], std=cfg["std"], in_memory=True)
    model.eval()
    hits = 0
    with torch.no_grad():
        for x, y in data.val:
            p = model(x).softmax(1) + model(torch.flip(x, dims=[3])).softmax(1)
            hits += int((p.argmax(1) == y).sum())
    assert rf["flip"] and rf["images"] == 50 and rf["top1"] == pytest.approx(100 * hits / 50)
    assert rf["loss"] != pytest.approx(r["loss"], rel=1e-6)  # the mirror images were seen
    assert json.loads((run / "eval-last-32-flip.json").read_text())["top1"] == rf["top1"]
    # config.yaml repeats the run: it loads to the same config.
    again = senet.train.load_config(config=run / "config.yaml")
    assert again.to_dict() == yaml.safe_load((run / "config.yaml").read_text())
    assert torch.is_tensor(ckpt["rng"]["torch"])


def test_existing_run_needs_resume(capsys, tiny, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.pt").write_bytes(b"")
    assert main(tiny()) == 2
    assert "already holds a run" in _error_line(capsys)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(capsys, tiny, tmp_path):
    # Epoch 1 runs at lr 1e-6 * 1e4 (constant warm-up); from epoch 2 on, lr 1e4 diverges.
    argv = tiny(epochs=4, lr=1e4, warmup="constant", warmup_epochs=1, warmup_factor=1e-6, schedule="constant")
    assert main(argv) == 1
    line = _error_line(capsys)
    m = re.search(r"(?:loss|weights) became .*? (?:at|in) epoch (\d+).*Last good checkpoint: (\S+)\.", line)
    assert m, line
    epoch = int(m.group(1))
    assert epoch >= 2 and m.group(2) == str(tmp_path / "run" / "last.pt")
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["epoch"] == epoch - 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_streamed_imagefolder_path_with_cutout(capsys, tiny, tmp_path):
    # Files decoded per image by DataLoader workers (the ImageNet path), CIFAR augmentation + Cutout.
    assert (
        main(
            tiny(
                epochs=1, train_subset=5, val_subset=2, batch_size=10, in_memory="false", workers=1, cutout=16
            )
        )
        == 0
    )
    assert "done: resnet20" in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "run" / "last.pt")["config"]["in_memory"] is False


def test_progress_lines_without_a_terminal(tiny, cli):
    """With stdout/stderr not a terminal, an epoch still reports progress every few dozen steps."""
    r = cli(tiny(epochs=1, train_subset=100, warmup_epochs=0))  # 1000 images, batch 20: 50 steps
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if "step 25/50" in line]
    assert len(lines) == 1 and "loss" in lines[0] and "img/s" in lines[0], r.stdout


def test_log_interval_sets_the_progress_step(tiny, cli):
    r = cli(tiny(epochs=1, train_subset=10, warmup_epochs=0, log_interval=2))  # 100 images: 5 steps
    assert r.returncode == 0, r.stderr
    steps = re.findall(r"epoch 1/1 step (\d+)/5 ", r.stdout)
    assert steps == ["2", "4"], r.stdout
