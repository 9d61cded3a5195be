"""Values that cannot be meant (issue 13, items 7 and 8): refused before any work starts, in one
line naming the argument, by the command line and by the Python API alike."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from senet import create_model
from senet.cli import main
from senet.se import SEBlock
from senet.train import Config, load_config


def _last_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and not any("Traceback" in line for line in err), err
    return err[-1]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["profile", "resnet20", "--input-size", "-5"], "argument --input-size: must be >= 1, got -5"),
        (["profile", "resnet20", "--input-size", "0"], "argument --input-size: must be >= 1, got 0"),
        (
            ["profile", "resnet20", "--time", "--batch-size", "0"],
            "argument --batch-size: must be >= 1, got 0",
        ),
        (["profile", "resnet20", "--time", "--repeats", "0"], "argument --repeats: must be >= 1, got 0"),
        (["profile", "resnet20", "--time", "--warmup", "-1"], "argument --warmup: must be >= 0, got -1"),
        (
            ["eval", "--checkpoint", "x.pt", "--data-dir", ".", "--batch-size", "-3"],
            "--batch-size: must be >= 1",
        ),
        (
            ["eval", "--checkpoint", "x.pt", "--data-dir", ".", "--crop", "0"],
            "argument --crop: must be >= 1, got 0",
        ),
        (
            ["eval", "--checkpoint", "x.pt", "--data-dir", ".", "--resize", "-4"],
            "argument --resize: must be >= 1",
        ),
        (
            ["eval", "--checkpoint", "x.pt", "--data-dir", ".", "--workers", "-1"],
            "argument --workers: must be >= 0",
        ),
        (
            ["eval", "--checkpoint", "x.pt", "--data-dir", ".", "--std", "0", "1", "1"],
            "--std: must be a finite number > 0",
        ),
        (
            ["eval", "--checkpoint", "x.pt", "--data-dir", ".", "--mean", "0", "nan", "1"],
            "--mean: must be a finite",
        ),
        (["predict", "x.jpg", "--model", "resnet20", "--topk", "0"], "argument --topk: must be >= 1, got 0"),
        (
            ["predict", "x.jpg", "--model", "resnet20", "--batch-size", "x"],
            "expected a whole number >= 1, got 'x'",
        ),
        (
            ["export", "resnet20", "--format", "onnx", "--out", "m.onnx", "--input-size", "0"],
            "--input-size: must be >= 1",
        ),
        (
            ["compare", "--recipe", "cifar10-quick", "--out", "o", "--seeds", "0"],
            "argument --seeds: must be >= 1",
        ),
    ],
)
def test_command_line_values_that_cannot_be_meant(argv, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    line = _last_error(capsys)
    assert line.startswith(f"senet {argv[0]}: error: ") and expected in line
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("lr", "inf", "lr=inf must be a finite number"),
        ("lr", "nan", "lr=nan must be a finite number"),
        ("mean", "0.5 nan 0.5", "mean=[0.5, nan, 0.5] must be a finite number"),
        ("epochs", "1000000000", "epochs=1000000000 is more than 100,000: a typo?"),
    ],
)
def test_training_values_that_cannot_be_meant(field, value, expected, capsys, tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--recipe", "cifar10-quick", f"--{field.replace('_', '-')}", *value.split()]
    assert main([*argv, "--data-dir", str(tmp_path), "--out", str(out)]) == 2
    assert _last_error(capsys).startswith(f"senet train: error: config: {expected}")
    assert not out.exists()
    given = [float(v) for v in value.split()] if field == "mean" else type(getattr(Config(), field))(value)
    with pytest.raises(ValueError, match=re.escape(expected)):
        load_config("cifar10-quick", overrides={field: given})


def test_export_to_a_folder_names_the_file_to_give(tmp_path, capsys):
    assert main(["export", "resnet20", "--format", "onnx", "--out", str(tmp_path)]) == 2
    line = _last_error(capsys)
    expected = f"{tmp_path} is a folder: give the file to write, e.g. --out {tmp_path}/model.onnx"
    assert line == f"senet export: error: {expected}"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("call", "error", "expected"),
    [
        (
            lambda: create_model(None),
            TypeError,
            "a model name must be a string such as 'se_resnet50', got None",
        ),
        (
            lambda: create_model("resnet20", num_classes=0),
            ValueError,
            "num_classes=0 must be a whole number >= 1",
        ),
        (lambda: create_model("se_resnet50", num_classes=-1), ValueError, "num_classes=-1 must be"),
        (lambda: create_model("resnet20", num_classes=2.5), ValueError, "num_classes=2.5 must be"),
        (lambda: create_model("resnet20", in_chans=0), ValueError, "in_chans=0 must be a whole number >= 1"),
        (lambda: SEBlock(64, reduction=0), ValueError, "SEBlock needs channels >= 1 and reduction >= 1"),
    ],
)
def test_python_api_refuses_what_cannot_be_meant(call, error, expected):
    with pytest.raises(error, match=expected.replace("(", r"\(").replace(")", r"\)")):
        call()


@pytest.mark.parametrize("name", ["resnet20", "se_resnet50", "se_mobilenet"])
def test_model_inputs_that_are_not_float_image_tensors(name):
    model = create_model(name).eval()
    size = model.min_input_size * 2
    with pytest.raises(
        TypeError, match=r"expects a torch.Tensor, got numpy.ndarray: convert with torch.from_numpy"
    ):
        model(np.zeros((1, 3, size, size), np.float32))
    with pytest.raises(TypeError, match=r"expects floating-point images .* got torch.uint8"):
        model(torch.zeros(1, 3, size, size, dtype=torch.uint8))
    with torch.no_grad():  # the same input as float still works
        assert model(torch.zeros(1, 3, size, size)).shape == (1, model.fc.out_features)


def test_se_block_on_the_wrong_channel_count_names_both():
    shape = r"SEBlock\(channels=64, dims=2\) got an input of shape \[2, 32, 8, 8\]"
    with pytest.raises(ValueError, match=shape):
        SEBlock(64)(torch.zeros(2, 32, 8, 8))
    assert SEBlock(32)(torch.ones(2, 32, 8, 8)).shape == (2, 32, 8, 8)
