"""Export a network for deployment: ONNX, TorchScript or a ``torch.export`` ExportedProgram.

:func:`load_for_export` builds the model from a registry name (fresh weights, or ``weights=`` a
state dict in any layout :func:`senet.load_weights` reads) or from a checkpoint that records its
architecture (``senet train``'s ``last.pt`` / ``best.pt``, :func:`senet.weights.save_weights`).
:func:`export_model` writes one file with a dynamic batch dimension and a fixed image size, and
:func:`check_export` runs the written file (ONNX through onnxruntime) against PyTorch.

The exported function is the eval-mode network. ``fuse=True`` folds BN into the convolutions
first (:func:`senet.fuse_for_inference`); ONNX runtimes do that themselves, so it is off by default.
"""

from __future__ import annotations

import importlib.util
import io
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .weights import error_summary

__all__ = ["FORMATS", "check_export", "export_model", "load_for_export"]

FORMATS = ("onnx", "torchscript", "exported_program")


def load_for_export(source: str | Path, *, weights: str | Path | None = None) -> tuple[nn.Module, int]:
    """The eval-mode model named by ``source`` (a registered name or a checkpoint path) and its
    image size (the checkpoint's evaluation crop, else the registry's input size).

    A checkpoint must record its architecture (``arch`` + ``create_kwargs``, as every senet
    checkpoint does; older ``senet train`` files are read too): :func:`senet.factory.load_model`
    rebuilds it. A plain state dict needs the name: ``load_for_export(name, weights=path)``.
    """
    from .factory import create_model, load_model
    from .models import list_models, model_info
    from .weights import load_weights, read_checkpoint

    source = str(source)
    if source in list_models():
        model = create_model(source)
        if weights is not None:
            load_weights(model, weights)
        return model.eval(), _default_size(model)
    path = Path(source)
    if not path.is_file():
        model_info(source)  # unknown names fail here with close matches
        raise FileNotFoundError(f"{source!r} is neither a registered model name nor a checkpoint file")
    if weights is not None:
        raise ValueError("give either a checkpoint or NAME --weights FILE, not both")
    _, meta = read_checkpoint(path)  # today's format, whatever the file's age
    if not meta.get("arch"):
        raise ValueError(
            f"{path} records no architecture (a plain state dict): name the model and pass the file as "
            f"weights, e.g. `senet export NAME --weights {path} ...`"
        )
    model = load_model(path).eval()
    crop = meta["config"].get("eval_crop") if isinstance(meta.get("config"), dict) else None
    return model, int(crop or _default_size(model))


def _default_size(model: nn.Module) -> int:
    pre = getattr(model, "preprocessing", None)
    return int(pre.input_size[-1]) if pre is not None else 224


def _input_size(model: nn.Module, input_size: int | None) -> int:
    min_size = int(getattr(model, "min_input_size", 1))
    if input_size is None:
        input_size = _default_size(model)
    if input_size < min_size:
        raise ValueError(f"--input-size {input_size} is below the network's minimum {min_size}")
    return int(input_size)


def example_input(model: nn.Module, input_size: int | None = None, batch_size: int = 2) -> torch.Tensor:
    """A random batch of the model's ``in_chans`` at ``input_size`` (default: the model's own)."""
    size = _input_size(model, input_size)
    return torch.randn(batch_size, int(getattr(model, "in_chans", 3)), size, size)


def export_model(
    model: nn.Module,
    fmt: str,
    out: str | Path,
    *,
    input_size: int | None = None,
    fuse: bool = False,
) -> Path:
    """Write ``model`` (eval mode) to ``out`` in format ``fmt``; batch size is dynamic.

    Formats: ``onnx`` (``torch.onnx.export`` with the torch.export-based exporter; input
    ``input``, output ``logits``), ``torchscript`` (``torch.jit.trace``; load with
    ``torch.jit.load``) and ``exported_program`` (``torch.export``; load with
    ``torch.export.load(path).module()``). The image size is fixed to ``input_size``
    (default: the model's own).
    """
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {FORMATS}")
    out = Path(out)
    if out.is_dir():
        suffix = {"onnx": ".onnx", "torchscript": ".pt", "exported_program": ".pt2"}[fmt]
        raise IsADirectoryError(
            f"{out} is a folder: give the file to write, e.g. --out {out / 'model'}{suffix}"
        )
    if not out.parent.is_dir():
        raise FileNotFoundError(f"output folder {out.parent} does not exist")
    if input_size is not None and input_size < 1:
        raise ValueError(f"input_size={input_size} must be >= 1")
    if fmt == "exported_program" and out.suffix != ".pt2":
        raise ValueError(f"torch.export programs are .pt2 archives: use --out {out.with_suffix('.pt2')}")
    model = model.eval()
    if fuse:
        from .inference import fuse_for_inference

        model = fuse_for_inference(model, channels_last=False, prepack=False)
    x = example_input(model, input_size).to(next(model.parameters()).device)
    big = sum(p.numel() * p.element_size() for p in model.parameters()) > 1.8e9  # protobuf limit: 2 GB
    # Written to a temporary file and renamed: a failed export (full disk) keeps the previous file.
    # Not for ONNX's external-data format, whose data file is named after the .onnx file.
    tmp = out if (fmt == "onnx" and big) else out.with_name(f".{out.stem}.{os.getpid()}.tmp{out.suffix}")
    try:
        _write(model, fmt, x, tmp, big)
        if tmp != out:
            os.replace(tmp, out)
    except (OSError, RuntimeError) as e:
        kept = "the previous file is unchanged" if out.exists() and tmp != out else "nothing usable written"
        raise OSError(f"could not write {out}: {error_summary(e)} (disk full?); {kept}") from e
    finally:
        if tmp != out and tmp.exists():
            tmp.unlink()
    return out


def _write(model: nn.Module, fmt: str, x: torch.Tensor, out: Path, big: bool) -> None:
    batch = torch.export.Dim("batch", min=1, max=4096)
    if fmt == "onnx":
        missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
        if missing:
            raise ValueError(f"ONNX export needs {', '.join(missing)}: pip install {' '.join(missing)}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (x,),
                str(out),
                dynamo=True,
                input_names=["input"],
                output_names=["logits"],
                dynamic_shapes=({0: batch},),
                external_data=big,
                verbose=False,
            )
    elif fmt == "torchscript":
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarning, and TorchScript's deprecation notice
            traced = torch.jit.trace(model, x, check_trace=False)
            with open(out, "wb") as f:  # a Python file: a failed write raises (a path aborts in C++)
                torch.jit.save(traced, f)
    else:
        with torch.no_grad():
            ep = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
        buffer = io.BytesIO()  # torch.export's writer aborts the process on a failed file write
        torch.export.save(ep, buffer)
        out.write_bytes(buffer.getbuffer())


def run_export(path: str | Path, fmt: str, x: torch.Tensor) -> torch.Tensor:
    """Run an exported file on ``x`` (ONNX through onnxruntime's CPU provider)."""
    path = str(path)
    if fmt == "onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        return torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x.cpu().numpy()})[0])
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            loaded: Any = torch.jit.load(path, map_location="cpu")
    else:
        loaded = torch.export.load(path).module()
    with torch.no_grad():
        return loaded(x.cpu())


def check_export(
    model: nn.Module, path: str | Path, fmt: str, *, input_size: int | None = None, batch_size: int = 3
) -> float | None:
    """Max abs difference between ``model`` and its exported file on a random batch.

    ``batch_size`` differs from the export's example batch on purpose (dynamic batch). Returns
    ``None`` when the runtime is missing (onnxruntime for ONNX).
    """
    if fmt == "onnx" and importlib.util.find_spec("onnxruntime") is None:
        return None
    model = model.eval()
    x = example_input(model, input_size, batch_size)
    with torch.no_grad():
        ref = model(x.to(next(model.parameters()).device)).cpu()
    return (run_export(path, fmt, x) - ref).abs().max().item()
