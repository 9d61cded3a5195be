"""load_weights against independent implementations: timm's legacy (Cadene) SENets, timm's
seresnet/seresnext and torchvision's resnet50, all built with random weights (no download)."""

from __future__ import annotations

import pytest
import torch

import senet
from senet.weights import WeightsMismatchError, load_weights

timm = pytest.importorskip("timm")

CADENE = {
    "legacy_seresnet50": "se_resnet50",
    "legacy_seresnet101": "se_resnet101",
    "legacy_seresnet152": "se_resnet152",
    "legacy_seresnext50_32x4d": "se_resnext50_32x4d",
    "legacy_seresnext101_32x4d": "se_resnext101_32x4d",
    "legacy_senet154": "senet154",
}


def _same_logits(ref: torch.nn.Module, ours: torch.nn.Module, size: int = 96) -> float:
    """Largest absolute logit difference on the same input, computed in float64.

    In float32 the two implementations differ by summation order alone (our SE FC layers are matrix
    products, timm's are 1x1 convolutions), which near-zero-variance BN channels of a deep network
    amplify to ~1e-4; in float64 the same weights give ~1e-13, while any mis-mapped tensor is O(0.1)+.
    """
    ref, ours = ref.double(), ours.double()
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    with torch.no_grad():
        return (ref(x) - ours(x)).abs().max().item()


@pytest.mark.parametrize(("timm_name", "ours_name"), CADENE.items())
def test_cadene_layout_gives_the_same_logits(measure_bn, timm_name, ours_name):
    ref = measure_bn(timm.create_model(timm_name, pretrained=False), 96, batch=4)
    ours = senet.create_model(ours_name).eval()
    report = load_weights(ours, ref.state_dict())
    assert report.layout == "cadene"
    assert _same_logits(ref, ours) <= 1e-8


@pytest.mark.parametrize("name", ["seresnet50", "seresnext50_32x4d"])
def test_timm_layout_into_torchvision_style(measure_bn, name):
    ref = measure_bn(timm.create_model(name, pretrained=False), 96, batch=4)
    ours = senet.create_model(f"se_{name[2:]}", layout="torchvision").eval()
    assert load_weights(ours, ref.state_dict()).layout == "timm"
    assert _same_logits(ref, ours) <= 1e-8


def test_torchvision_resnet50_into_plain_resnet50(measure_bn, tmp_path):
    torchvision = pytest.importorskip("torchvision")
    ref = measure_bn(torchvision.models.resnet50(), 96, batch=4)
    path = tmp_path / "tv.pth"
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, path
    )  # DDP-wrapped file
    ours = senet.create_model("resnet50", layout="torchvision", weights=path).eval()
    assert _same_logits(ref, ours) <= 1e-8


def test_layout_mismatch_is_refused_with_the_fix():
    torchvision = pytest.importorskip("torchvision")
    with pytest.raises(WeightsMismatchError, match="layout='torchvision'"):
        load_weights(senet.create_model("resnet50"), torchvision.models.resnet50().state_dict())
    ref = timm.create_model("legacy_seresnet50", pretrained=False)
    with pytest.raises(WeightsMismatchError, match="layout='release'"):
        load_weights(senet.create_model("se_resnet50", layout="torchvision"), ref.state_dict())


def test_other_architecture_is_refused_with_a_key_report():
    ours = senet.create_model("se_resnet50")
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    with pytest.raises(WeightsMismatchError) as info:
        load_weights(ours, senet.create_model("se_resnet101").state_dict())
    assert "unexpected in checkpoint" in str(info.value) and "layer3.6" in str(info.value)
    with pytest.raises(WeightsMismatchError, match=r"shape mismatch.*fc.weight: checkpoint \(10, 2048\)"):
        load_weights(ours, senet.create_model("se_resnet50", num_classes=10).state_dict())
    with pytest.raises(WeightsMismatchError, match="missing in checkpoint"):
        load_weights(ours, senet.create_model("resnet50").state_dict())
    assert all(torch.equal(before[k], v) for k, v in ours.state_dict().items())  # nothing half-loaded


def test_own_checkpoint_round_trip(measure_bn, tmp_path):
    src = measure_bn(senet.create_model("se_resnext50_32x4d", reduction=8), 96, batch=4)
    path = tmp_path / "ours.pt"
    torch.save({"model": src.state_dict(), "epoch": 3}, path)
    ours = senet.create_model("se_resnext50_32x4d", reduction=8, weights=path).eval()
    assert _same_logits(src, ours) == 0.0


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", None])
def test_corrupt_checkpoint_gives_one_clear_error(tmp_path, content):
    path = tmp_path / "bad.pt"
    if content is None:  # a real checkpoint cut in half
        torch.save(senet.create_model("resnet18").state_dict(), path)
        content = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(content)
    with pytest.raises(ValueError, match="truncated, corrupted or not a PyTorch checkpoint"):
        load_weights(senet.create_model("resnet18"), path)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        senet.create_model("resnet18", weights="/nonexistent/model.pt")


def test_timm_inception_resnet_v2_through_load_weights(measure_bn):
    ref = measure_bn(timm.create_model("inception_resnet_v2", pretrained=False), 96, batch=4)
    ours = senet.create_model("inception_resnet_v2").eval()
    assert load_weights(ours, ref.state_dict()).layout == "timm"
    assert _same_logits(ref, ours, size=75) <= 1e-8


def test_one_checkpoint_format_and_old_training_checkpoints_still_load(tmp_path):
    """save_weights and `senet train` write format 2 (the architecture as arch + create_kwargs,
    once); a training checkpoint of before (model_name + model_kwargs + num_classes) reads as one of
    today, so load_model, eval, export, report and excite open both."""
    from senet import load_model
    from senet.weights import read_checkpoint, save_weights

    model = senet.create_model("se_resnet20", num_classes=4, reduction=4).eval()
    save_weights(model, tmp_path / "new.pt")
    new = torch.load(tmp_path / "new.pt", weights_only=True)
    assert new["format"] == 2 and new["arch"] == "se_resnet20" and new["create_kwargs"]["num_classes"] == 4
    old = {
        "model": model.state_dict(),
        "model_name": "se_resnet20",
        "model_kwargs": {"reduction": 4},
        "num_classes": 4,
        "epoch": 3,
    }
    torch.save(old, tmp_path / "old.pt")
    _, meta = read_checkpoint(tmp_path / "old.pt")
    assert meta["arch"] == "se_resnet20" and meta["create_kwargs"] == {"reduction": 4, "num_classes": 4}
    assert not {"model_name", "model_kwargs", "num_classes"} & set(meta) and meta["epoch"] == 3
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for path in ("new.pt", "old.pt"):
            loaded = load_model(tmp_path / path).eval()
            assert loaded.fc.out_features == 4
            assert all(b.hidden == b.channels // 4 for b in loaded.modules() if isinstance(b, senet.SEBlock))
            torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
