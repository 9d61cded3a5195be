"""PKU-DDD17-Car as FRN uses it, and a writer of that layout for tests.

Facts, from the FRN repository (HuCaoFighting/FRN: ``retinanet/dataloader.py`` ``CSVDataset_event``,
``train_ddd17.py``, ``test_ddd17.py``, ``DDD17_detection_labels/*.csv``):

* FRN's folder (``base_dir`` of train_ddd17.py): ``annotations_CSV/labels_filtered_<split>.csv`` and
  ``annotations_CSV/labels_filtered_map.csv``; ``images/<split>/aps_images/<stem>.png`` (the DAVIS346 grey
  frame, 346 x 260) and ``images/<split>/dvs_events/<stem>.npz`` (the event tensor) for split ``train``
  and ``test_all``. The data set is published at https://www.pkuml.org/resources/pku-ddd17-car.html;
  the ``.npz`` event tensors are FRN's own preprocessing (the code that made them is not in the repo).
* Annotation rows: ``<stem>.npz,x1,y1,x2,y2,class`` (integer pixel corners; ``<stem>.npz,,,,,`` would be
  a frame without boxes); one row per box, a frame's rows adjacent, frames in first-appearance order.
  FRN refuses ``x2 <= x1`` / ``y2 <= y1`` and unknown classes, and skips boxes under 1 pixel. The class
  map is ``car,0``. Stems are ``rec<recording id>_<frame>``.
* Event tensor: ``np.load(<events_dir>/<stem>.npz)["arr_0"]``, ``[C, H, W]`` with C = 5 (a 5-bin voxel
  grid: FRN's event conv1 has 5 input channels). Frame: ``cv2.imread(<images_dir>/<stem>.png)`` (the grey
  frame as 3 equal channels) / 255, normalised with mean 0.403 and std 0.295; FRN's Resizer keeps 260 x 346
  and never rescales the boxes.
* Split sizes (frames / box rows): train 2241 / 4205 (recordings rec1487419513, ..424147, ..430438,
  ..433587, ..594667, ..598202, ..608147); test_all 913 / 1555 (test_ddd17.py's fps divides by 913),
  the disjoint union of test_day 704 / 1267 (rec1487339175, ..417411, ..593224, ..600962) and test_night
  209 / 288 (rec1487597945, ..609463, ..781509). Every box is a car; boxes reach x2 = 346, y2 <= 224, and
  the smallest side is 5 pixels. FRN has no val split: it evaluates on test_all.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .dsec import DatasetLayoutError, DetectionItems, image_size, read_rgb
from .events import MODALITIES, check_modalities

__all__ = ["DDD17_URL", "DDD17_SPLITS", "DDD17Dataset", "write_ddd17"]

DDD17_URL = "https://www.pkuml.org/resources/pku-ddd17-car.html"
DDD17_SPLITS = ("train", "test_all", "test_day", "test_night")
FRN_EVENT_CHANNELS = 5
_HINT = f"get PKU-DDD17-Car from {DDD17_URL} and FRN's label CSVs (HuCaoFighting/FRN DDD17_detection_labels)"


def _rows(path: Path) -> list[tuple[int, list[str]]]:
    """Non-blank CSV rows of ``path`` with their 1-based line numbers."""
    if not path.is_file():
        raise DatasetLayoutError(f"missing CSV file {path}; {_HINT}")
    with open(path, newline="") as f:
        return [(line, row) for line, row in enumerate(csv.reader(f), 1) if any(c.strip() for c in row)]


def read_classes(path: Path) -> tuple[str, ...]:
    """Class names by id from a ``name,id`` CSV (FRN's labels_filtered_map.csv); ids must be 0..K-1."""
    by_id: dict[int, str] = {}
    for line, row in _rows(path):
        if len(row) != 2:
            raise DatasetLayoutError(f"{path}:{line}: expected 'class_name,class_id', got {','.join(row)!r}")
        name, raw = row[0].strip(), row[1].strip()
        try:
            k = int(raw)
        except ValueError:
            raise DatasetLayoutError(
                f"{path}:{line}: malformed class id {raw!r}, expected an integer"
            ) from None
        if name in by_id.values() or k in by_id:
            raise DatasetLayoutError(f"{path}:{line}: duplicate class {name!r} or id {k}")
        by_id[k] = name
    if sorted(by_id) != list(range(len(by_id))) or not by_id:
        raise DatasetLayoutError(f"{path}: class ids must be 0..K-1 without gaps, got {sorted(by_id)}")
    return tuple(by_id[k] for k in range(len(by_id)))


class DDD17Dataset(DetectionItems):
    """PKU-DDD17-Car frames, FRN event tensors and car boxes as ``(inputs, target)`` items.

    The items are those of :class:`~senet.fusion.dsec.DSECDetDataset`, with ``inputs`` ``"rgb"`` the grey
    frame on 3 channels and ``"events"`` the stored tensor; one item per frame named in ``csv_file``
    (layout: module docstring).

    Args:
        image_size: ``(height, width)`` every frame and event tensor must have (default: the first item's).
        event_channels: channels of every event tensor (default: the first item's; FRN's are 5).
    """

    def __init__(
        self,
        csv_file: str | os.PathLike[str],
        classes_csv: str | os.PathLike[str],
        events_dir: str | os.PathLike[str],
        images_dir: str | os.PathLike[str],
        modalities: Iterable[str] = MODALITIES,
        *,
        image_size: tuple[int, int] | None = None,
        event_channels: int | None = None,
    ) -> None:
        self.modalities = check_modalities(modalities)
        self.csv_file, self.classes_csv = Path(csv_file), Path(classes_csv)
        self.events_dir, self.images_dir = Path(events_dir), Path(images_dir)
        self.class_names = read_classes(self.classes_csv)
        self.num_classes = len(self.class_names)
        self._names: list[str] = []
        self._lines: list[int] = []
        self._boxes: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._read_annotations()
        if not self._names:
            raise DatasetLayoutError(f"{self.csv_file}: no annotation rows; {_HINT}")
        for wanted, folder, what in (
            ("events", self.events_dir, "event tensors"),
            ("rgb", self.images_dir, "frames"),
        ):
            if wanted in self.modalities and not folder.is_dir():
                raise DatasetLayoutError(f"missing folder {folder} of the {what}; {_HINT}")
        self.height, self.width = image_size if image_size is not None else self._first_size()
        if event_channels is None:
            events = "events" in self.modalities
            event_channels = self._load_events(0, check=False).shape[0] if events else FRN_EVENT_CHANNELS
        self.event_channels = int(event_channels)

    @classmethod
    def from_folder(
        cls,
        root: str | os.PathLike[str],
        split: str = "train",
        *,
        modalities: Iterable[str] = MODALITIES,
        **kwargs: Any,
    ) -> DDD17Dataset:
        """A split of a folder in FRN's layout (``test`` is ``test_all``; it holds the day / night frames)."""
        root = Path(root)
        name = "test_all" if split == "test" else split
        if name not in DDD17_SPLITS:
            raise DatasetLayoutError(
                f"split {split!r}: choose one of {', '.join(DDD17_SPLITS)}; FRN evaluates on test_all"
            )
        if not root.is_dir():
            raise DatasetLayoutError(f"PKU-DDD17-Car folder {root} does not exist; {_HINT}")
        frames = root / "images" / name
        if not frames.is_dir() and name in ("test_day", "test_night"):
            frames = root / "images" / "test_all"
        return cls(
            root / "annotations_CSV" / f"labels_filtered_{name}.csv",
            root / "annotations_CSV" / "labels_filtered_map.csv",
            frames / "dvs_events",
            frames / "aps_images",
            modalities,
            **kwargs,
        )

    def _read_annotations(self) -> None:
        """Rows ``file,x1,y1,x2,y2,class`` grouped by file in first-appearance order, as FRN reads them."""
        path, index = self.csv_file, {}
        boxes: list[list[list[float]]] = []
        labels: list[list[int]] = []
        for line, row in _rows(path):
            if len(row) < 6:
                raise DatasetLayoutError(
                    f"{path}:{line}: expected 'file,x1,y1,x2,y2,class' or 'file,,,,,', got {','.join(row)!r}"
                )
            name, fields, cls = row[0].strip(), [c.strip() for c in row[1:5]], row[5].strip()
            if not name:
                raise DatasetLayoutError(f"{path}:{line}: empty file name")
            if name not in index:
                index[name] = len(self._names)
                self._names.append(name)
                self._lines.append(line)
                boxes.append([])
                labels.append([])
            if fields == ["", "", "", ""] and cls == "":
                continue  # a frame without boxes
            values = []
            for key, raw in zip(("x1", "y1", "x2", "y2"), fields, strict=True):
                try:
                    values.append(float(raw))
                except ValueError:
                    raise DatasetLayoutError(
                        f"{path}:{line}: malformed {key} {raw!r}, expected a number"
                    ) from None
            x1, y1, x2, y2 = values
            if x2 <= x1 or y2 <= y1:
                raise DatasetLayoutError(
                    f"{path}:{line}: empty box (x1, y1, x2, y2) = {tuple(values)}; need x2 > x1, y2 > y1"
                )
            if cls not in self.class_names:
                raise DatasetLayoutError(
                    f"{path}:{line}: unknown class {cls!r}; {self.classes_csv} has "
                    f"{', '.join(self.class_names)}"
                )
            if x2 - x1 < 1 or y2 - y1 < 1:
                continue  # FRN's load_annotations skips boxes under a pixel
            boxes[index[name]].append(values)
            labels[index[name]].append(self.class_names.index(cls))
        self._boxes = [np.asarray(b, dtype=np.float32).reshape(-1, 4) for b in boxes]
        self._labels = [np.asarray(lab, dtype=np.int64) for lab in labels]

    def _path(self, index: int, kind: str) -> Path:
        """The existing event tensor (``kind`` ``"events"``) or frame file of item ``index``."""
        name = self._names[index]
        if kind == "events":
            path, what = self.events_dir / name, "event tensor"
        else:
            path, what = self.images_dir / (name.removesuffix(".npz") + ".png"), "frame"
        if not path.is_file():
            raise DatasetLayoutError(
                f"missing {what} {path} (row {self.csv_file}:{self._lines[index]}); {_HINT}"
            )
        return path

    def _first_size(self) -> tuple[int, int]:
        if "rgb" in self.modalities:
            return image_size(self._path(0, "rgb"))
        return tuple(self._load_events(0, check=False).shape[1:])  # type: ignore[return-value]

    def _load_events(self, index: int, check: bool = True) -> np.ndarray:
        path = self._path(index, "events")
        try:
            z = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DatasetLayoutError(f"{path}: unreadable .npz ({e}); re-create it") from None
        if not hasattr(z, "files") or "arr_0" not in z.files:
            found = list(z.files) if hasattr(z, "files") else "a bare array"
            raise DatasetLayoutError(
                f"{path}: no 'arr_0' array (found {found}); FRN saves np.savez(file, voxel)"
            )
        with z:
            arr = z["arr_0"]
        expected = (self.event_channels, self.height, self.width) if check else None
        if arr.ndim != 3 or (expected is not None and arr.shape != expected):
            raise DatasetLayoutError(
                f"{path}: event tensor of shape {arr.shape}, expected [C, H, W] = {expected or '3-D'}"
            )
        return arr

    def _inputs(self, index: int) -> dict[str, Tensor]:
        inputs: dict[str, Tensor] = {}
        if "rgb" in self.modalities:
            path = self._path(index, "rgb")
            rgb = read_rgb(path)
            if tuple(rgb.shape[1:]) != (self.height, self.width):
                raise DatasetLayoutError(
                    f"{path}: frame of {rgb.shape[1]} x {rgb.shape[2]}, expected {self.height} x {self.width}"
                )
            inputs["rgb"] = rgb
        if "events" in self.modalities:
            inputs["events"] = torch.from_numpy(
                np.ascontiguousarray(self._load_events(index), dtype=np.float32)
            )
        return inputs

    def _file_names(self) -> list[str]:
        return self._names


def write_ddd17(
    root: str | os.PathLike[str],
    stems: Sequence[str],
    images: np.ndarray,
    voxels: np.ndarray,
    boxes: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    split: str = "train",
    class_names: Sequence[str] = ("car",),
) -> dict[str, Path]:
    """Write frames, event tensors and boxes in FRN's PKU-DDD17-Car layout under ``root``.

    ``images`` uint8 ``[N, H, W]`` (grey) or ``[N, H, W, 3]``; ``voxels`` ``[N, C, H, W]``; ``boxes[i]``
    ``[K_i, 4]`` xyxy and ``labels[i]`` ``[K_i]`` 0-based ids into ``class_names`` (a frame without boxes
    gets a ``stem.npz,,,,,`` row). Returns the four paths :class:`DDD17Dataset` takes, by argument name.
    """
    from PIL import Image

    images, voxels = np.asarray(images), np.asarray(voxels)
    n = len(stems)
    if not (images.shape[0] == voxels.shape[0] == len(boxes) == len(labels) == n):
        raise DatasetLayoutError(
            f"write_ddd17: {n} stems, {images.shape[0]} images, {voxels.shape[0]} voxel grids, "
            f"{len(boxes)} box arrays and {len(labels)} label arrays; give one of each per frame"
        )
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise DatasetLayoutError(
            f"images: expected uint8 [N, H, W] or [N, H, W, 3], got {images.dtype} {images.shape}"
        )
    root = Path(root)
    annotations = root / "annotations_CSV"
    frames = root / "images" / split
    paths = {
        "csv_file": annotations / f"labels_filtered_{split}.csv",
        "classes_csv": annotations / "labels_filtered_map.csv",
        "events_dir": frames / "dvs_events",
        "images_dir": frames / "aps_images",
    }
    for folder in (annotations, paths["events_dir"], paths["images_dir"]):
        folder.mkdir(parents=True, exist_ok=True)
    with open(paths["classes_csv"], "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([name, k] for k, name in enumerate(class_names))
    with open(paths["csv_file"], "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        for stem, image, voxel, b, lab in zip(stems, images, voxels, boxes, labels, strict=True):
            Image.fromarray(image).save(paths["images_dir"] / f"{stem}.png")
            np.savez(paths["events_dir"] / f"{stem}.npz", voxel)
            b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
            if not len(b):
                writer.writerow([f"{stem}.npz", "", "", "", "", ""])
            for box, c in zip(b.tolist(), np.asarray(lab).reshape(-1).tolist(), strict=True):
                coords = [int(v) if float(v).is_integer() else v for v in box]
                writer.writerow([f"{stem}.npz", *coords, class_names[int(c)]])
    return paths
