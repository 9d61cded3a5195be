"""torch.hub on the repository (hubconf.py, source="local") and the typed-package marker."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

import senet

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def offline_github(monkeypatch):
    """torch.hub.list/help take only a GitHub repo: serve this checkout as the repo's cached copy."""
    monkeypatch.setattr(torch.hub, "_get_cache_or_reload", lambda *a, **k: str(REPO))


def test_hub_lists_every_registered_model(offline_github):
    assert sorted(torch.hub.list("senet/senet")) == sorted(senet.list_models())


def test_hub_load_gives_the_registry_model_with_its_weights(tmp_path):
    ours = senet.create_model("se_resnet20").eval()
    path = senet.save_weights(ours, tmp_path / "w.pt")
    hub = torch.hub.load(str(REPO), "se_resnet20", source="local", weights=str(path)).eval()
    assert type(hub) is type(ours)
    assert sum(p.numel() for p in hub.parameters()) == sum(p.numel() for p in ours.parameters())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(hub(x), ours(x), rtol=0, atol=0)


def test_hub_passes_model_options_and_documents_each_entry(offline_github):
    model = torch.hub.load(str(REPO), "se_resnet50", source="local", num_classes=7, reduction=8)
    assert model.fc.out_features == 7
    se = next(m for m in model.modules() if isinstance(m, senet.SEBlock))
    assert se.fc1.out_channels == se.fc1.in_channels // 8
    doc = torch.hub.help("senet/senet", "se_resnext50_32x4d")
    assert "se_resnext50_32x4d" in doc and "weights" in doc


def test_hub_does_not_download_without_weights(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("torch.hub entry point tried to download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    torch.hub.load(str(REPO), "se_resnet20", source="local")


def test_the_wheel_ships_py_typed_and_data_files(tmp_path):
    """The built package carries py.typed (PEP 561), the recipes and the ImageNet class names."""
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", REPO, "--no-deps", "--no-build-isolation", "-w", tmp_path],
        capture_output=True,
        text=True,
    )
    if built.returncode != 0 and "No module named" in built.stderr:
        pytest.skip(f"cannot build a wheel here: {built.stderr.strip().splitlines()[-1]}")
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("senet-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in ["senet/py.typed", "senet/data/imagenet_classes.txt", "senet/recipes/cifar10-quick.yaml"]:
        assert path in names, path
