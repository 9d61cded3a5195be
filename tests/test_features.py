"""Backbones: stage feature maps at the expected strides, freezing, and torchvision's detector."""

from __future__ import annotations

import random

import pytest
import torch
from torchvision.ops import FeaturePyramidNetwork

import senet

RESNETS = ["resnet18", "se_resnet50", "se_resnext50_32x4d"]


@pytest.mark.parametrize("name", RESNETS)
def test_feature_maps_at_strides_4_8_16_32(name):
    feats = senet.create_model(name, features_only=True)
    outs = feats(torch.randn(1, 3, 224, 224))
    assert feats.strides == [4, 8, 16, 32]
    assert [o.shape[1] for o in outs] == feats.channels
    assert [o.shape[-1] for o in outs] == [224 // s for s in feats.strides]
    fpn = FeaturePyramidNetwork(feats.channels, 64)
    pyramid = fpn(dict(zip("abcd", outs, strict=True)))
    assert [p.shape[1] for p in pyramid.values()] == [64] * 4


def test_features_equal_the_classifier_network_trunk():
    model = senet.create_model("se_resnet18").eval()
    feats = senet.create_model(
        "se_resnet18", features_only=True, out_indices=(4,), weights=model.state_dict()
    )
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(feats.eval()(x)[0], model.forward_features(x))
    assert not any(k.startswith("fc.") for k in feats.state_dict())


def test_frozen_stages_and_norm_eval():
    feats = senet.create_model("se_resnet18", features_only=True, frozen_stages=1, norm_eval=True)
    feats.train()
    frozen = [n for n, p in feats.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith(("stem.", "layer1.")) for n in frozen)
    assert all(p.requires_grad for n, p in feats.named_parameters() if n.startswith("layer2."))
    assert all(not m.training for m in feats.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert feats.layer2.training  # norm_eval freezes statistics only, not the convolutions' mode
    before = feats.layer2[0].bn1.running_mean.clone()
    feats(torch.randn(2, 3, 64, 64))
    assert torch.equal(before, feats.layer2[0].bn1.running_mean)


def test_bad_feature_options():
    with pytest.raises(ValueError, match="out_indices"):
        senet.create_model("resnet18", features_only=True, out_indices=(3, 5))
    with pytest.raises(ValueError, match="features_only=True only"):
        senet.create_model("resnet18", out_indices=(1,))


def _canvas_batch(cifar_root, n_images: int = 2, size: int = 160):
    """Real CIFAR-10 images pasted at known positions on a grey canvas: boxes and labels known."""
    from PIL import Image
    from torchvision.transforms.v2.functional import pil_to_tensor

    classes = sorted(p.name for p in (cifar_root / "train").iterdir())
    rng = random.Random(0)
    images, targets = [], []
    for i in range(n_images):
        canvas = Image.new("RGB", (size, size), (128, 128, 128))
        boxes, labels = [], []
        for j, (x0, y0) in enumerate([(8, 8), (88, 80)]):
            c = (i * 2 + j) % len(classes)
            img = Image.open(cifar_root / "train" / classes[c] / f"{rng.randrange(100):04d}.jpg").convert(
                "RGB"
            )
            side = 56 + 8 * j
            canvas.paste(img.resize((side, side)), (x0, y0))
            boxes.append([x0, y0, x0 + side, y0 + side])
            labels.append(c + 1)  # 0 is background
        images.append(pil_to_tensor(canvas).float() / 255)
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels)})
    return images, targets


def test_faster_rcnn_trains_and_detects_on_real_images(cifar10_jpeg):
    from senet.detection import fasterrcnn_fpn

    torch.manual_seed(0)
    model = fasterrcnn_fpn("se_resnet18", num_classes=11, min_size=160, max_size=160)
    images, targets = _canvas_batch(cifar10_jpeg)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    model.train()
    losses = []
    for _ in range(8):
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2 and set(out[0]) == {"boxes", "labels", "scores"}
    assert out[0]["boxes"].shape[-1] == 4


def test_detector_backbone_weights_and_freezing(tmp_path):
    from senet.detection import fasterrcnn_fpn
    from senet.weights import save_weights

    trunk = senet.create_model("se_resnet18")
    path = save_weights(trunk, tmp_path / "trunk.pt")
    det = fasterrcnn_fpn("se_resnet18", num_classes=3, weights_backbone=path)
    body = det.backbone.body
    assert torch.equal(body.layer3[0].conv1.weight, trunk.layer3[0].conv1.weight)
    assert not body.stem.conv1.weight.requires_grad and body.layer2[0].conv1.weight.requires_grad
