"""The lr curve of shortened recipes (the warm-up cap) and of a resumed run given more epochs."""

from __future__ import annotations

import json

import pytest

from senet.train import LRFactor, load_config
from senet.train.schedule import MAX_WARMUP_FRACTION


def _curve(epochs: int, steps: int = 50) -> list[float]:
    cfg = load_config("cifar10-quick", overrides={"epochs": epochs})
    factor = LRFactor.from_config(cfg, steps)
    return [cfg.scaled_lr * factor(s) for s in range(epochs * steps)]


@pytest.mark.parametrize("epochs", [1, 3, 15])
def test_a_shortened_recipe_still_warms_up_then_anneals(epochs):
    """cifar10-quick has a 3-epoch warm-up: a 1- or 3-epoch run must not end at the peak lr."""
    lrs = _curve(epochs)
    peak = max(range(len(lrs)), key=lrs.__getitem__)
    assert lrs[peak] == pytest.approx(0.2, rel=0.02)  # the recipe's lr is reached ...
    assert peak <= MAX_WARMUP_FRACTION * len(lrs)  # ... within the first fifth of the run
    assert lrs[0] == pytest.approx(0.02)  # warm-up starts at warmup_factor * lr
    assert lrs[-1] < 0.05 * 0.2  # and the run ends annealed
    after = lrs[peak:]
    assert all(b <= a + 1e-12 for a, b in zip(after, after[1:], strict=False))


def test_the_full_recipe_keeps_its_three_epoch_warm_up():
    lrs = _curve(15, steps=10)
    assert max(range(len(lrs)), key=lrs.__getitem__) == 30  # the peak at exactly epoch 3


def test_the_start_line_names_a_capped_warm_up(tiny, cli):
    run = cli(tiny(epochs=1, warmup_epochs=3, train_subset=4, val_subset=2))
    assert run.returncode == 0, run.stderr
    assert "0.2-epoch linear warm-up: 3 capped at a fifth of the run" in run.stdout


def test_resume_with_more_epochs_follows_the_longer_schedule(tiny, cli, tmp_path):
    """A cosine run of 2 epochs resumed to 4 must train epochs 3-4 on the 4-epoch curve, not at lr 0."""
    extra = dict(schedule="cosine", warmup_epochs=0, lr=0.1)
    first = cli(tiny(**extra))  # 2 epochs of 5 steps
    assert first.returncode == 0, first.stderr
    resumed = cli(tiny(epochs=4, resume="true", **extra))
    assert resumed.returncode == 0, resumed.stderr
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    four = LRFactor("cosine", 4, 5)
    for r in records[2:]:  # the lr of each epoch's last step
        assert r["lr"] == pytest.approx(0.1 * four(r["epoch"] * 5 - 1), rel=1e-9)
    assert records[2]["lr"] > 0.01
