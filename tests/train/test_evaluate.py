"""`senet eval` of any weights: timm-layout files checked against timm itself on real CIFAR-10 images,
files of save_weights, and the refusals (another class set)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from senet import load_model
from senet.cli import main
from senet.preprocessing import CIFAR10_MEAN, CIFAR10_STD
from senet.weights import save_weights


def _reference(model, root, mean, std):
    """top-1 / top-5 hits and mean loss of ``model`` on root/test, computed here (PIL, numpy)."""
    classes = sorted(p.name for p in (root / "test").iterdir())
    top1 = top5 = 0
    loss = 0.0
    files = [(f, i) for i, c in enumerate(classes) for f in sorted((root / "test" / c).iterdir())]
    m, s = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    with torch.no_grad():
        for f, label in files:
            x = torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1).float() / 255
            logits = model(((x - m) / s)[None])
            top = logits.topk(5).indices[0].tolist()
            top1, top5 = top1 + (top[0] == label), top5 + (label in top)
            loss += float(torch.nn.functional.cross_entropy(logits, torch.tensor([label])))
    return top1, top5, loss / len(files)


def test_eval_of_a_timm_file_matches_timm(cifar10_subset, tmp_path, capsys, measure_bn):
    timm = pytest.importorskip("timm")
    ref = measure_bn(timm.create_model("seresnet50", num_classes=10), size=32)
    torch.save(ref.state_dict(), tmp_path / "timm_seresnet50.pth")  # timm's keys, no metadata
    args = ["eval", "--model", "se_resnet50", "--weights", str(tmp_path / "timm_seresnet50.pth"),
            "--data-dir", str(cifar10_subset), "--crop", "32", "--resize", "32", "--workers", "0",
            "--mean", *map(str, CIFAR10_MEAN), "--std", *map(str, CIFAR10_STD),
            "--json", str(tmp_path / "eval.json")]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "preprocessing: resize 32, crop 32, RGB x1, mean [0.4914" in out and "layout torchvision" in out
    r = json.loads((tmp_path / "eval.json").read_text())
    top1, top5, loss = _reference(ref, cifar10_subset, CIFAR10_MEAN, CIFAR10_STD)
    assert r["images"] == 100
    assert (r["top1"], r["top5"]) == (pytest.approx(top1), pytest.approx(top5))
    assert r["loss"] == pytest.approx(loss, rel=1e-4)


def test_eval_of_a_save_weights_file_equals_the_run_checkpoint(trained_cifar, cifar10_subset, tmp_path):
    save_weights(load_model(trained_cifar), tmp_path / "w.pt")  # no config: the generic path
    common = ["--data-dir", str(cifar10_subset), "--workers", "0", "--json"]
    assert main(["eval", "--checkpoint", str(trained_cifar), *common, str(tmp_path / "a.json")]) == 0
    assert main(["eval", "--weights", str(tmp_path / "w.pt"), *common, str(tmp_path / "b.json")]) == 0
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "ab")
    assert "preprocessing" in b and "preprocessing" not in a  # two pipelines, one answer
    assert (a["top1"], a["top5"]) == (b["top1"], b["top5"])
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)


def test_eval_of_weights_on_another_class_set(trained_cifar, cifar10_subset, tmp_path, capsys):
    five = tmp_path / "five"
    for c in sorted(p.name for p in (cifar10_subset / "test").iterdir())[:5]:
        (five / "test").mkdir(parents=True, exist_ok=True)
        (five / "test" / c).symlink_to(cifar10_subset / "test" / c)
    weights = ["--weights", str(trained_cifar), "--data-dir", str(five)]
    # Weights that carry their class names: a subset is evaluated, labels mapped by name (issue 13).
    assert main(["eval", "--model", "se_resnet20", *weights, "--json", str(tmp_path / "r.json")]) == 0
    assert "test/ has 5 of the 10 classes of the weights" in capsys.readouterr().out
    (five / "test" / "kitty").symlink_to(cifar10_subset / "test" / "cat")
    assert main(["eval", "--model", "se_resnet20", *weights]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "only in test/: ['kitty']" in err
    assert main(["eval", "--model", "resnet20", *weights]) == 2
    assert "holds a se_resnet20, not a resnet20" in capsys.readouterr().err
