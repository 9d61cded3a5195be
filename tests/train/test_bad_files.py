"""Foreign, damaged or misleading files given to `senet eval` and `senet train`: one clear line each."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from senet import load_model
from senet.cli import main
from senet.data import build_data
from senet.train import load_checkpoint, load_config


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


@pytest.mark.parametrize("content", [torch.zeros(3), [1, 2], {"epoch": 3}])
def test_eval_of_a_file_that_is_not_a_checkpoint(content, cifar10_subset, tmp_path, capsys):
    path = tmp_path / "thing.pt"
    torch.save(content, path)
    assert main(["eval", "--checkpoint", str(path), "--data-dir", str(cifar10_subset)]) == 2
    line = _error_line(capsys)
    assert str(path) in line
    assert "is not a senet checkpoint or state dict" in line or "holds no state dict" in line


def test_eval_refuses_weights_holding_nan(trained_cifar, cifar10_subset, tmp_path, capsys):
    ckpt = load_checkpoint(trained_cifar)
    ckpt["model"]["fc.weight"][0, 0] = math.nan
    path = tmp_path / "nan.pt"
    torch.save(ckpt, path)
    json_path = tmp_path / "result.json"
    argv = ["eval", "--checkpoint", str(path), "--data-dir", str(cifar10_subset), "--json", str(json_path)]
    assert main(argv) == 2
    line = _error_line(capsys)
    assert "holds NaN/inf in 1 tensors (e.g. fc.weight)" in line and "best.pt" in line
    assert not json_path.exists()


def test_eval_with_another_crop_of_an_in_memory_run(trained_cifar, cifar10_subset, tmp_path, capsys):
    """--crop on a run trained in memory decodes the files (it used to suggest the train flag)."""
    json_path = tmp_path / "r.json"
    argv = ["eval", "--checkpoint", str(trained_cifar), "--data-dir", str(cifar10_subset)]
    assert main([*argv, "--crop", "28", "--json", str(json_path)]) == 0
    result = json.loads(json_path.read_text())
    assert result["crop"] == 28 and result["images"] == 100
    assert "--eval-crop" not in capsys.readouterr().err
    # The crop is really applied: the same accuracy as the centre 28x28 of each decoded file.
    ckpt = load_checkpoint(trained_cifar)
    model = load_model(ckpt).eval()
    mean, std = (torch.tensor(ckpt["config"][k]).view(3, 1, 1) for k in ("mean", "std"))
    correct = 0
    for label, cls in enumerate(ckpt["classes"]):
        for f in sorted((cifar10_subset / "test" / cls).iterdir()):
            x = torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1)[:, 2:30, 2:30]
            with torch.no_grad():
                correct += int(model(((x / 255 - mean) / std)[None]).argmax(1).item() == label)
    assert result["top1"] == pytest.approx(correct, abs=1e-4)  # 100 images: % == count


def test_eval_refuses_renamed_classes(trained_cifar, cifar10_subset, tmp_path, capsys):
    data = tmp_path / "renamed"
    for cls in sorted(p.name for p in (cifar10_subset / "test").iterdir()):
        (data / "test").mkdir(parents=True, exist_ok=True)
        (data / "test" / ("kitty" if cls == "cat" else cls)).symlink_to(cifar10_subset / "test" / cls)
    assert main(["eval", "--checkpoint", str(trained_cifar), "--data-dir", str(data)]) == 2
    line = _error_line(capsys)
    assert "classes only in the checkpoint: ['cat']" in line and "['kitty']" in line


def test_a_recipe_with_a_key_given_twice_is_refused(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("model: resnet20\nlr: 0.1\nepochs: 2\nlr: 0.4\n")
    with pytest.raises(ValueError, match=r"r.yaml: not valid YAML \(line 4\): field 'lr' is given twice"):
        load_config(path)


def test_a_binary_config_is_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(bytes(range(256)))
    with pytest.raises(ValueError, match=r"c.yaml: not a text file"):
        load_config("cifar10-quick", path)


def test_a_bad_value_is_blamed_on_the_file_that_gave_it(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: many\n")
    with pytest.raises(ValueError, match=rf"^config {path}: field 'epochs' must be int"):
        load_config("cifar10-quick", path)
    with pytest.raises(ValueError, match=r"^command line: field 'epochs' must be int"):
        load_config("cifar10-quick", overrides={"epochs": "many"})


def test_train_on_a_data_path_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "data.txt"
    f.write_text("x")
    argv = ["train", "--recipe", "cifar10-quick", "--data-dir", str(f), "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    assert "is a file, not a folder" in _error_line(capsys)


def test_a_batch_larger_than_the_data_names_the_image_count(tiny, cli):
    run = cli(tiny(train_subset=3, batch_size=40))  # 30 images
    assert run.returncode == 2
    assert "batch_size=40 exceeds the 30 training images: give a smaller --batch-size" in run.stderr


def _damaged_copy(src, dst):
    """Three classes of five real images per split, one train image truncated, one test file empty."""
    import shutil

    for split in ("train", "test"):
        for cls in ("airplane", "bird", "cat"):
            (dst / split / cls).mkdir(parents=True)
            for f in sorted((src / split / cls).iterdir())[:5]:
                shutil.copy(f, dst / split / cls / f.name)
    truncated = sorted((dst / "train" / "bird").iterdir())[2]
    truncated.write_bytes(truncated.read_bytes()[:200])
    empty = sorted((dst / "test" / "cat").iterdir())[0]
    empty.write_bytes(b"")
    return dst, {truncated: "truncated image", empty: "empty file (0 bytes)"}


@pytest.mark.parametrize("in_memory", ["true", "false"])
def test_training_skips_unreadable_images_and_lists_them(cifar10_jpeg, tmp_path, capsys, in_memory):
    root, bad = _damaged_copy(cifar10_jpeg, tmp_path / "data")
    out = tmp_path / "run"
    argv = ["train", "--recipe", "cifar10-quick", "--model", "resnet20", "--epochs", "1", "--batch-size", "4"]
    argv += ["--workers", "0", "--cache-dir", "", "--in-memory", in_memory, "--data-dir", str(root)]
    assert main([*argv, "--out", str(out)]) == 0
    # Decoding into memory finds both files up front; streaming finds the empty file by its header
    # and the truncated one when a worker decodes it, which then appends it to the same list.
    found_first = 2 if in_memory == "true" else 1
    assert f"skipped {found_first} unreadable image file(s)" in capsys.readouterr().out
    listed = dict(line.split("\t") for line in (out / "skipped_images.txt").read_text().splitlines())
    assert {Path(p): r for p, r in listed.items()} == bad
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 1 and math.isfinite(history[0]["train_loss"])

    assert main([*argv, "--out", str(tmp_path / "strict"), "--strict-data"]) == 2
    line = _error_line(capsys)
    assert f"{found_first} unreadable image file" in line and "(empty file (0 bytes))" in line
    assert not (tmp_path / "strict" / "last.pt").exists()


def test_eval_of_a_subset_of_the_classes_maps_them_by_name(trained_cifar, cifar10_subset, tmp_path, capsys):
    data = tmp_path / "some"
    for cls in ("bird", "ship"):
        (data / "test").mkdir(parents=True, exist_ok=True)
        (data / "test" / cls).symlink_to(cifar10_subset / "test" / cls)
    json_path = tmp_path / "r.json"
    argv = ["eval", "--checkpoint", str(trained_cifar), "--data-dir", str(data), "--json", str(json_path)]
    assert main(argv) == 0
    assert "test/ has 2 of the 10 classes of the checkpoint" in capsys.readouterr().out
    # The same images scored against the full ten-class test split: bird is class 2, ship class 8.
    full = json.loads(json_path.read_text())
    ckpt = load_checkpoint(trained_cifar)
    model = load_model(ckpt).eval()
    cfg = ckpt["config"]
    d = build_data(data, mean=cfg["mean"], std=cfg["std"], train=False, classes=ckpt["classes"], workers=0)
    x, y = map(torch.cat, zip(*d.val, strict=True))
    assert sorted(set(y.tolist())) == [2, 8]
    with torch.no_grad():
        expected = 100 * (model(x).argmax(1) == y).sum().item() / len(y)
    assert full["top1"] == pytest.approx(expected, abs=1e-4)
