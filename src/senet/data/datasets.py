"""Where images come from: ImageFolder trees, torchvision's CIFAR format, and an in-memory cache.

Two kinds of data set serve every recipe:

* :class:`ArrayDataset` holds a whole split as one ``uint8`` tensor ``(N, 3, H, W)`` plus labels.
  CIFAR-scale data (60,000 images of 32x32) is decoded once and kept in memory, so that decoding
  never dominates an epoch on a small CPU; the decoded arrays of an ImageFolder split are cached
  as ``.npy`` files under ``~/.cache/senet`` keyed by the folder's path and every file's name, size
  and mtime, so a second run starts in seconds.
* :class:`FolderDataset` streams files through per-image transforms (ImageNet, Places365: images of
  different sizes that do not fit in memory), as torchvision's ``ImageFolder`` does.

Both read the same files (:func:`scan_folder`) with the same decoder (:func:`open_rgb`). Unreadable
files (empty, not an image, truncated) are skipped and reported as ``(path, reason)`` pairs, or
refused with :class:`BadImageError` in strict mode (a streamed split: see :class:`FolderDataset`).
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = [
    "ArrayDataset",
    "BadImageError",
    "FolderDataset",
    "bad_files_message",
    "check_image_header",
    "find_split",
    "folder_dataset",
    "folder_signature",
    "list_classes",
    "load_array_split",
    "open_rgb",
    "scan_folder",
]

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
Samples = list[tuple[str, int]]  # (path, label) pairs
Skipped = list[tuple[str, str]]  # (path, reason) pairs of unreadable files


@dataclass
class ArrayDataset:
    """A split held in memory: ``images`` uint8 ``(N, C, H, W)``, ``labels`` int64 ``(N,)``."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    skipped: Skipped = field(default_factory=list)  # unreadable files

    def __len__(self) -> int:
        return int(self.labels.numel())

    def subset_per_class(self, n: int) -> ArrayDataset:
        """The first ``n`` images of every class (in file order): a small, balanced, real subset."""
        if n <= 0:
            return self
        keep = torch.cat([torch.nonzero(self.labels == c).flatten()[:n] for c in range(len(self.classes))])
        keep = keep.sort().values
        return ArrayDataset(self.images[keep], self.labels[keep], self.classes, self.skipped)


def find_split(data_dir: Path, train: bool) -> Path:
    """``data_dir/train`` for training; ``data_dir/val`` or else ``data_dir/test`` for evaluation."""
    names = ("train",) if train else ("val", "test")
    for name in names:
        if (data_dir / name).is_dir():
            return data_dir / name
    wanted = " or ".join(f"{data_dir / n}/" for n in names)
    raise FileNotFoundError(
        f"no {wanted} folder: the data set must be in the ImageFolder layout <split>/<class>/*.jpg"
    )


class BadImageError(ValueError):
    """An unreadable image file in strict mode (or too many in a row to replace)."""


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a symbolic link loop
        return False


def list_classes(split_dir: Path) -> list[str]:
    """The class folders of a split, sorted as torchvision sorts them."""
    return sorted(e.name for e in os.scandir(split_dir) if _is_dir(e))


def _class_files(cls_dir: str) -> tuple[list[str], Skipped]:
    """Image files under ``cls_dir`` (sub-folders too, in torchvision's order) and the broken links.

    Symbolic links are followed as torchvision's ``ImageFolder`` follows them, but a folder that is
    its own ancestor (a link loop) is not entered again, so that a loop cannot hang the scan.
    """
    found: list[tuple[str, list[str]]] = []
    broken: Skipped = []
    root = os.stat(cls_dir)
    stack: list[tuple[str, frozenset[tuple[int, int]]]] = [(cls_dir, frozenset({(root.st_dev, root.st_ino)}))]
    while stack:
        folder, ancestors = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as e:
            broken.append((folder, f"unreadable folder ({e.strerror or e})"))
            continue
        files = []
        for e in entries:
            is_image = e.name.lower().endswith(IMG_EXTENSIONS)
            try:
                if e.is_dir():
                    st = e.stat()
                    if (st.st_dev, st.st_ino) not in ancestors:  # else a link back up: a loop
                        stack.append((e.path, ancestors | {(st.st_dev, st.st_ino)}))
                elif e.is_file():
                    if is_image:
                        files.append(e.path)
                elif is_image and e.is_symlink():
                    broken.append((e.path, "broken link (its target does not exist)"))
            except OSError as err:  # a link to itself, a vanished file
                if is_image:
                    broken.append((e.path, _reason(err)))
        found.append((folder, sorted(files)))
    found.sort()  # torchvision: sorted(os.walk(...)), files sorted within each folder
    return [f for _, files in found for f in files], sorted(broken)


def scan_split(split_dir: Path, per_class: int = 0) -> tuple[Samples, list[str], Skipped]:
    """:func:`scan_folder` plus the broken links (``(path, reason)``) it passed over."""
    classes = list_classes(split_dir)
    if not classes:
        raise FileNotFoundError(f"{split_dir} has no class folders (expected {split_dir}/<class>/*.jpg)")
    samples: Samples = []
    broken: Skipped = []
    for label, cls in enumerate(classes):
        files, bad = _class_files(str(split_dir / cls))
        unreadable = [r for p, r in bad if p == str(split_dir / cls)]
        if unreadable:
            raise PermissionError(f"class folder {split_dir / cls} cannot be listed: {unreadable[0]}")
        if not files:
            raise FileNotFoundError(
                f"class folder {split_dir / cls} holds no images ({', '.join(IMG_EXTENSIONS)}): "
                "remove it or add images"
            )
        samples += [(f, label) for f in (files[:per_class] if per_class > 0 else files)]
        broken += bad
    return samples, classes, broken


def scan_folder(split_dir: Path, per_class: int = 0) -> tuple[Samples, list[str]]:
    """(path, label) pairs of an ImageFolder split, classes sorted as torchvision sorts them.

    Files in sub-folders of a class folder count (as in torchvision); a class folder without any
    image file is refused. ``per_class > 0`` keeps the first ``per_class`` files of every class.
    """
    samples, classes, _ = scan_split(split_dir, per_class)
    return samples, classes


def folder_signature(split_dir: Path, samples: Samples) -> str:
    """A key that changes when the folder's path or any file's name, size or mtime changes.

    One ``os.stat`` per file: about 0.4 s for the 60,000 files of CIFAR-10 (warm cache).
    """
    h = hashlib.sha1(b"senet-folder-v2\0" + str(split_dir.resolve()).encode())
    h.update(f"{len(samples)}\n".encode())
    for path, _ in samples:
        st = os.stat(path)
        h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _to_rgb(im: PILImage.Image) -> PILImage.Image:
    """An 8-bit RGB copy of a loaded image; 16-bit grey (``I;16``, ``I``) keeps its upper 8 bits.

    PIL's ``convert("RGB")`` clips 16-bit values at 255 instead of scaling them: all white.
    """
    from PIL import Image

    if im.mode.startswith("I;16") or im.mode == "I":
        a = np.asarray(im).astype(np.int64).clip(0, 65535) >> 8
        return Image.fromarray(a.astype(np.uint8), "L").convert("RGB")
    return im.convert("RGB")


def open_rgb(path: str | Path) -> PILImage.Image:
    """The image at ``path`` fully decoded as 8-bit RGB (a truncated file raises ``OSError``)."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        return _to_rgb(im)


def _reason(exc: BaseException, path: str | None = None) -> str:
    """A short reason for a file PIL could not read."""
    from PIL import Image, UnidentifiedImageError

    msg = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, OSError) and exc.errno == errno.ELOOP:
        return "symbolic link loop"
    if isinstance(exc, UnidentifiedImageError):
        try:
            if path is not None and os.path.getsize(path) == 0:
                return "empty file (0 bytes)"
        except OSError:
            pass
        return "not an image (PIL cannot identify it)"
    if "truncated" in msg.lower():
        return "truncated image"
    if isinstance(exc, Image.DecompressionBombError):
        return "too many pixels (PIL's decompression bomb limit)"
    if isinstance(exc, OSError) and exc.strerror:
        return f"unreadable ({exc.strerror})"
    return f"{type(exc).__name__}: {msg[:100]}"


@functools.lru_cache(maxsize=64)
def _image_accepts(ext: str = "") -> tuple[Callable[[bytes], Any], ...]:
    """PIL's magic-number checks, the one of the format of extension ``ext`` first."""
    from PIL import Image

    Image.init()
    first = Image.registered_extensions().get(ext)
    order = sorted(Image.OPEN, key=lambda fmt: fmt != first)
    return tuple(Image.OPEN[fmt][1] for fmt in order if Image.OPEN[fmt][1] is not None)


def check_image_header(path: str | Path) -> str | None:
    """Why ``path`` is no image file, judged by its first bytes (``None``: looks fine).

    Cheap enough for every file of ImageNet: one 16-byte read and PIL's format checks (PIL opens
    the file only when no format claims those bytes). A truncated image passes; decoding finds it.
    """
    from PIL import Image

    try:
        with open(path, "rb") as f:
            prefix = f.read(16)
    except OSError as e:
        return _reason(e)
    if not prefix:
        return "empty file (0 bytes)"
    for accept in _image_accepts(os.path.splitext(path)[1].lower()):
        result = accept(prefix)
        if result and not isinstance(result, str):  # a str: the format's plugin is unavailable
            return None
    try:  # formats without a magic number (TGA, ...): let PIL parse the header
        with Image.open(path):
            return None
    except MemoryError:
        raise
    except Exception as e:
        return _reason(e, str(path))


def check_headers(paths: list[str], chunk: int = 2048) -> Skipped:
    """``(path, reason)`` of the files of ``paths`` that :func:`check_image_header` rejects.

    About 2 s for CIFAR-10's 60,000 files on a warm cache (40 s for ImageNet's 1.28 million);
    threads overlap the reads on a cold disk or a network file system.
    """

    def check(part: list[str]) -> Skipped:
        return [(p, r) for p in part if (r := check_image_header(p)) is not None]

    parts = [paths[i : i + chunk] for i in range(0, len(paths), chunk)]
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        return [bad for found in pool.map(check, parts) for bad in found]


def bad_files_message(root: str | Path, skipped: Skipped, shown: int = 3) -> str:
    """One line naming the first unreadable files and their count, for strict mode."""
    root = str(root)

    def name(path: str) -> str:
        return os.path.relpath(path, root) if path.startswith(root + os.sep) else path

    listed = ", ".join(f"{name(p)} ({r})" for p, r in skipped[:shown])
    more = f" and {len(skipped) - shown} more" if len(skipped) > shown else ""
    files = "file" if len(skipped) == 1 else "files"
    return (
        f"{len(skipped)} unreadable image {files} in {root}: {listed}{more}: "
        "fix or remove them, or use strict_data: false to skip them"
    )


def _readable(split_dir: Path, samples: Samples, skipped: Skipped, strict: bool) -> Samples:
    """``samples`` without the ``skipped`` files; :class:`BadImageError` when ``strict`` and some are
    skipped, or when none is left."""
    if strict and skipped:
        raise BadImageError(bad_files_message(split_dir, skipped))
    bad = {p for p, _ in skipped}
    kept = [s for s in samples if s[0] not in bad]
    if not kept:
        raise BadImageError(f"{split_dir} holds no readable image: {bad_files_message(split_dir, skipped)}")
    return kept


def _decode_or_reason(path: str) -> np.ndarray | str:
    try:
        return np.asarray(open_rgb(path))
    except MemoryError:
        raise
    except Exception as e:
        return _reason(e, path)


def _decode_folder(samples: Samples) -> tuple[np.ndarray, Skipped]:
    """The decoded images ``(N, 3, H, W)`` of the readable files and ``(path, reason)`` of the others."""
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        decoded = list(pool.map(_decode_or_reason, (p for p, _ in samples), chunksize=256))
    skipped = [(p, d) for (p, _), d in zip(samples, decoded, strict=True) if isinstance(d, str)]
    arrays = [d for d in decoded if not isinstance(d, str)]
    if not arrays:
        return np.zeros((0, 3, 0, 0), np.uint8), skipped
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(
            f"in_memory needs images of one size, found {len(shapes)} sizes (e.g. {sorted(shapes)[:3]}); "
            "set in_memory: false for this data set"
        )
    return np.stack(arrays).transpose(0, 3, 1, 2).copy(), skipped


def _read_cache(path: Path, split_dir: Path, n: int) -> tuple[np.ndarray, Skipped] | None:
    """The cached images and the files skipped when they were decoded, if the cache is whole."""
    try:
        meta = json.loads(path.with_suffix(".json").read_text())
        skipped = [(str(split_dir / rel), str(reason)) for rel, reason in meta["skipped"]]
        images = np.load(path)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if images.shape[0] != n - len(skipped) or meta.get("images") != images.shape[0]:
        return None
    return images, skipped


def _write_cache(path: Path, split_dir: Path, images: np.ndarray, skipped: Skipped) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, images)
        os.replace(tmp, path)
        meta = {
            "folder": str(split_dir.resolve()),
            "images": int(images.shape[0]),
            "shape": list(images.shape),
            "skipped": [[os.path.relpath(p, split_dir), r] for p, r in skipped],
        }
        tmp_meta = path.with_suffix(f".{os.getpid()}.json.tmp")
        tmp_meta.write_text(json.dumps(meta))
        os.replace(tmp_meta, path.with_suffix(".json"))
    except OSError:
        pass


def load_array_split(
    data_dir: str | Path,
    train: bool,
    *,
    per_class: int = 0,
    cache_dir: str | None = "~/.cache/senet",
    strict: bool = False,
) -> ArrayDataset:
    """Decode an ImageFolder split into memory (or read it from the ``.npy`` cache).

    Unreadable files are left out (labels stay aligned) and listed in ``skipped``; ``strict``
    raises :class:`BadImageError` naming them instead.
    """
    split_dir = find_split(Path(data_dir), train)
    samples, classes, broken = scan_split(split_dir, per_class)
    cache = Path(cache_dir).expanduser() if cache_dir else None
    path = cache / f"{split_dir.name}-{folder_signature(split_dir, samples)}.npy" if cache else None
    cached = _read_cache(path, split_dir, len(samples)) if path is not None and path.exists() else None
    if cached is not None:
        images, skipped = cached
    else:
        images, skipped = _decode_folder(samples)
        if path is not None and images.shape[0]:
            _write_cache(path, split_dir, images, skipped)
    skipped = sorted(broken + skipped)
    kept = _readable(split_dir, samples, skipped, strict)
    labels = torch.tensor([y for _, y in kept], dtype=torch.int64)
    return ArrayDataset(torch.from_numpy(images), labels, classes, skipped)


class FolderDataset(torch.utils.data.Dataset):
    """A streamed ImageFolder split: ``(transform(image), label)`` per sample, images via :func:`open_rgb`.

    Holds torchvision ``ImageFolder``'s attributes (``samples``, ``targets``, ``imgs``, ``classes``,
    ``class_to_idx``). A file that fails to decode when it is read (in a ``DataLoader`` worker
    process, which cannot hand a list back) is replaced by the next sample that decodes, and a
    warning line naming it is printed on stderr (once per process: each epoch's workers print it
    again) and, when ``skip_log`` is set, appended to that file as ``path<TAB>reason``. With
    ``strict`` it raises :class:`BadImageError` instead.
    """

    max_replaced = 64  # unreadable files in a row before giving up

    def __init__(
        self,
        samples: Samples,
        classes: list[str],
        transform: Callable[[Any], Any] | None = None,
        *,
        strict: bool = False,
        skipped: Skipped | None = None,
        skip_log: str | Path | None = None,
    ) -> None:
        self.samples = samples
        self.imgs = samples
        self.targets = [y for _, y in samples]
        self.classes = list(classes)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.transform = transform
        self.strict = strict
        self.skipped = list(skipped or [])  # found up front: not in samples
        self.skip_log = skip_log
        self._warned: set[str] = set()

    def __len__(self) -> int:
        return len(self.samples)

    def _report(self, path: str, reason: str, instead: str) -> None:
        if path in self._warned:
            return
        self._warned.add(path)
        print(
            f"senet: warning: skipped unreadable image {path} ({reason}); {instead} served in its place",
            file=sys.stderr,
            flush=True,
        )
        if self.skip_log:
            try:
                with open(self.skip_log, "a") as f:
                    f.write(f"{path}\t{reason}\n")
            except OSError:
                pass

    def __getitem__(self, index: int) -> tuple[Any, int]:
        n = len(self.samples)
        failed: Skipped = []
        for k in range(min(n, self.max_replaced + 1)):
            path, target = self.samples[(index + k) % n]
            try:
                image = open_rgb(path)
            except MemoryError:
                raise
            except Exception as e:
                if self.strict:
                    raise BadImageError(
                        f"unreadable image {path} ({_reason(e, path)}): fix or remove it, "
                        "or use strict_data: false to skip such files"
                    ) from None
                failed.append((path, _reason(e, path)))
                continue
            for bad, reason in failed:
                self._report(bad, reason, path)
            return (self.transform(image) if self.transform is not None else image), target
        raise BadImageError(
            f"{len(failed)} images in a row are unreadable, from {failed[0][0]} ({failed[0][1]}): "
            "check the data folder"
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

    Files that :func:`check_image_header` rejects are left out and listed in the dataset's
    ``skipped`` (``strict``: :class:`BadImageError`); files that fail to decode later are replaced at
    load time (see :class:`FolderDataset`). ``classes``: label the class folders by their index in
    these names (the training classes) rather than in the split's own list; all must be among them.
    """
    samples, names, broken = scan_split(Path(split_dir), per_class)
    skipped = sorted(broken + check_headers([p for p, _ in samples]))
    samples = _readable(split_dir, samples, skipped, strict)
    if classes is not None:
        index = {c: i for i, c in enumerate(classes)}
        unknown = [c for c in names if c not in index]
        if unknown:
            raise ValueError(f"class folders of {split_dir} not among the classes given: {unknown[:5]}")
        samples = [(p, index[names[y]]) for p, y in samples]
        names = list(classes)
    return FolderDataset(samples, names, transform, strict=strict, skipped=skipped)


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
