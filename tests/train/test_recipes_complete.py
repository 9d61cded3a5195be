"""The paper's training, complete (issue 16): plateau schedule, EMA, frozen BN, and every recipe runnable.

Short real runs on the CIFAR-10 copy (ResNet-20, a few images per class, one thread).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from senet.train import list_recipes, load_checkpoint, load_config, train
from senet.train.schedule import LRFactor, PlateauDecay


def _tiny(data: Path, out: Path, recipe: str = "cifar10-quick", **fields):
    base = dict(model="resnet20", train_subset=10, val_subset=5, batch_size=20, epochs=3, lr=0.05)
    base.update(warmup_epochs=0, threads=1, cache_dir="", seed=5, schedule="constant")
    base.update(data_dir=str(data), out=str(out), **fields)
    return load_config(recipe, overrides=base)


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


# --- schedule: plateau ---------------------------------------------------------------------------------


def test_plateau_decays_after_patience_epochs_without_improvement():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    factor = LRFactor("plateau", 100, 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    plateau = PlateauDecay(opt, factor, gamma=0.1, patience=2)
    decays = []
    for loss in [1.0, 0.9, 0.95, 0.92, 0.91, 0.8, 0.85, 0.85, 0.85]:
        for _ in range(10):
            opt.step()
            sched.step()
        decays.append(plateau.step(loss))
    # bad epochs after 0.9: 0.95, 0.92, 0.91 -> decay at the third; after 0.8: three more -> decay
    assert decays == [False, False, False, False, True, False, False, False, True]
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.01)
    assert factor.scale == pytest.approx(0.01)


def test_plateau_run_decays_and_resumes_exactly(cifar10_jpeg, tmp_path):
    # Epochs 1-2 train only the classifier (backbone and its BN statistics frozen), with an lr too
    # small to move it: the validation loss of epoch 2 cannot improve on epoch 1's by torch's relative
    # 1e-4, so patience 0 decays the lr for epoch 3.
    fields = dict(schedule="plateau", plateau_patience=0, lr=1e-9, gamma=0.5, freeze_backbone_epochs=2)
    train(_tiny(cifar10_jpeg, tmp_path / "full", **fields))
    lrs = [m["lr"] for m in _metrics(tmp_path / "full")]
    assert lrs == pytest.approx([1e-9, 1e-9, 0.5e-9], rel=1e-9)

    train(_tiny(cifar10_jpeg, tmp_path / "part", **{**fields, "epochs": 2}))
    train(_tiny(cifar10_jpeg, tmp_path / "part", **fields, resume=True))
    a, b = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(tmp_path / "part" / "last.pt")
    assert a["plateau"] == b["plateau"]
    assert [m["lr"] for m in _metrics(tmp_path / "part")] == lrs
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=0, atol=0, msg=key)


# --- EMA -------------------------------------------------------------------------------------------------


def test_ema_is_updated_after_every_step_and_reported(cifar10_jpeg, tmp_path):
    # decay ~0: the average is the weights after the last step, buffers included
    train(_tiny(cifar10_jpeg, tmp_path / "now", epochs=1, ema_decay=1e-12))
    ckpt = load_checkpoint(tmp_path / "now" / "last.pt")
    assert ckpt["ema_steps"] == 5  # 100 images / batch 20
    for key, value in ckpt["model"].items():
        torch.testing.assert_close(ckpt["ema"][key], value, rtol=1e-6, atol=1e-7, msg=key)
    m = _metrics(tmp_path / "now")[0]
    assert m["ema_val_top1"] == pytest.approx(m["val_top1"]) and m["ema_val_loss"] == pytest.approx(
        m["val_loss"], rel=1e-4
    )

    train(_tiny(cifar10_jpeg, tmp_path / "slow", epochs=1, ema_decay=0.9))
    slow = load_checkpoint(tmp_path / "slow" / "last.pt")
    moved = [
        k for k, v in slow["model"].items() if v.is_floating_point() and not torch.equal(slow["ema"][k], v)
    ]
    assert len(moved) > 10  # a real average lags the weights


def test_ema_off_by_default_and_resumable(cifar10_jpeg, tmp_path):
    train(_tiny(cifar10_jpeg, tmp_path / "off", epochs=1))
    assert "ema" not in load_checkpoint(tmp_path / "off" / "last.pt")
    assert "ema_val_top1" not in _metrics(tmp_path / "off")[0]

    train(_tiny(cifar10_jpeg, tmp_path / "full", ema_decay=0.8))
    train(_tiny(cifar10_jpeg, tmp_path / "part", ema_decay=0.8, epochs=2))
    train(_tiny(cifar10_jpeg, tmp_path / "part", ema_decay=0.8, resume=True))
    a, b = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(tmp_path / "part" / "last.pt")
    assert a["ema_steps"] == b["ema_steps"] == 15
    for key, value in a["ema"].items():
        torch.testing.assert_close(b["ema"][key], value, rtol=0, atol=0, msg=key)
    assert [m["ema_val_top1"] for m in _metrics(tmp_path / "part")] == [
        m["ema_val_top1"] for m in _metrics(tmp_path / "full")
    ]


# --- frozen BN (SENet-154 recipe) ------------------------------------------------------------------------


def _bn_state(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    bn = {n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    return {k: v for k, v in state.items() if k.rsplit(".", 1)[0] in bn}


def test_frozen_bn_epochs_keep_bn_still_and_the_rest_training(cifar10_jpeg, tmp_path):
    one = train(_tiny(cifar10_jpeg, tmp_path / "one", epochs=1))
    two = train(_tiny(cifar10_jpeg, tmp_path / "two", epochs=2, freeze_bn_epochs=1))
    s1, s2 = one.model.state_dict(), two.model.state_dict()
    bn1, bn2 = _bn_state(s1, one.model), _bn_state(s2, two.model)
    assert len(bn1) > 20
    for key, value in bn1.items():  # epoch 2 (frozen) moved no BN parameter or statistic
        assert torch.equal(bn2[key], value), key
    moved_in_epoch_1 = [k for k, v in bn1.items() if k.endswith("running_mean") and v.abs().sum() > 0]
    assert moved_in_epoch_1  # before the frozen epochs BN statistics do move (they start at 0)
    weights = [k for k in s1 if k not in bn1 and s1[k].is_floating_point()]
    assert all(not torch.equal(s1[k], s2[k]) for k in weights)  # the rest trained on in epoch 2


# --- every recipe runnable as written ---------------------------------------------------------------------

SLOW_RECIPES = {"senet154", "senet154-320", "inception-resnet-v2", "places365", "cifar100-shake-even29"}


@pytest.fixture(scope="module")
def two_class_folder(cifar10_jpeg, tmp_path_factory) -> Path:
    """2 classes x 2 real CIFAR images in train/ and test/: two steps of batch 2 per epoch."""
    root = tmp_path_factory.mktemp("two-class")
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for f in sorted((cifar10_jpeg / split / cls).iterdir())[:2]:
                (root / split / cls / f.name).symlink_to(f)
    return root


@pytest.mark.parametrize(
    "recipe",
    [pytest.param(r, marks=pytest.mark.slow) if r in SLOW_RECIPES else r for r in list_recipes()],
)
def test_every_recipe_trains_two_steps_as_written(recipe, two_class_folder, tmp_path):
    """The recipe's model, data pipeline, sampler, optimiser and schedule, built by the engine and
    stepped twice; only the batch (2), the length (1 epoch), workers (0) and threads change."""
    written = load_config(recipe)
    cfg = load_config(
        recipe,
        overrides=dict(
            data_dir=str(two_class_folder), out=str(tmp_path / "run"), batch_size=2, eval_batch_size=2,
            epochs=1, workers=0, threads=1, cache_dir="", freeze_bn_epochs=0,
        ),
    )  # fmt: skip
    result = train(cfg)
    (record,) = _metrics(tmp_path / "run")
    assert record["images_per_s"] > 0 and torch.isfinite(torch.tensor(record["train_loss"]))
    assert result.history[-1]["epoch"] == 1
    saved = load_checkpoint(tmp_path / "run" / "last.pt")
    assert saved["scheduler"]["last_epoch"] == 2  # two optimiser steps
    for key in ("model", "model_kwargs", "augment", "sampling", "schedule", "weight_decay", "image_size"):
        assert saved["config"][key] == getattr(written, key), key
    optimizer = saved["optimizer"]["param_groups"][0]
    assert optimizer["momentum"] == written.momentum and optimizer["weight_decay"] == written.weight_decay
    assert optimizer["nesterov"] == written.nesterov


def test_eval_ema_scores_the_weight_average(cifar10_jpeg, tmp_path, capsys):
    """`senet eval --ema` evaluates the average the run kept, as the run's own EMA line did."""
    from senet.cli import main
    from senet.train import evaluate

    train(_tiny(cifar10_jpeg, tmp_path / "run", epochs=1, ema_decay=0.5))
    record = _metrics(tmp_path / "run")[0]
    last = tmp_path / "run" / "last.pt"
    ema = evaluate(last, cifar10_jpeg, val_subset=5, ema=True)
    raw = evaluate(last, cifar10_jpeg, val_subset=5)
    assert ema["top1"] == pytest.approx(record["ema_val_top1"]) and ema["ema"] is True
    assert raw["top1"] == pytest.approx(record["val_top1"])
    assert ema["loss"] == pytest.approx(record["ema_val_loss"], rel=1e-4)
    assert ema["loss"] != pytest.approx(raw["loss"], rel=1e-6)  # another set of weights
    train(_tiny(cifar10_jpeg, tmp_path / "plain", epochs=1))
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(tmp_path / "plain" / "last.pt"),
                "--data-dir",
                str(cifar10_jpeg),
                "--ema",
            ]
        )
        == 2
    )
    assert "--ema-decay" in capsys.readouterr().err
