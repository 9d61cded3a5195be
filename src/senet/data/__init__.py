"""Data sets and transforms per recipe: ImageFolder trees, torchvision CIFAR, an in-memory cache.

:func:`build_data` turns the data fields of a recipe into a training and an evaluation loader;
the training engine and ``senet eval`` both go through it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .datasets import ArrayDataset, find_split, load_array_split, load_torchvision_cifar, scan_folder
from .loaders import FolderLoader, MemoryLoader, epoch_generator
from .transforms import BatchAugment, Cutout, draw_augment, eval_resize_for, folder_transforms, normalize

__all__ = [
    "ArrayDataset",
    "BatchAugment",
    "Cutout",
    "Data",
    "FolderLoader",
    "MemoryLoader",
    "build_data",
    "detect_dataset",
    "draw_augment",
    "epoch_generator",
    "eval_resize_for",
    "folder_dataset",
    "folder_transforms",
    "load_array_split",
    "normalize",
]

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Loader = MemoryLoader | FolderLoader


@dataclass
class Data:
    """The loaders of one run and what the model needs to know of the data."""

    train: Loader | None
    val: Loader
    classes: list[str]


def detect_dataset(data_dir: Path, dataset: str) -> str:
    """``folder``, ``cifar10`` or ``cifar100``: the given kind, or the one ``data_dir`` holds."""
    if dataset != "auto":
        return dataset
    if (data_dir / "train").is_dir() and ((data_dir / "val").is_dir() or (data_dir / "test").is_dir()):
        return "folder"
    if (data_dir / "cifar-10-batches-py").is_dir():
        return "cifar10"
    if (data_dir / "cifar-100-python").is_dir():
        return "cifar100"
    raise FileNotFoundError(
        f"{data_dir} holds neither train/ and val/ (or test/) class folders nor torchvision's "
        "cifar-10-batches-py / cifar-100-python (set dataset: cifar10 with --download to fetch CIFAR)"
    )


def folder_dataset(split_dir: Path, per_class: int, transform: torch.nn.Module) -> torch.utils.data.Dataset:
    from torchvision.datasets import ImageFolder

    ds = ImageFolder(str(split_dir), transform=transform)
    if per_class > 0:
        samples, _ = scan_folder(split_dir, per_class)
        keep = {p for p, _ in samples}
        ds.samples = [s for s in ds.samples if s[0] in keep]
        ds.imgs, ds.targets = ds.samples, [y for _, y in ds.samples]
    return ds


def build_data(
    data_dir: str | Path,
    *,
    dataset: str = "auto",
    download: bool = False,
    augment: str = "cifar",
    image_size: int = 32,
    eval_crop: int = 32,
    eval_resize: int = 0,
    scale_min: float = 0.08,
    cutout: int = 0,
    mean: Sequence[float] = CIFAR_MEAN,
    std: Sequence[float] = CIFAR_STD,
    in_memory: bool = True,
    cache_dir: str | None = "~/.cache/senet",
    train_subset: int = 0,
    val_subset: int = 0,
    batch_size: int = 128,
    eval_batch_size: int = 256,
    workers: int = 2,
    seed: int = 0,
    rank: int = 0,
    world: int = 1,
    device: torch.device | str = "cpu",
    train: bool = True,
) -> Data:
    """Loaders of a data set; ``batch_size`` is per process, subsets are images per class.

    ``train=False`` builds only the evaluation loader (for ``senet eval``).
    """
    root = Path(data_dir).expanduser()
    device = torch.device(device)
    if not root.is_dir() and not (download and dataset in ("cifar10", "cifar100")):
        raise FileNotFoundError(f"data folder {root} does not exist (check --data-dir)")
    kind = detect_dataset(root, dataset)
    if kind not in ("folder", "cifar10", "cifar100"):
        raise ValueError(f"dataset={kind!r}: expected auto, folder, cifar10 or cifar100")
    splits = [True, False] if train else [False]
    if kind in ("cifar10", "cifar100") or in_memory:
        arrays: dict[bool, ArrayDataset] = {}
        for is_train in splits:
            per_class = train_subset if is_train else val_subset
            if kind == "folder":
                arrays[is_train] = load_array_split(root, is_train, per_class=per_class, cache_dir=cache_dir)
            else:
                arrays[is_train] = load_torchvision_cifar(
                    root, is_train, 10 if kind == "cifar10" else 100, download
                ).subset_per_class(per_class)
        size = arrays[False].images.shape[-1]
        if augment == "imagenet":
            raise ValueError(
                "augment: imagenet needs streamed data (in_memory: false); use augment: cifar in memory"
            )
        pad = 4 if augment == "cifar" else 0
        common = dict(seed=seed, rank=rank, world=world, device=device)
        val = MemoryLoader(arrays[False], eval_batch_size, BatchAugment(mean, std, 0, False), False, **common)
        trn = None
        if train:
            aug = BatchAugment(mean, std, padding=pad, flip=augment == "cifar", cutout=cutout)
            trn = MemoryLoader(arrays[True], batch_size, aug, True, **common)
        if size != eval_crop and augment != "none":
            raise ValueError(
                f"in-memory images are {size}x{size} but eval_crop is {eval_crop}; set --eval-crop {size}"
            )
        return Data(trn, val, arrays[False].classes)
    tf = dict(image_size=image_size, eval_crop=eval_crop, eval_resize=eval_resize, mean=mean, std=std)
    val_ds = folder_dataset(
        find_split(root, False),
        val_subset,
        folder_transforms(augment, train=False, **tf, scale_min=scale_min),
    )
    common = dict(workers=workers, seed=seed, rank=rank, world=world, device=device)
    val = FolderLoader(val_ds, eval_batch_size, train=False, **common)
    trn = None
    if train:
        tf_train = folder_transforms(augment, train=True, **tf, scale_min=scale_min, cutout=cutout)
        trn = FolderLoader(
            folder_dataset(find_split(root, True), train_subset, tf_train), batch_size, train=True, **common
        )
    return Data(trn, val, list(val_ds.classes))
