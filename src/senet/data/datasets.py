"""Where images come from: ImageFolder trees, torchvision's CIFAR format, and an in-memory cache.

Two kinds of data set serve every recipe:

* :class:`ArrayDataset` holds a whole split as one ``uint8`` tensor ``(N, 3, H, W)`` plus labels.
  CIFAR-scale data (60,000 images of 32x32) is decoded once and kept in memory, so that decoding
  never dominates an epoch on a small CPU; the decoded arrays of an ImageFolder split are cached
  as ``.npy`` files under ``~/.cache/senet`` keyed by the folder's path, file count and mtimes,
  so a second run starts in seconds.
* torchvision's :class:`~torchvision.datasets.ImageFolder` streams files through per-image
  transforms (ImageNet, Places365: images of different sizes that do not fit in memory).
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["ArrayDataset", "find_split", "folder_signature", "load_array_split", "scan_folder"]

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
TRAIN_SPLITS = ("train",)
EVAL_SPLITS = ("val", "test")


@dataclass
class ArrayDataset:
    """A split held in memory: ``images`` uint8 ``(N, C, H, W)``, ``labels`` int64 ``(N,)``."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]

    def __len__(self) -> int:
        return int(self.labels.numel())

    def subset_per_class(self, n: int) -> ArrayDataset:
        """The first ``n`` images of every class (in file order): a small, balanced, real subset."""
        if n <= 0:
            return self
        keep = torch.cat([torch.nonzero(self.labels == c).flatten()[:n] for c in range(len(self.classes))])
        keep = keep.sort().values
        return ArrayDataset(self.images[keep], self.labels[keep], self.classes)


def find_split(data_dir: Path, train: bool) -> Path:
    """``data_dir/train`` for training; ``data_dir/val`` or else ``data_dir/test`` for evaluation."""
    names = TRAIN_SPLITS if train else EVAL_SPLITS
    for name in names:
        if (data_dir / name).is_dir():
            return data_dir / name
    wanted = " or ".join(f"{data_dir / n}/" for n in names)
    raise FileNotFoundError(
        f"no {wanted} folder: the data set must be in the ImageFolder layout <split>/<class>/*.jpg"
    )


def scan_folder(split_dir: Path, per_class: int = 0) -> tuple[list[tuple[str, int]], list[str]]:
    """(path, label) pairs of an ImageFolder split, classes sorted as torchvision sorts them."""
    classes = sorted(e.name for e in os.scandir(split_dir) if e.is_dir())
    if not classes:
        raise FileNotFoundError(f"{split_dir} has no class folders (expected {split_dir}/<class>/*.jpg)")
    samples: list[tuple[str, int]] = []
    for label, cls in enumerate(classes):
        files = sorted(
            e.path
            for e in os.scandir(split_dir / cls)
            if e.is_file() and e.name.lower().endswith(IMG_EXTENSIONS)
        )
        samples += [(f, label) for f in (files[:per_class] if per_class > 0 else files)]
    if not samples:
        raise FileNotFoundError(f"{split_dir} holds no images ({', '.join(IMG_EXTENSIONS)})")
    return samples, classes


def folder_signature(split_dir: Path, samples: list[tuple[str, int]]) -> str:
    """A key that changes when the folder's path, its file list or any class folder's mtime changes."""
    h = hashlib.sha1(str(split_dir.resolve()).encode())
    h.update(str(len(samples)).encode())
    for cls_dir in sorted({os.path.dirname(p) for p, _ in samples}):
        h.update(f"{cls_dir}:{os.stat(cls_dir).st_mtime_ns}".encode())
    h.update(samples[0][0].encode() + samples[-1][0].encode())
    return h.hexdigest()[:16]


def _decode(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _decode_folder(samples: list[tuple[str, int]]) -> np.ndarray:
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        arrays = list(pool.map(_decode, (p for p, _ in samples), chunksize=256))
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(
            f"in_memory needs images of one size, found {len(shapes)} sizes (e.g. {sorted(shapes)[:3]}); "
            "set in_memory: false for this data set"
        )
    return np.stack(arrays).transpose(0, 3, 1, 2).copy()


def _cache_dir(cache_dir: str | None) -> Path | None:
    if not cache_dir:
        return None
    return Path(os.path.expanduser(cache_dir))


def load_array_split(
    data_dir: str | Path, train: bool, *, per_class: int = 0, cache_dir: str | None = "~/.cache/senet"
) -> ArrayDataset:
    """Decode an ImageFolder split into memory (or read it from the ``.npy`` cache)."""
    split_dir = find_split(Path(data_dir), train)
    samples, classes = scan_folder(split_dir, per_class)
    labels = torch.tensor([y for _, y in samples], dtype=torch.int64)
    cache = _cache_dir(cache_dir)
    key = folder_signature(split_dir, samples)
    path = cache / f"{split_dir.name}-{key}.npy" if cache else None
    if path is not None and path.exists():
        try:
            images = np.load(path, mmap_mode=None)
            if images.shape[0] == len(samples):
                return ArrayDataset(torch.from_numpy(images), labels, classes)
        except (OSError, ValueError):
            pass
    images = _decode_folder(samples)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                np.save(f, images)
            os.replace(tmp, path)
            meta = {"folder": str(split_dir.resolve()), "images": len(samples), "shape": list(images.shape)}
            path.with_suffix(".json").write_text(json.dumps(meta))
        except OSError:
            pass
    return ArrayDataset(torch.from_numpy(images), labels, classes)


def load_torchvision_cifar(root: str | Path, train: bool, num_classes: int, download: bool) -> ArrayDataset:
    """CIFAR-10 / CIFAR-100 in torchvision's pickled format (downloaded only when asked)."""
    from torchvision import datasets

    cls = datasets.CIFAR10 if num_classes == 10 else datasets.CIFAR100
    try:
        ds = cls(str(root), train=train, download=download)
    except RuntimeError as e:
        hint = (
            "" if download else " (pass --download to fetch it, or point --data-dir at an ImageFolder copy)"
        )
        raise FileNotFoundError(f"{cls.__name__} not found in {root}{hint}") from e
    images = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
    return ArrayDataset(images, torch.tensor(ds.targets, dtype=torch.int64), list(ds.classes))
