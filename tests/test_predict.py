"""senet.predict and `senet predict`: the same answers as `senet eval` on real CIFAR-10 test images,
unreadable files reported and skipped, class names from the checkpoint or ImageNet's list."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import senet
from senet import load_model
from senet.cli import main
from senet.predict import class_names, expand_images, imagenet_classes, predict


def _counts(preds: list[dict]) -> tuple[int, int]:
    """top-1 / top-5 hits of predictions whose file sits in a folder named after its class."""
    top1 = top5 = 0
    for p in preds:
        truth = p["source"].split("/")[-2]
        top1 += p["labels"][0] == truth
        top5 += truth in p["labels"][:5]
    return top1, top5


def test_predict_matches_eval_on_real_images(trained_cifar, cifar10_subset, tmp_path, capsys):
    assert main(["eval", "--checkpoint", str(trained_cifar), "--data-dir", str(cifar10_subset),
                 "--json", str(tmp_path / "eval.json"), "--workers", "0"]) == 0  # fmt: skip
    ev = json.loads((tmp_path / "eval.json").read_text())
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(trained_cifar), str(cifar10_subset / "test"), "--json"]) == 0
    preds = json.loads(capsys.readouterr().out)
    assert len(preds) == ev["images"] == 100
    assert len({p["labels"][0] for p in preds}) >= 3, "a degenerate model would make this test vacuous"
    top1, top5 = _counts(preds)
    # eval reads the images in memory with the run's pipeline, predict one by one through PIL and
    # the preprocessing stored in the checkpoint: the same images must get the same classes.
    assert top1 == pytest.approx(ev["top1"]) and top5 == pytest.approx(ev["top5"])
    for p in preds:
        assert p["probs"] == sorted(p["probs"], reverse=True) and 0 < sum(p["probs"]) <= 1 + 1e-6


def test_unreadable_files_are_reported_and_skipped(trained_cifar, cifar10_subset, tmp_path, capsys):
    good = sorted((cifar10_subset / "test" / "cat").iterdir())[0]
    shutil.copy(good, tmp_path / "good.jpg")
    (tmp_path / "truncated.jpg").write_bytes(good.read_bytes()[:200])
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image\n")
    code = main(["predict", "--checkpoint", str(trained_cifar), str(tmp_path), str(tmp_path / "missing.png")])
    out, err = capsys.readouterr()
    assert code == 1
    assert out.count("\n") == 1 and out.startswith(str(tmp_path / "good.jpg"))
    for bad in ("truncated.jpg", "empty.jpg", "text.jpg", "missing.png"):
        assert f"skipped {tmp_path / bad}" in err
    assert "4 of 5 images could not be read" in err


def test_python_api_takes_paths_pil_images_and_tensors(trained_cifar, cifar10_subset):
    import numpy as np
    from PIL import Image

    model = load_model(trained_cifar)
    assert class_names(model) == sorted(p.name for p in (cifar10_subset / "test").iterdir())
    path = sorted((cifar10_subset / "test" / "dog").iterdir())[3]
    pixels = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
    preds = predict(model, [path, Image.open(path), pixels], topk=3)
    assert [p.error for p in preds] == [None] * 3
    assert preds[0].labels == preds[1].labels == preds[2].labels
    assert preds[0].probs == pytest.approx(preds[1].probs) and preds[0].probs == pytest.approx(preds[2].probs)
    # the top probability is the softmax of the logits of the run's own normalisation
    x = (pixels.float() / 255 - torch.tensor([0.4914, 0.4822, 0.4465]).view(3, 1, 1)) / (
        torch.tensor([0.2470, 0.2435, 0.2616]).view(3, 1, 1)
    )
    with torch.no_grad():
        p = model.eval()(x[None]).softmax(1)[0]
    assert preds[0].probs[0] == pytest.approx(float(p.max()), abs=1e-5)
    assert preds[0].indices[0] == int(p.argmax())


def test_imagenet_names_match_torchvision():
    from torchvision.models import ResNet50_Weights

    assert list(imagenet_classes()) == ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    assert class_names(senet.create_model("se_resnet50"))[:2] == ["tench", "goldfish"]
    assert class_names(senet.create_model("se_resnet20")) == [str(i) for i in range(10)]


def test_expand_images_folders_globs_and_missing(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("a/1.jpg", "a/2.PNG", "a/notes.txt", "b.jpeg"):
        (tmp_path / name).write_bytes(b"x")
    got = expand_images([tmp_path / "a", str(tmp_path / "*.jpeg"), tmp_path / "nope.jpg"])
    assert got == [str(tmp_path / "a/1.jpg"), str(tmp_path / "a/2.PNG"), str(tmp_path / "b.jpeg"),
                   str(tmp_path / "nope.jpg")]  # fmt: skip


def test_predict_needs_a_network(capsys, tmp_path):
    assert main(["predict", str(tmp_path)]) == 2
    assert "--checkpoint PATH, or --model NAME" in capsys.readouterr().err
