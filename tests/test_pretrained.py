"""Weights that just work: saved with their metadata, loaded by path or URL (cached, verified),
fine-tuned to another class count, adapted to other input channels, with their preprocessing."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
import warnings

import pytest
import torch
from PIL import Image

import senet
from senet.preprocessing import Preprocessing, preprocessing
from senet.weights import WeightsMismatchError, load_weights, save_weights

IMAGENET = [n for n in senet.list_models() if senet.model_info(n).dataset == "imagenet"]
BIG = {"senet154", "se_resnet152", "resnet152", "inception_resnet_v2", "se_inception_resnet_v2"}


def _randomise_bn(model: torch.nn.Module) -> torch.nn.Module:
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _input(model: torch.nn.Module, batch: int = 2) -> torch.Tensor:
    size = max(64, getattr(model, "min_input_size", 32))
    return torch.randn(batch, model.in_chans, size, size)


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n for n in IMAGENET]
)
def test_round_trip_by_path_for_every_imagenet_network(tmp_path, name):
    src = _randomise_bn(senet.create_model(name))
    path = save_weights(src, tmp_path / f"{name}.pt")
    dst = senet.create_model(name, weights=path).eval()
    x = _input(src)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def served(tmp_path):
    """A loopback HTTP server over tmp_path/www (never the internet)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_url_is_downloaded_once_verified_and_usable_offline(served, tmp_path, monkeypatch):
    monkeypatch.setenv("SENET_CACHE", str(tmp_path / "cache"))
    root, base = served
    src = _randomise_bn(senet.create_model("se_resnet18"))
    path = save_weights(src, root / "se_resnet18.pt")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    url = f"{base}/se_resnet18.pt#sha256={sha}"
    first = senet.create_model("se_resnet18", weights=url).eval()
    path.unlink()  # the server no longer has it: the cache must serve
    second = senet.create_model("se_resnet18", weights=url).eval()
    x = _input(src)
    with torch.no_grad():
        assert torch.equal(first(x), src(x)) and torch.equal(second(x), src(x))
    cached = list((tmp_path / "cache" / "weights").iterdir())
    assert len(cached) == 1 and not any(p.name.startswith(".") for p in cached)


def test_url_with_wrong_sha256_is_refused(served, tmp_path, monkeypatch):
    monkeypatch.setenv("SENET_CACHE", str(tmp_path / "cache"))
    root, base = served
    save_weights(senet.create_model("resnet18"), root / "r18.pt")
    with pytest.raises(ValueError, match="does not match sha256"):
        senet.create_model("resnet18", weights=f"{base}/r18.pt#sha256={'0' * 64}")
    assert not list((tmp_path / "cache" / "weights").glob("*r18.pt"))


def test_file_url(tmp_path, monkeypatch):
    monkeypatch.setenv("SENET_CACHE", str(tmp_path / "cache"))
    src = _randomise_bn(senet.create_model("resnet18"))
    path = save_weights(src, tmp_path / "w.pt")
    dst = senet.create_model("resnet18", weights=path.as_uri()).eval()
    x = _input(src)
    with torch.no_grad():
        assert torch.equal(dst(x), src(x))


def test_new_class_count_reinitialises_only_the_classifier(tmp_path):
    src = _randomise_bn(senet.create_model("se_resnet50"))
    path = save_weights(src, tmp_path / "se50.pt")
    with pytest.warns(UserWarning, match=r"classifier \(fc.bias, fc.weight\) re-initialised for 10 classes"):
        dst = senet.create_model("se_resnet50", weights=path, num_classes=10)
    own, ref = dst.state_dict(), src.state_dict()
    assert dst.fc.out_features == 10
    assert all(torch.equal(own[k], ref[k]) for k in own if not k.startswith("fc."))


def test_checkpoint_class_count_is_kept_without_num_classes(tmp_path):
    path = save_weights(senet.create_model("resnet18", num_classes=7), tmp_path / "r.pt")
    assert senet.create_model("resnet18", weights=path).fc.out_features == 7
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same width: no notice
        senet.create_model("resnet18", weights=path, num_classes=7)


def test_plain_state_dict_with_other_classes_names_the_fix():
    sd = senet.create_model("resnet18", num_classes=5).state_dict()
    with pytest.raises(WeightsMismatchError, match="num_classes=N"):
        senet.create_model("resnet18", weights=sd)


@pytest.mark.parametrize("in_chans", [1, 4])
def test_in_chans_adapts_the_first_conv(in_chans):
    src = _randomise_bn(senet.create_model("resnet18"))
    dst = senet.create_model("resnet18", in_chans=in_chans, weights=src.state_dict()).eval()
    w, w3 = dst.stem.conv1.weight, src.stem.conv1.weight
    assert w.shape[1] == in_chans
    if in_chans == 1:  # a grey image through summed kernels == the grey image repeated in RGB
        torch.testing.assert_close(w, w3.sum(1, keepdim=True))
        x = torch.randn(2, 1, 64, 64)
        with torch.no_grad():
            torch.testing.assert_close(dst(x), src(x.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-4)
    else:
        torch.testing.assert_close(w[:, :3], w3 * 3 / 4)  # RGB repeated, scaled to keep the activation size
        torch.testing.assert_close(w[:, 3], w3[:, 0] * 3 / 4)


def test_preprocessing_travels_with_the_weights(tmp_path):
    model = senet.create_model("se_resnet50")
    assert model.preprocessing == Preprocessing()  # ImageNet mean/std, 224 from 256
    caffe = Preprocessing(mean=(104.0, 117.0, 123.0), std=(1.0, 1.0, 1.0), order="BGR", value_range=255.0)
    model.preprocessing = caffe
    path = save_weights(model, tmp_path / "m.pt")
    loaded = senet.create_model("se_resnet50", weights=path)
    assert loaded.preprocessing == caffe
    img = Image.new("RGB", (300, 400), (255, 0, 10))
    x = preprocessing(loaded)(img)
    assert x.shape == (3, 224, 224)
    torch.testing.assert_close(x[:, 100, 100], torch.tensor([10 - 104.0, 0 - 117.0, 255 - 123.0]))


def test_default_eval_transform_matches_the_paper():
    t = preprocessing(senet.create_model("resnet18"))
    img = Image.new("RGB", (512, 384), (124, 116, 104))  # ~ the ImageNet mean
    x = t(img)
    assert x.shape == (3, 224, 224) and x.abs().max() < 0.02
    assert senet.create_model("resnet18").preprocessing.resize_size == 256  # short side 256, crop 224


def test_layout_recorded_in_our_checkpoints_is_enforced(tmp_path):
    path = save_weights(senet.create_model("se_resnet50", layout="torchvision"), tmp_path / "tv.pt")
    with pytest.raises(WeightsMismatchError, match="layout='torchvision'"):
        load_weights(senet.create_model("se_resnet50"), path)
    load_weights(senet.create_model("se_resnet50", layout="torchvision"), path)


def test_save_is_atomic(tmp_path, monkeypatch):
    path = save_weights(senet.create_model("resnet18"), tmp_path / "w.pt")
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match=r"could not write .*w.pt: disk full .* the previous file is unchanged"):
        save_weights(senet.create_model("resnet34"), path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["w.pt"]
