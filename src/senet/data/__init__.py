"""Data sets and transforms per recipe: ImageFolder trees, torchvision CIFAR, an in-memory cache.

:func:`build_data` turns the data part of a run's config (:class:`DataConfig`) into a training and
an evaluation loader; training, ``senet eval`` and ``senet excite`` all go through it. Bad data gets
one clear line: unreadable image files are skipped and listed in :attr:`Data.skipped` (or refused
with ``strict_data=True``), class folders that differ between the splits are refused (or, when the
evaluation split holds a subset of the training classes, mapped by name and told in :attr:`Data.notices`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from ..preprocessing import CIFAR10_MEAN, CIFAR10_STD
from .datasets import (
    ArrayDataset,
    BadImageError,
    FolderDataset,
    bad_files_message,
    find_split,
    folder_dataset,
    list_classes,
    load_array_split,
    load_torchvision_cifar,
    open_rgb,
    scan_folder,
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
    "DataConfig",
    "FolderDataset",
    "FolderLoader",
    "MemoryLoader",
    "balanced_order",
    "build_data",
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
AUGMENTS = ("cifar", "imagenet", "release", "none")
DATASETS = ("auto", "folder", "cifar10", "cifar100")


def setting(default: Any, meaning: str) -> Any:
    """A config field and its one-line meaning (with the unit), shown by ``senet train --help``."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"help": meaning})
    return field(default=default, metadata={"help": meaning})


@dataclass(frozen=True)
class DataConfig:
    """Where a run's images are and how they are read, augmented and normalised: the ``data`` part of
    a training config (:class:`senet.train.Config`), which :func:`build_data` takes whole."""

    data_dir: str = setting(
        "", "data folder: an ImageFolder tree (train/, val/ or test/) or torchvision CIFAR"
    )
    dataset: str = setting("auto", f"data set kind: {', '.join(DATASETS)} (auto: from the folder)")
    download: bool = setting(False, "download torchvision CIFAR into data_dir when absent")
    augment: str = setting("cifar", f"training augmentation: {', '.join(AUGMENTS)}")
    image_size: int = setting(32, "training crop side, pixels")
    eval_crop: int = setting(32, "evaluation centre-crop side, pixels")
    eval_resize: int = setting(0, "evaluation short side before the crop, pixels (0: crop * 256/224)")
    scale_min: float = setting(0.08, "smallest area fraction of the random-size crop (augment: imagenet)")
    cutout: int = setting(0, "Cutout square side, pixels (0: off)")
    mean: list[float] = setting(list(CIFAR10_MEAN), "per-channel R G B mean of [0, 1] pixels")
    std: list[float] = setting(list(CIFAR10_STD), "per-channel R G B std of [0, 1] pixels")
    in_memory: bool = setting(True, "decode every image once into memory (small images of one size)")
    cache_dir: str = setting("~/.cache/senet", "where decoded in-memory data sets are cached ('' : no cache)")
    train_subset: int = setting(0, "training images per class (0: all)")
    val_subset: int = setting(0, "evaluation images per class (0: all)")
    workers: int = setting(2, "image-decoding worker processes for streamed data")
    sampling: str = setting(
        "uniform", "training order: uniform shuffle, or balanced (every class drawn equally often, Sec. 6.1)"
    )
    strict_data: bool = setting(
        False, "refuse a data set with unreadable images (default: skip and list them)"
    )

    @classmethod
    def from_fields(cls, values: Mapping[str, Any]) -> DataConfig:
        """The data fields of a flat mapping, e.g. the config a checkpoint saved (others are ignored;
        an older config's missing fields take their defaults)."""
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})

    def root(self, train: bool = True) -> Path:
        """``data_dir`` as a folder, or one line naming what is wrong with it (checked before any work)."""
        if not self.data_dir:
            raise ValueError(
                "no data folder: pass --data-dir PATH (an ImageFolder tree or torchvision's CIFAR)"
            )
        root = Path(self.data_dir).expanduser()
        if root.exists() and not root.is_dir():
            splits = "train/ and val/ (or test/)" if train else "val/ or test/"
            raise NotADirectoryError(
                f"data folder {root} is a file, not a folder (expected a folder with {splits} class "
                "folders; check --data-dir)"
            )
        if not root.is_dir() and not (self.download and self.dataset in ("cifar10", "cifar100")):
            raise FileNotFoundError(f"data folder {root} does not exist (check --data-dir)")
        return root


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
    data: DataConfig | str | Path,
    *,
    batch_size: int = 128,
    eval_batch_size: int = 256,
    seed: int = 0,
    rank: int = 0,
    world: int = 1,
    device: torch.device | str = "cpu",
    train: bool = True,
    classes: Sequence[str] | None = None,
    **changes: Any,
) -> Data:
    """Loaders of the data ``data`` describes: a :class:`DataConfig` (a run's ``cfg.data``) or a
    folder, with ``changes`` to its fields (``build_data(path, train_subset=300)``).

    ``batch_size`` is per process, subsets are images per class. ``train=False`` builds only the
    evaluation loader (for ``senet eval``); ``classes`` then names the classes the model was trained
    on (a checkpoint's), which the evaluation split's folders are labelled by (a subset is allowed and
    told in ``Data.notices``). Unreadable image files are skipped and listed in ``Data.skipped``;
    ``strict_data=True`` raises :class:`BadImageError` (a ``ValueError``) naming them instead.
    ``sampling="balanced"`` draws every class equally often in each training epoch (Sec. 6.1,
    :mod:`senet.data.sampling`).
    """
    cfg = data if isinstance(data, DataConfig) else DataConfig(data_dir=str(data))
    cfg = replace(cfg, **changes) if changes else cfg
    if cfg.sampling not in SAMPLINGS:
        raise ValueError(f"sampling={cfg.sampling!r}: expected one of {', '.join(SAMPLINGS)}")
    root = cfg.root(train)
    kind = detect_dataset(root, cfg.dataset, train)
    if kind not in ("folder", "cifar10", "cifar100"):
        raise ValueError(f"dataset={kind!r}: expected auto, folder, cifar10 or cifar100")
    label_by, notices = None, []  # the classes labelling the evaluation split, when not its own
    if kind == "folder" and (train or classes is not None):
        known = list_classes(find_split(root, True)) if train else list(classes or [])
        known_name = "train/" if train else "the checkpoint"
        label_by, notices = match_classes(known, known_name, find_split(root, False))
    splits = [True, False] if train else [False]
    sets = {s: _load_split(cfg, root, kind, s, None if s else label_by) for s in splits}
    skipped = [f for ds in sets.values() for f in ds.skipped]
    if cfg.strict_data and skipped:
        raise BadImageError(bad_files_message(root, skipped))
    if isinstance(sets[False], ArrayDataset):
        size = sets[False].images.shape[-1]
        if size != cfg.eval_crop and cfg.augment != "none":
            raise ValueError(
                f"in-memory images are {size}x{size} but eval_crop is {cfg.eval_crop}; set --eval-crop {size}"
            )
    # sampling orders training epochs only (evaluation reads every image once, in order)
    common = dict(seed=seed, rank=rank, world=world, device=torch.device(device), sampling=cfg.sampling)
    sizes = {True: batch_size, False: eval_batch_size}
    loaders = {s: _loader(cfg, sets[s], s, sizes[s], common) for s in splits}
    return Data(loaders.get(True), loaders[False], list(sets[train].classes), skipped, notices)


def _load_split(
    cfg: DataConfig, root: Path, kind: str, train: bool, label_by: list[str] | None
) -> ArrayDataset | FolderDataset:
    """One split of :func:`build_data`'s data, labelled by the classes ``label_by`` when given."""
    if (kind != "folder" or cfg.in_memory) and cfg.augment in ("imagenet", "release"):
        raise ValueError(
            f"augment: {cfg.augment} needs streamed data (in_memory: false); use augment: cifar in memory"
        )
    per_class = cfg.train_subset if train else cfg.val_subset
    if kind != "folder":
        cifar = load_torchvision_cifar(root, train, 10 if kind == "cifar10" else 100, cfg.download)
        return cifar.subset_per_class(per_class)
    if cfg.in_memory:
        ds = load_array_split(root, train, per_class=per_class, cache_dir=cfg.cache_dir)
        if label_by is None:
            return ds
        lut = torch.tensor([label_by.index(c) for c in ds.classes], dtype=torch.int64)
        return ArrayDataset(ds.images, lut[ds.labels], list(label_by), ds.skipped)
    tf = {k: getattr(cfg, k) for k in ("image_size", "eval_crop", "eval_resize", "mean", "std", "scale_min")}
    transform = folder_transforms(cfg.augment, train=train, cutout=cfg.cutout if train else 0, **tf)
    folder = folder_dataset(find_split(root, train), per_class, transform, classes=label_by)
    folder.strict = cfg.strict_data
    return folder


def _loader(
    cfg: DataConfig, ds: ArrayDataset | FolderDataset, train: bool, batch_size: int, common: dict[str, Any]
) -> Loader:
    """The loader of one split: streamed, or in memory with the CIFAR augmentation (Sec. 5.1) if asked."""
    if isinstance(ds, FolderDataset):
        return FolderLoader(ds, batch_size, train=train, workers=cfg.workers, **common)
    pad_flip = train and cfg.augment == "cifar"
    augment = BatchAugment(cfg.mean, cfg.std, 4 if pad_flip else 0, pad_flip, cfg.cutout if train else 0)
    return MemoryLoader(ds, batch_size, augment, train, **common)
