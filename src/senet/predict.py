"""Classify images with a trained network: top-k class names and probabilities per image.

``predict(model, images)`` takes paths, PIL images or image tensors, prepares them with the
preprocessing carried by the weights (``model.preprocessing``: resize, centre crop, colour order,
mean/std; see :mod:`senet.preprocessing`) and names the classes with :func:`class_names` (the
training data's class folders recorded in the checkpoint, or ImageNet's 1000 names for a
1000-way classifier). An image that cannot be read gives a :class:`Prediction` with ``error`` set
instead of stopping the others. ``senet predict`` is the command-line face of this module.
"""

from __future__ import annotations

import glob
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .data.datasets import IMG_EXTENSIONS
from .preprocessing import Preprocessing

__all__ = ["Prediction", "class_names", "expand_images", "imagenet_classes", "predict"]

ImageInput = str | Path | torch.Tensor | Any  # a path, a (C, H, W) tensor or a PIL image


@dataclass
class Prediction:
    """The top-k classes of one image (best first), or why the image could not be classified."""

    source: str
    labels: list[str] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    probs: list[float] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@cache
def imagenet_classes() -> tuple[str, ...]:
    """ImageNet-1k's class names in the standard index order (sorted WordNet ids), shipped with senet."""
    text = resources.files("senet.data").joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    return tuple(line for line in text.splitlines() if line)


def class_names(model: nn.Module) -> list[str]:
    """Names of ``model``'s outputs: those its checkpoint recorded (``model.class_names``, the
    training data's class folders), ImageNet's for a 1000-way classifier, else ``"0"``, ``"1"``, ..."""
    fc = getattr(model, "fc", None)
    n = fc.out_features if isinstance(fc, nn.Linear) else None
    names = getattr(model, "class_names", None)
    if names and (n is None or len(names) == n):
        return [str(c) for c in names]
    if n == 1000:
        return list(imagenet_classes())
    return [str(i) for i in range(n or 0)]


def expand_images(items: Iterable[str | Path]) -> list[str]:
    """Files named by ``items``: a file as given, a folder's image files (recursively, sorted), a glob
    pattern's matches; a name matching nothing is kept, so that it is reported as missing."""
    out: list[str] = []
    for item in items:
        p = Path(item).expanduser()
        if p.is_dir():
            out += sorted(str(f) for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMG_EXTENSIONS)
        elif p.exists() or not glob.has_magic(str(item)):
            out.append(str(item))
        else:
            out += sorted(f for f in glob.glob(str(p), recursive=True) if Path(f).is_file()) or [str(item)]
    return out


def _read(image: ImageInput) -> tuple[str, Any]:
    """(name, image) of a path, PIL image or tensor; raises ValueError naming why a file is unreadable."""
    if isinstance(image, torch.Tensor):
        return f"tensor{tuple(image.shape)}", image
    if not isinstance(image, (str, Path)):
        return type(image).__name__, image
    from PIL import Image, UnidentifiedImageError

    path = Path(image).expanduser()
    if not path.is_file():
        raise ValueError("no such file" if not path.exists() else "not a file")
    try:
        with Image.open(path) as im:
            return str(image), im.convert("RGB")  # convert() decodes the whole file
    except UnidentifiedImageError:
        raise ValueError("not an image file PIL can read") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"unreadable image ({type(e).__name__}: {e})") from None


@torch.no_grad()
def predict(
    model: nn.Module,
    images: ImageInput | Sequence[ImageInput],
    *,
    topk: int = 5,
    batch_size: int = 32,
    device: str | torch.device | None = None,
) -> list[Prediction]:
    """Top-``topk`` classes and softmax probabilities of each image, in the order given.

    ``model`` must carry its preprocessing (every model of :func:`senet.create_model` /
    :func:`senet.load_model` does). ``device`` defaults to the model's.
    """
    if topk < 1 or batch_size < 1:
        raise ValueError(f"topk={topk} and batch_size={batch_size} must be >= 1")
    prep = getattr(model, "preprocessing", None)
    if not isinstance(prep, Preprocessing):
        raise ValueError(
            f"{type(model).__name__} carries no preprocessing: build it with senet.create_model or "
            "set model.preprocessing = senet.Preprocessing(...)"
        )
    if isinstance(images, (str, Path, torch.Tensor)) or not isinstance(images, Sequence):
        images = [images]
    transform = prep.transform()
    if device is not None:
        model.to(device)
    param = next(model.parameters(), None)
    dev = param.device if param is not None else torch.device("cpu")
    model.eval()
    names = class_names(model)
    results: list[Prediction] = []
    for start in range(0, len(images), batch_size):
        batch, slots = [], []
        for image in images[start : start + batch_size]:
            try:
                name, img = _read(image)
                batch.append(transform(img))
                slots.append(len(results))
                results.append(Prediction(name))
            except ValueError as e:
                results.append(Prediction(str(image), error=str(e)))
        if not batch:
            continue
        probs = model(torch.stack(batch).to(dev)).float().softmax(1)
        top = probs.topk(min(topk, probs.shape[1]), dim=1)
        for slot, p, i in zip(slots, top.values.tolist(), top.indices.tolist(), strict=True):
            results[slot].indices, results[slot].probs = i, p
            results[slot].labels = [names[j] if j < len(names) else str(j) for j in i]
    return results
