"""Data sets and transforms per recipe: ImageFolder trees, torchvision CIFAR, an in-memory cache.

:func:`build_data` turns the data fields of a recipe into a training and an evaluation loader;
the training engine and ``senet eval`` both go through it. Bad data gets one clear line: unreadable
image files are skipped and listed in :attr:`Data.skipped` (or refused with ``strict=True``), class
folders that differ between the splits are refused (or, when the evaluation split holds a subset of
the training classes, mapped by name and told in :attr:`Data.notices`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..preprocessing import CIFAR10_MEAN, CIFAR10_STD
from .datasets import (
    ArrayDataset,
    BadImageError,
    FolderDataset,
    bad_files_message,
    check_headers,
    find_split,
    list_classes,
    load_array_split,
    load_torchvision_cifar,
    open_rgb,
    scan_folder,
    scan_split,
)
from .loaders import FolderLoader, MemoryLoader
from .sampling import SAMPLINGS, BalancedSampler, balanced_order, epoch_generator
from .transforms import BatchAugment, Cutout, draw_augment, eval_resize_for, folder_transforms, normalize

__all__ = [
    "ArrayDataset",
    "BadImageError",
    "BalancedSampler",
    "BatchAugment",
    "Cutout",
    "Data",
    "FolderDataset",
    "FolderLoader",
    "MemoryLoader",
    "balanced_order",
    "build_data",
    "build_data_from_config",
    "detect_dataset",
    "draw_augment",
    "epoch_generator",
    "eval_resize_for",
    "folder_dataset",
    "folder_transforms",
    "load_array_split",
    "match_classes",
    "normalize",
    "open_rgb",
    "scan_folder",
]


Loader = MemoryLoader | FolderLoader


@dataclass
class Data:
    """The loaders of one run and what the model needs to know of the data.

    ``classes`` are the training split's (the evaluation split's with ``train=False``); ``skipped``
    lists the unreadable files left out of both splits as ``(path, reason)``; ``notices`` are lines
    worth telling the user (e.g. an evaluation split holding only some of the classes).
    """

    train: Loader | None
    val: Loader
    classes: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)


def detect_dataset(data_dir: Path, dataset: str, train: bool = True) -> str:
    """``folder``, ``cifar10`` or ``cifar100``: the given kind, or the one ``data_dir`` holds.

    An ImageFolder tree needs ``train/`` and ``val/`` (or ``test/``); ``val/`` or ``test/`` alone
    with ``train=False`` (evaluation only).
    """
    if dataset != "auto":
        return dataset
    has_train = (data_dir / "train").is_dir()
    has_eval = (data_dir / "val").is_dir() or (data_dir / "test").is_dir()
    if has_eval and (has_train or not train):
        return "folder"
    if (data_dir / "cifar-10-batches-py").is_dir():
        return "cifar10"
    if (data_dir / "cifar-100-python").is_dir():
        return "cifar100"
    if has_train or has_eval:
        missing = "val/ or test/" if has_train else "train/"
        raise FileNotFoundError(
            f"{data_dir} holds {'train/' if has_train else 'val/ or test/'} but no {missing} folder: "
            "training needs train/ and val/ (or test/) class folders"
        )
    raise FileNotFoundError(
        f"{data_dir} holds neither train/ and val/ (or test/) class folders nor torchvision's "
        "cifar-10-batches-py / cifar-100-python (set dataset: cifar10 with --download to fetch CIFAR)"
    )


def folder_dataset(
    split_dir: Path,
    per_class: int,
    transform: Callable[[Any], Any] | None,
    *,
    classes: Sequence[str] | None = None,
    strict: bool = False,
) -> FolderDataset:
    """A streamed ImageFolder split over the files :func:`scan_folder` lists (as in memory).

    Every file is checked cheaply up front (:func:`~senet.data.datasets.check_image_header`):
    empty files and files that are no image are left out and listed in the dataset's ``skipped``
    (``strict`` raises :class:`BadImageError` instead); files that fail to decode later are replaced
    at load time (see :class:`FolderDataset`). ``classes``: label the split's class folders by their
    index in these names (the training classes) rather than in the split's own list; every folder
    must be among them.
    """
    scan = scan_split(Path(split_dir), per_class)
    skipped = sorted(scan.broken + check_headers([p for p, _ in scan.samples]))
    if strict and skipped:
        raise BadImageError(bad_files_message(split_dir, skipped))
    bad = {p for p, _ in skipped}
    samples = [s for s in scan.samples if s[0] not in bad]
    if not samples:
        raise BadImageError(f"{split_dir} holds no readable image: {bad_files_message(split_dir, skipped)}")
    names = scan.classes
    if classes is not None:
        index = {c: i for i, c in enumerate(classes)}
        unknown = [c for c in names if c not in index]
        if unknown:
            raise ValueError(f"class folders of {split_dir} not among the classes given: {unknown[:5]}")
        samples = [(p, index[names[y]]) for p, y in samples]
        names = list(classes)
    return FolderDataset(samples, names, transform, strict=strict, skipped=skipped)


def _shorten(names: Sequence[str], shown: int = 5) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"{list(names[:shown])}{more}"


def match_classes(known: list[str], known_name: str, eval_dir: Path) -> tuple[list[str] | None, list[str]]:
    """The classes to label the evaluation split with (``None``: its own) and a notice line.

    ``known`` are the training split's classes (or a checkpoint's). An evaluation split holding a
    subset of them is labelled by name; any other difference is refused: an extra class would index
    past the model's outputs, a renamed one would be scored against another class's output.
    """
    eval_classes = list_classes(eval_dir)
    if eval_classes == known:
        return None, []
    e = f"{eval_dir.name}/"
    only_known = [c for c in known if c not in set(eval_classes)]
    only_eval = [c for c in eval_classes if c not in set(known)]
    if eval_classes and not only_eval:
        notice = (
            f"{e} has {len(eval_classes)} of the {len(known)} classes of {known_name} "
            f"(missing: {', '.join(only_known[:5])}{' ...' if len(only_known) > 5 else ''}): "
            "evaluated on those, labels mapped by name"
        )
        return known, [notice]
    raise ValueError(
        f"the class folders of {eval_dir} and the classes of {known_name} differ: classes only in "
        f"{known_name}: {_shorten(only_known)}, only in {e}: {_shorten(only_eval)} (rename or remove "
        f"folders so that {e} holds the classes of {known_name} or some of them)"
    )


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
    mean: Sequence[float] = CIFAR10_MEAN,
    std: Sequence[float] = CIFAR10_STD,
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
    strict: bool = False,
    classes: Sequence[str] | None = None,
    sampling: str = "uniform",
) -> Data:
    """Loaders of a data set; ``batch_size`` is per process, subsets are images per class.

    ``train=False`` builds only the evaluation loader (for ``senet eval``); ``classes`` then names
    the classes the model was trained on (a checkpoint's), which the evaluation split's folders are
    labelled by (a subset is allowed and told in ``Data.notices``). Unreadable image files are
    skipped and listed in ``Data.skipped``; ``strict=True`` raises :class:`BadImageError` (a
    ``ValueError``) naming them instead. ``sampling="balanced"`` draws every class equally often in
    each training epoch (Sec. 6.1, :mod:`senet.data.sampling`).
    """
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling={sampling!r}: expected one of {', '.join(SAMPLINGS)}")
    root = Path(data_dir).expanduser()
    device = torch.device(device)
    if root.exists() and not root.is_dir():
        splits_wanted = "train/ and val/ (or test/)" if train else "val/ or test/"
        raise NotADirectoryError(
            f"data folder {root} is a file, not a folder (expected a folder with {splits_wanted} "
            "class folders; check --data-dir)"
        )
    if not root.is_dir() and not (download and dataset in ("cifar10", "cifar100")):
        raise FileNotFoundError(f"data folder {root} does not exist (check --data-dir)")
    kind = detect_dataset(root, dataset, train)
    if kind not in ("folder", "cifar10", "cifar100"):
        raise ValueError(f"dataset={kind!r}: expected auto, folder, cifar10 or cifar100")
    notices: list[str] = []
    known = list(classes) if classes is not None and not train else None
    label_by: list[str] | None = None  # the classes labelling the evaluation split, when not its own
    if kind == "folder" and train:
        train_dir = find_split(root, True)
        train_classes = list_classes(train_dir)
        label_by, notices = match_classes(train_classes, f"{train_dir.name}/", find_split(root, False))
    elif kind == "folder" and known is not None:
        label_by, notices = match_classes(known, "the checkpoint", find_split(root, False))
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
        skipped = [s for is_train in splits for s in arrays[is_train].skipped]
        if strict and skipped:
            raise BadImageError(bad_files_message(root, skipped))
        if label_by is not None:
            ev = arrays[False]
            lut = torch.tensor([label_by.index(c) for c in ev.classes], dtype=torch.int64)
            arrays[False] = ArrayDataset(ev.images, lut[ev.labels], list(label_by), ev.skipped)
        size = arrays[False].images.shape[-1]
        if augment in ("imagenet", "release"):
            raise ValueError(
                f"augment: {augment} needs streamed data (in_memory: false); use augment: cifar in memory"
            )
        pad = 4 if augment == "cifar" else 0
        common = dict(seed=seed, rank=rank, world=world, device=device)
        val = MemoryLoader(arrays[False], eval_batch_size, BatchAugment(mean, std, 0, False), False, **common)
        trn = None
        if train:
            aug = BatchAugment(mean, std, padding=pad, flip=augment == "cifar", cutout=cutout)
            trn = MemoryLoader(arrays[True], batch_size, aug, True, **common, sampling=sampling)
        if size != eval_crop and augment != "none":
            raise ValueError(
                f"in-memory images are {size}x{size} but eval_crop is {eval_crop}; set --eval-crop {size}"
            )
        return Data(trn, val, arrays[train].classes, skipped, notices)
    tf = dict(image_size=image_size, eval_crop=eval_crop, eval_resize=eval_resize, mean=mean, std=std)
    datasets: dict[bool, FolderDataset] = {}
    for is_train in splits:
        transform = folder_transforms(
            augment, train=is_train, **tf, scale_min=scale_min, cutout=cutout if is_train else 0
        )
        per_class = train_subset if is_train else val_subset
        datasets[is_train] = folder_dataset(
            find_split(root, is_train), per_class, transform, classes=None if is_train else label_by
        )
    skipped = [s for is_train in splits for s in datasets[is_train].skipped]
    if strict and skipped:
        raise BadImageError(bad_files_message(root, skipped))
    common = dict(workers=workers, seed=seed, rank=rank, world=world, device=device)
    for ds in datasets.values():
        ds.strict = strict
    val = FolderLoader(datasets[False], eval_batch_size, train=False, **common)
    trn = FolderLoader(datasets[True], batch_size, train=True, **common, sampling=sampling) if train else None
    return Data(trn, val, list(datasets[train].classes), skipped, notices)


#: Fields of a run's config (``senet.train.Config``) that :func:`build_data` takes under their own name.
CONFIG_FIELDS = (
    "dataset", "download", "augment", "image_size", "eval_crop", "eval_resize", "scale_min", "cutout",
    "mean", "std", "in_memory", "cache_dir", "train_subset", "val_subset", "eval_batch_size", "workers",
    "seed", "sampling",
)  # fmt: skip


def build_data_from_config(fields: Mapping[str, Any], **changes: Any) -> Data:
    """:func:`build_data` with the data fields of a run's config -- a ``Config.to_dict()`` or the
    config saved in a checkpoint (an older one may lack newer fields: their defaults apply) --
    and ``changes`` (e.g. ``batch_size`` per process, ``rank``, ``device``, ``data_dir``) on top."""
    kw: dict[str, Any] = {k: fields[k] for k in CONFIG_FIELDS if k in fields}
    kw["strict"] = bool(fields.get("strict_data", False))
    kw.update(changes)
    data_dir = kw.pop("data_dir", fields.get("data_dir"))
    if not data_dir:
        raise ValueError("no data folder: pass --data-dir PATH (an ImageFolder tree or torchvision's CIFAR)")
    return build_data(data_dir, **kw)
