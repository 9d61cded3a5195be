"""The two-stream detector on torchvision's RetinaNet / Faster R-CNN, and the stride-4..32 pyramid
stages of senet.detection, on tiny inputs (resnet18, 64x80 images, batch 2)."""

from __future__ import annotations

import math
import pickle

import pytest
import torch

from senet import create_model
from senet.detection import fasterrcnn_fpn, pyramid_extractor, pyramid_indices
from senet.fusion.detector import TwoStreamBackbone, create_detector
from senet.weights import save_weights

H, W = 64, 80
TINY = {"min_size": H, "max_size": W}
IMAGENET_MEAN = [0.485, 0.456, 0.406]


def _inputs(n: int = 2, event_channels: int = 5) -> list[dict[str, torch.Tensor]]:
    return [{"rgb": torch.rand(3, H, W), "events": torch.randn(event_channels, H, W)} for _ in range(n)]


def _targets() -> list[dict[str, torch.Tensor]]:
    return [
        {
            "boxes": torch.tensor([[4.0, 6.0, 40.0, 30.0], [30.0, 20.0, 70.0, 60.0]]),
            "labels": torch.tensor([0, 2]),
        },
        {"boxes": torch.tensor([[10.0, 10.0, 50.0, 50.0]]), "labels": torch.tensor([1])},
    ]


def _tiny(head: str = "retinanet", **kwargs):
    """A resnet18 detector of 3 classes that keeps every detection (score threshold 0, no cap)."""
    if head == "retinanet":
        thresh = {"score_thresh": 0.0, "detections_per_img": 10000}
    else:
        thresh = {"box_score_thresh": 0.0, "box_detections_per_img": 10000}
    return create_detector("resnet18", 3, head=head, **TINY, **{**thresh, **kwargs})


# --- senet.detection: the pyramid stages come from feature_info -------------------------------------


def _info(*strides: int) -> list[dict]:
    return [{"module": f"m{i}", "num_chs": 8, "reduction": s} for i, s in enumerate(strides)]


@pytest.mark.parametrize(
    ("strides", "want"),
    [
        ((4, 4, 8, 16, 32), (1, 2, 3, 4)),  # ResNet: stem and layer1 at 4 -> layer1
        ((1, 2, 4, 8, 16, 32), (2, 3, 4, 5)),  # VGG: stage1.conv2 .. stage5.conv3, then pooled stage5
        ((2, 2, 4, 8, 16, 32), (2, 3, 4, 5)),  # MobileNet: stem and stage1 at 2
        ((4, 8, 16, 32), (0, 1, 2, 3)),  # ShuffleNet: the stem is the stride-4 map
    ],
)
def test_pyramid_indices_take_the_deepest_map_of_each_stride(strides, want):
    assert pyramid_indices(_info(*strides)) == want


def test_pyramid_indices_refuse_a_network_without_stride_32():
    with pytest.raises(
        ValueError, match=r"resnet56 has feature maps at strides \[1, 2, 4\], none at stride 8"
    ):
        pyramid_indices(_info(1, 1, 2, 4), name="resnet56")


@pytest.mark.parametrize(
    ("name", "layers", "channels"),
    [
        ("vgg16", ["stage3.conv3", "stage4.conv3", "stage5.conv3", "stage5"], [256, 512, 512, 512]),
        ("mobilenet", ["stage2", "stage3", "stage4", "stage5"], [128, 256, 512, 1024]),
        ("shufflenet", ["stem", "stage2", "stage3", "stage4"], [24, 240, 480, 960]),
        ("resnet50", ["layer1", "layer2", "layer3", "layer4"], [256, 512, 1024, 2048]),
    ],
)
def test_pyramid_extractor_picks_the_stride_4_to_32_stages_of_each_family(name, layers, channels):
    with torch.device("meta"):  # structure only: no memory for VGG's 138M parameters
        body = pyramid_extractor(name)
    assert body.return_layers == layers and body.channels == channels and body.strides == [4, 8, 16, 32]


def test_fasterrcnn_fpn_on_mobilenet_gets_the_stride_4_to_32_maps():
    model = fasterrcnn_fpn("mobilenet", num_classes=3, **TINY).eval()
    assert model.backbone.body.return_layers == ["stage2", "stage3", "stage4", "stage5"]
    with torch.no_grad():
        levels = model.backbone(torch.randn(1, 3, H, W))
    # P2..P5 at strides 4..32 and the pooled P6 (the hard-coded (1, 2, 3, 4) gave strides 2..16)
    assert [tuple(v.shape[-2:]) for v in levels.values()] == [(16, 20), (8, 10), (4, 5), (2, 3), (1, 2)]
    with torch.no_grad():
        out = model([torch.rand(3, H, W)])
    assert set(out[0]) == {"boxes", "labels", "scores"}


# --- the two-stream detector ------------------------------------------------------------------------


@pytest.mark.parametrize("head", ["retinanet", "fasterrcnn"])
def test_detector_trains_both_streams_and_every_se_fusion_parameter(head):
    det = _tiny(head).train()
    targets = _targets()
    losses = det(_inputs(), targets)
    retina = {"classification", "bbox_regression"}
    faster = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    want = retina if head == "retinanet" else faster
    assert set(losses) == want and all(math.isfinite(v.item()) for v in losses.values())
    sum(losses.values()).backward()
    body = det.backbone.body
    for m in ("rgb", "events"):
        assert body.streams[m].stem.conv1.weight.grad.abs().sum() > 0, m
        assert body.streams[m].layer4[-1].conv2.weight.grad.abs().sum() > 0, m
    assert len(body.fusions) == 4
    for name, p in body.fusions.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert torch.equal(targets[0]["labels"], torch.tensor([0, 2]))  # the caller's targets are not shifted


@pytest.mark.parametrize("head", ["retinanet", "fasterrcnn"])
def test_detector_labels_are_zero_based_in_and_out(head):
    det = _tiny(head).eval()
    if head == "retinanet":
        sizes = det.model.anchor_generator.sizes
        assert det.model.head.classification_head.num_classes == 3
        # P2..P7: 4 x stride, times 2^(1/3) and 2^(2/3), truncated as torchvision does
        assert sizes == (
            (16, 20, 25),
            (32, 40, 50),
            (64, 80, 101),
            (128, 161, 203),
            (256, 322, 406),
            (512, 645, 812),
        )
    else:
        assert det.model.roi_heads.box_predictor.cls_score.out_features == 4  # + torchvision's background
        sizes = det.model.rpn.anchor_generator.sizes
        assert sizes == ((32,), (64,), (128,), (256,), (512,))  # torchvision's default on P2..P6
    with torch.no_grad():
        out = det(_inputs())
    assert len(out) == 2
    for d in out:
        assert set(d) == {"boxes", "scores", "labels"} and d["boxes"].shape[1] == 4
        assert set(d["labels"].tolist()) == {0, 1, 2}  # every class shows with a score threshold of 0
    # on the way in: what torchvision receives
    det.train()
    seen = []
    forward = det.model.forward
    det.model.forward = lambda images, targets=None: (seen.append(targets), forward(images, targets))[1]
    det(_inputs(), _targets())
    offset = 0 if head == "retinanet" else 1
    assert seen[0][0]["labels"].tolist() == [0 + offset, 2 + offset]


def test_labels_out_of_range_are_refused():
    det = _tiny("fasterrcnn").train()
    targets = _targets()
    targets[1]["labels"] = torch.tensor([3])
    with pytest.raises(ValueError, match=r"target 1: labels must be class indices in 0..2 \(0-based"):
        det(_inputs(), targets)
    with pytest.raises(ValueError, match="in training mode the detector needs targets"):
        det(_inputs())


@pytest.mark.parametrize(
    ("modalities", "in_chans", "n_fusions"),
    [(("rgb",), 3, 0), (("events",), 5, 0), (("rgb", "events"), 8, 4)],
)
def test_modalities(modalities, in_chans, n_fusions):
    det = _tiny(modalities=modalities).eval()
    bb = det.backbone
    assert det.modalities == modalities and bb.in_chans == in_chans
    assert sorted(bb.body.streams) == sorted(modalities) and len(bb.body.fusions) == n_fusions
    # the FPN sees resnet18's widths whether the maps are fused or not
    assert [b[0].in_channels for b in bb.fpn.inner_blocks] == [64, 128, 256, 512]
    assert len(det.model.transform.image_mean) == in_chans
    only = [{m: s[m] for m in modalities} for s in _inputs()]
    with torch.no_grad():
        assert len(det(only)) == 2


def test_event_channels_and_normalisation():
    det = _tiny(event_channels=2).eval()
    assert det.event_channels == 2
    assert det.backbone.body.streams["events"].stem.conv1.in_channels == 2
    assert det.backbone.body.streams["rgb"].stem.conv1.in_channels == 3
    torch.testing.assert_close(det.model.transform.image_mean, IMAGENET_MEAN + [0.0, 0.0])
    torch.testing.assert_close(det.model.transform.image_std, [0.229, 0.224, 0.225, 1.0, 1.0])
    with pytest.raises(
        ValueError, match=r"sample 0: 'events' must be a \[2, H, W\] tensor, got \[5, 64, 80\]"
    ):
        det(_inputs(event_channels=5))


def test_bad_inputs_are_refused_in_one_line():
    det = _tiny().eval()
    samples = _inputs()
    del samples[0]["events"]
    with pytest.raises(ValueError) as err:
        det(samples)
    assert str(err.value) == (
        "sample 0 has no 'events' tensor; this detector was built with modalities ('rgb', 'events')"
    )
    samples = _inputs()
    samples[1]["events"] = torch.randn(5, 60, 80)
    with pytest.raises(ValueError, match=r"sample 1: 'rgb' is \(64, 80\) but 'events' is \(60, 80\)"):
        det(samples)
    samples = _inputs()
    samples[0]["rgb"] = (samples[0]["rgb"] * 255).to(torch.uint8)
    with pytest.raises(TypeError, match=r"sample 0: 'rgb' is torch.uint8; give float tensors"):
        det(samples)
    with pytest.raises(ValueError, match=r"takes \(N, 8, H, W\) inputs \(3 rgb \+ 5 events channels"):
        det.backbone(torch.randn(1, 3, H, W))


def test_bad_options_are_refused_in_one_line():
    with pytest.raises(ValueError, match=r"unknown head 'retina'.*Did you mean 'retinanet'\?"):
        create_detector("resnet18", head="retina")
    with pytest.raises(ValueError, match=r"unknown fusion 'cat'"):
        create_detector("resnet18", fusion="cat")
    with pytest.raises(ValueError, match=r"unknown modality names \['depth'\]"):
        create_detector("resnet18", modalities=("rgb", "depth"))
    with pytest.raises(ValueError, match=r"class_names has 2 names for num_classes=3"):
        create_detector("resnet18", 3, class_names=["car", "person"])
    with pytest.raises(ValueError, match=r"image_mean has 3 values for 8 input channels"):
        create_detector("resnet18", image_mean=IMAGENET_MEAN, image_std=[0.2] * 3)
    with pytest.raises(ValueError, match=r"resnet56 has feature maps at strides"):
        create_detector("resnet56")


def _levels(bb: TwoStreamBackbone, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return list(bb(x).values())


def test_channel_split_feeds_each_stream_its_own_channels():
    # 3 event channels: a swapped split would still have valid shapes, so only the values can tell
    bb = TwoStreamBackbone("resnet18", event_channels=3).eval()
    seen: dict[str, torch.Tensor] = {}
    for m in ("rgb", "events"):
        bb.body.streams[m].register_forward_hook(lambda mod, args, out, m=m: seen.__setitem__(m, out[-1]))
    x = torch.randn(2, 6, H, W)
    _levels(bb, x)
    base = dict(seen)
    y = x.clone()
    y[:, 3:] = 0  # events zeroed: the RGB stream's maps stay, the event stream's change
    _levels(bb, y)
    assert torch.equal(seen["rgb"], base["rgb"]) and not torch.allclose(seen["events"], base["events"])
    y = x.clone()
    y[:, :3] = 0
    _levels(bb, y)
    assert torch.equal(seen["events"], base["events"]) and not torch.allclose(seen["rgb"], base["rgb"])


def test_zeroing_events_changes_a_fused_detector_but_not_an_rgb_only_one():
    for modalities, changes in ((("rgb", "events"), True), (("rgb",), False)):
        det = _tiny(modalities=modalities).eval()
        samples = _inputs()
        blank = [{**s, "events": torch.zeros_like(s["events"])} for s in samples]
        with torch.no_grad():
            a, b = det(samples), det(blank)
        assert (not torch.equal(a[0]["scores"], b[0]["scores"])) is changes, modalities


def test_rgb_blanking_in_training_only():
    bb = TwoStreamBackbone("resnet18", rgb_blank_prob=1.0, backbone_kwargs={"norm_eval": True})
    x = torch.randn(2, 8, H, W)
    blank = x.clone()
    blank[:, :3] = 0
    bb.train()
    for a, b in zip(_levels(bb, x), _levels(bb, blank), strict=True):
        assert torch.equal(a, b)
    bb.eval()
    assert not torch.allclose(_levels(bb, x)[0], _levels(bb, blank)[0])
    bb.rgb_blank_prob = 0.0
    bb.train()
    assert not torch.allclose(_levels(bb, x)[0], _levels(bb, blank)[0])
    with pytest.raises(ValueError, match=r"rgb_blank_prob=1.5 must be a probability"):
        bb.rgb_blank_prob = 1.5


def test_rgb_blanking_draws_each_sample_on_its_own():
    bb = TwoStreamBackbone("resnet18", rgb_blank_prob=0.5, backbone_kwargs={"norm_eval": True}).train()
    seen = []
    bb.body.streams["rgb"].register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    x = torch.rand(8, 8, 32, 32) + 1  # no zero anywhere
    with torch.no_grad():
        bb(x)
    blanked = [bool((s == 0).all()) for s in seen[0]]
    kept = [torch.equal(s, xi[:3]) for s, xi in zip(seen[0], x, strict=True)]
    assert all(b != k for b, k in zip(blanked, kept, strict=True))
    assert 0 < sum(blanked) < 8, blanked  # seed 0: some samples blanked, some kept


def test_non_resnet_family_streams():
    bb = TwoStreamBackbone("mobilenet", fusion="concat").eval()
    assert bb.body.strides == [4, 8, 16, 32] and bb.body.channels == [128, 256, 512, 1024]
    assert bb.level_strides == [4, 8, 16, 32, 64, 128]
    shapes = [tuple(v.shape[-2:]) for v in _levels(bb, torch.randn(1, 8, H, W))]
    assert shapes == [(16, 20), (8, 10), (4, 5), (2, 3), (1, 2), (1, 1)]  # P2..P7


def test_backbone_weights_go_to_the_rgb_stream(tmp_path):
    trunk = create_model("resnet18")
    path = save_weights(trunk, tmp_path / "trunk.pt")
    det = _tiny(weights_backbone=path)
    streams = det.backbone.body.streams
    assert torch.equal(streams["rgb"].layer3[0].conv1.weight, trunk.layer3[0].conv1.weight)
    assert not torch.equal(streams["events"].layer3[0].conv1.weight, trunk.layer3[0].conv1.weight)
    assert det.create_kwargs.get("weights_backbone") is None
    with pytest.raises(ValueError, match="weights_backbone initialises the RGB stream"):
        create_detector("resnet18", modalities=("events",), weights_backbone=path)


@pytest.mark.parametrize("head", ["retinanet", "fasterrcnn"])
def test_detector_pickles_and_rebuilds_from_create_kwargs(head):
    det = _tiny(head, fusion_kwargs={"reduction": 8}, class_names=("person", "large_vehicle", "car")).eval()
    assert det.class_names == ("person", "large_vehicle", "car")
    samples = _inputs()
    with torch.no_grad():
        want = det(samples)
    copy = pickle.loads(pickle.dumps(det))
    rebuilt = create_detector(**det.create_kwargs)
    rebuilt.load_state_dict(det.state_dict())
    rebuilt.eval()
    assert rebuilt.class_names == det.class_names and rebuilt.modalities == det.modalities
    with torch.no_grad():
        for other in (copy, rebuilt):
            got = other(samples)
            for g, w in zip(got, want, strict=True):
                assert torch.equal(g["labels"], w["labels"])
                torch.testing.assert_close(g["scores"], w["scores"])
                torch.testing.assert_close(g["boxes"], w["boxes"])
