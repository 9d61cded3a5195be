"""`senet detect train|eval` on the simulated set: it learns, resumes exactly, refuses bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from senet.cli import main
from senet.fusion.config import DetectConfig, list_detect_recipes, load_detect_config
from senet.fusion.simulate import write_simulated_dsec
from senet.fusion.train import build_detector, evaluate_detector, load_detector, make_datasets, train_detector

TINY = dict(min_size=64, max_size=80, threads=1, workers=0, log_interval=100)


@pytest.fixture(scope="module")
def sim_set(cifar10_jpeg: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four training and two held-out sequences of six 64 x 80 frames (real CIFAR cars and trucks)."""
    out = tmp_path_factory.mktemp("sim")
    return write_simulated_dsec(
        out, cifar10_jpeg, train_sequences=4, test_sequences=2, frames=6, height=64, width=80, seed=3
    )


def _cfg(data: Path, out: Path, **kw: object) -> DetectConfig:
    return load_detect_config(
        "sim-se-fusion", overrides={**TINY, "data_dir": str(data), "out": str(out), **kw}
    )


def test_se_fusion_detector_learns(sim_set: Path, tmp_path: Path) -> None:
    """A short real run: the training loss falls and held-out mAP50 beats the untrained model's."""
    cfg = _cfg(sim_set, tmp_path / "run", epochs=4)
    train_ds, val_ds = make_datasets(cfg)
    torch.manual_seed(cfg.seed)
    untrained = build_detector(cfg, train_ds.num_classes, train_ds.event_channels, list(train_ds.class_names))
    before = evaluate_detector(untrained, val_ds, torch.device("cpu"))
    result = train_detector(cfg)
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < 0.7 * losses[0], losses
    assert result.final["val_mAP50"] > before["mAP50"] + 0.05, (before["mAP50"], result.final["val_mAP50"])
    assert (result.out / "best.pt").is_file() and (result.out / "curves.png").is_file()
    model, ckpt = load_detector(result.out / "last.pt")
    again = evaluate_detector(model, val_ds, torch.device("cpu"))
    assert again["mAP50"] == pytest.approx(result.final["val_mAP50"], abs=1e-6)
    assert ckpt["config"]["fusion"] == "se" and model.modalities == ("rgb", "events")


def test_resume_continues_exactly(sim_set: Path, tmp_path: Path) -> None:
    """Two epochs straight and one epoch + --resume for the second give the same weights and figures."""
    small = dict(epochs=2, train_limit=8, val_limit=4)
    straight = train_detector(_cfg(sim_set, tmp_path / "a", **small))
    train_detector(_cfg(sim_set, tmp_path / "b", **{**small, "epochs": 1}))
    resumed = train_detector(_cfg(sim_set, tmp_path / "b", **small, resume=True))
    timeless = [
        [{k: v for k, v in h.items() if k != "seconds"} for h in r.history] for r in (resumed, straight)
    ]
    assert timeless[0] == timeless[1]
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="trained with other fusion"):
        train_detector(_cfg(sim_set, tmp_path / "b", **{**small, "epochs": 3}, fusion="add", resume=True))


def test_cli_train_then_eval(sim_set: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    flags = ["--data-dir", str(sim_set), "--out", str(out), "--min-size", "64", "--max-size", "80"]
    code = main(
        [
            "detect",
            "train",
            "--recipe",
            "sim-se-fusion",
            *flags,
            "--epochs",
            "1",
            "--train-limit",
            "4",
            "--val-limit",
            "2",
            "--fusion",
            "concat",
            "--threads",
            "1",
        ]
    )
    assert code == 0
    assert "rgb+events (concat fusion)" in capsys.readouterr().out
    assert main(["detect", "eval", str(out / "best.pt"), "--limit", "3"]) == 0
    assert "3 frames: mAP" in capsys.readouterr().out
    # a second run into the same folder is refused rather than overwriting it
    assert main(["detect", "train", "--recipe", "sim-se-fusion", *flags, "--epochs", "1"]) == 2
    assert "already holds a run" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["detect", "train", "--recipe", "sim-se-fusoin"], "Did you mean: sim-se-fusion"),
        (
            ["detect", "train", "--recipe", "sim-se-fusion", "--fusion", "sum"],
            "fusion='sum': expected one of",
        ),
        (
            ["detect", "train", "--recipe", "sim-se-fusion", "--modalities", "rgb", "depth"],
            "unknown modality",
        ),
        (["detect", "train", "--recipe", "sim-se-fusion"], "no data folder: give --data-dir"),
        (["detect", "train", "--recipe", "sim-se-fusion", "--data-dir", "/no/such/dir"], "does not exist"),
        (
            [
                "detect",
                "train",
                "--recipe",
                "sim-se-fusion",
                "--fusion",
                "add",
                "--fusion-kwargs",
                "{reduction: 4}",
            ],
            "fusion_kwargs are SE knobs",
        ),
        (["detect", "eval", "/no/such.pt"], "does not exist"),
    ],
)
def test_bad_input_is_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_classification_checkpoint_is_not_a_detector(tmp_path: Path) -> None:
    path = tmp_path / "cls.pt"
    torch.save({"arch": "se_resnet20", "model": {}}, path)
    with pytest.raises(ValueError, match="not a `senet detect train` checkpoint"):
        load_detector(path)


def test_recipes_load_with_frn_settings() -> None:
    """The shipped recipes load; the DSEC one holds FRN's training set-up (train_dsec.py)."""
    assert set(list_detect_recipes()) >= {"dsec-se-fusion", "ddd17-se-fusion", "sim-se-fusion"}
    dsec = load_detect_config("dsec-se-fusion")
    assert (dsec.backbone, dsec.head, dsec.fusion, dsec.bins) == ("resnet50", "retinanet", "se", 5)
    assert (dsec.optimizer, dsec.lr, dsec.batch_size, dsec.accum_steps) == ("adam", 1e-4, 1, 2)
    assert (dsec.clip_grad_norm, dsec.rgb_blank_prob, dsec.min_size, dsec.max_size) == (0.1, 0.15, 480, 640)
    ddd = load_detect_config("ddd17-se-fusion")
    assert (ddd.dataset, ddd.min_size, ddd.max_size) == ("ddd17", 260, 346)
    with pytest.raises(ValueError, match="did you mean fusion"):
        load_detect_config("sim-se-fusion", overrides={"fusoin": "add"})
