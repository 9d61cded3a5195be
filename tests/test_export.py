"""Export: ONNX run by onnxruntime against PyTorch for every ImageNet network, TorchScript and
torch.export round trips, checkpoints that rebuild their own architecture, and ``senet export``."""

from __future__ import annotations

import copy

import pytest
import torch

import senet
from senet.cli import main
from senet.export import check_export, export_model, load_for_export, run_export
from senet.weights import save_weights

IMAGENET = [n for n in senet.list_models() if senet.model_info(n).dataset == "imagenet"]
# Over ~40M parameters: minutes of export each on a small CPU.
LARGE = {
    "senet154",
    "vgg16",
    "se_vgg16",
    "resnet101",
    "se_resnet101",
    "resnet152",
    "se_resnet152",
    "resnext101_32x4d",
    "se_resnext101_32x4d",
    "inception_resnet_v2",
    "se_inception_resnet_v2",
}


# Default run: every SE network up to ~30M parameters and resnet50; the other plain twins (the same
# graph without the SE ops) and the large networks run with -m slow.
FAST = {n for n in IMAGENET if n not in LARGE and (senet.model_info(n).se or n == "resnet50")}


@pytest.mark.parametrize(
    "name", [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in IMAGENET]
)
def test_onnx_runtime_gives_the_pytorch_logits(measure_bn, name, tmp_path):
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    model = senet.create_model(name)
    size = max(64, model.min_input_size)
    model = measure_bn(model, size, affine=False, seed=0)
    path = export_model(model, "onnx", tmp_path / f"{name}.onnx", input_size=size)
    x = torch.randn(3, 3, size, size)  # batch 3: the export's example had 2, so the batch is dynamic
    with torch.no_grad():
        ref = model(x)
    out = run_export(path, "onnx", x)
    assert out.shape == ref.shape == (3, 1000)
    assert ref.abs().max() > 1e-2  # logits of a size that makes 1e-4 a real bound
    diff = (out - ref).abs().max().item()
    if diff > 1e-4:
        # Deep untrained networks (ResNet-101/152, SENet-154) accumulate float32 rounding beyond 1e-4
        # in PyTorch itself; then onnxruntime must be as close to PyTorch as PyTorch is to float64.
        with torch.no_grad():
            exact = copy.deepcopy(model).double()(x.double())
        own_error = (ref.double() - exact).abs().max().item()
        assert diff <= 2 * own_error, f"onnxruntime off by {diff:.2e}; PyTorch's own error {own_error:.2e}"


@pytest.mark.parametrize(("fmt", "suffix"), [("torchscript", ".pt"), ("exported_program", ".pt2")])
def test_torchscript_and_exported_program_round_trips(measure_bn, fmt, suffix, tmp_path):
    model = measure_bn(senet.create_model("se_resnet18", num_classes=10), affine=False, seed=0)
    path = export_model(model, fmt, tmp_path / f"model{suffix}", input_size=64)
    for batch in (1, 5):
        x = torch.randn(batch, 3, 64, 64)
        with torch.no_grad():
            torch.testing.assert_close(run_export(path, fmt, x), model(x), rtol=1e-5, atol=1e-5)


def test_fused_export_keeps_the_function(measure_bn, tmp_path):
    model = measure_bn(senet.create_model("se_mobilenet", num_classes=10), affine=False, seed=0)
    path = export_model(model, "exported_program", tmp_path / "m.pt2", input_size=64, fuse=True)
    assert check_export(model, path, "exported_program", input_size=64) <= 1e-4
    assert "batch_norm" not in str(torch.export.load(path).graph)


def test_checkpoint_of_save_weights_rebuilds_its_architecture(measure_bn, tmp_path):
    model = measure_bn(senet.create_model("se_resnet18", num_classes=7, reduction=8), affine=False, seed=0)
    save_weights(model, tmp_path / "ckpt.pt")
    loaded, size = load_for_export(tmp_path / "ckpt.pt")
    assert size == 224 and loaded.fc.out_features == 7 and loaded.layer1[0].se.hidden == 8
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_training_checkpoint_rebuilds_its_architecture_and_crop(measure_bn, tmp_path):
    """The entries `senet train` wrote before checkpoint format 2 (model_name, model_kwargs,
    num_classes, config, no arch): today's reader still opens them."""
    model = measure_bn(
        senet.create_model("se_resnet20", num_classes=4, reduction=4), 32, affine=False, seed=0
    )
    ckpt = {
        "model": model.state_dict(),
        "optimizer": {"state": {}, "param_groups": []},
        "epoch": 3,
        "model_name": "se_resnet20",
        "model_kwargs": {"reduction": 4},
        "num_classes": 4,
        "config": {"eval_crop": 32, "model": "se_resnet20"},
    }
    torch.save(ckpt, tmp_path / "last.pt")
    loaded, size = load_for_export(tmp_path / "last.pt")
    assert size == 32
    path = export_model(loaded, "exported_program", tmp_path / "last.pt2", input_size=size)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(run_export(path, "exported_program", x), model(x), rtol=1e-5, atol=1e-5)


def test_cli_export_writes_and_checks(tmp_path, capsys):
    out = tmp_path / "r18.pt"
    assert (
        main(["export", "se_resnet18", "--format", "torchscript", "--out", str(out), "--input-size", "64"])
        == 0
    )
    assert out.is_file()
    line = capsys.readouterr().out
    assert "torchscript" in line and "64 x 64" in line and "max abs diff vs PyTorch 0.00e+00" in line


def test_cli_export_with_a_state_dict_needs_the_name(tmp_path, capsys):
    model = senet.create_model("resnet18")
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    args = ["--format", "exported_program", "--out", str(tmp_path / "m.pt2"), "--input-size", "32"]
    assert main(["export", str(tmp_path / "sd.pt"), *args]) == 2
    assert "records no architecture" in capsys.readouterr().err
    assert main(["export", "resnet18", "--weights", str(tmp_path / "sd.pt"), *args]) == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["se_resnet5O", "--format", "onnx", "--out", "m.onnx"], "Did you mean"),
        (["se_resnet18", "--format", "onnx", "--out", "m.onnx", "--input-size", "16"], "minimum 32"),
        (["se_resnet18", "--format", "exported_program", "--out", "m.pt"], ".pt2"),
        (["se_resnet18", "--format", "onnx", "--out", "no/such/dir/m.onnx"], "does not exist"),
    ],
)
def test_cli_export_errors_name_the_fix(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["export", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


FORMATS_FILES = [("torchscript", "m.pt"), ("exported_program", "m.pt2"), ("onnx", "m.onnx")]


@pytest.mark.parametrize("fmt,name", FORMATS_FILES)
def test_a_failed_export_keeps_the_previous_file(fmt, name, tmp_path):
    """A full disk during the export: one line, the previous good file intact, no temporary left."""
    import os
    import resource
    import subprocess
    import sys

    if fmt == "onnx":
        pytest.importorskip("onnxscript")
    out = tmp_path / name
    cmd = [sys.executable, "-m", "senet", "export", "resnet20", "--format", fmt, "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stderr
    good = out.read_bytes()

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))  # the file is ~1 MB

    again = subprocess.run(cmd, capture_output=True, text=True, env=env, preexec_fn=small_disk)
    assert again.returncode == 2, again.stderr[-2000:]
    (line,) = again.stderr.strip().splitlines()
    assert line.startswith(f"senet export: error: could not write {out}")
    assert "the previous file is unchanged" in line
    assert out.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == [name]
