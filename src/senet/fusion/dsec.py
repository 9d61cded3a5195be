"""DSEC-Detection (Gehrig & Scaramuzza, "Low latency automotive vision with event cameras", Nature 2024),
read from the files of the official release, and a writer of that layout for tests.

Facts of the layout, from the official utilities (uzh-rpg/dsec-det: ``readme.md``, ``src/dsec_det/``,
``config/train_val_test_split.yaml``), the DSEC event slicer (uzh-rpg/DSEC ``scripts/utils/eventslicer.py``)
and the DAGR code that writes such files (uzh-rpg/dagr ``scripts/downsample_events.py``):

* Folders: ``<root>/train/<sequence>/`` and ``<root>/test/<sequence>/`` (DSEC ships only these two). The
  split file takes ``val`` (zurich_city_16_a .. zurich_city_21_a, the sequences added by DSEC-Det) out of
  ``train/``; ``test`` is the 13 sequences of ``test/``. The event sensor is 480 x 640 (``DSECDet.height``,
  ``.width``). Download: https://dsec.ifi.uzh.ch/dsec-detection/ (scripts/download_dsec_extra.sh).
* ``events/left/events.h5``: ``events/x``, ``events/y`` (uint16), ``events/p`` (uint8, 1 = ON),
  ``events/t`` (uint32 microseconds *relative to* ``t_offset``), ``t_offset`` (int64 scalar, the absolute
  time of t = 0; DAGR's writer sets it to the first event's time) and ``ms_to_idx`` (uint64), defined by
  ``t[ms_to_idx[ms]] >= 1000 ms`` and ``t[ms_to_idx[ms] - 1] < 1000 ms``, i.e. ``ms_to_idx[ms] =
  searchsorted(t, 1000 ms, "left")`` for ``ms = 0 .. t[-1] // 1000`` (length ``t[-1] // 1000 + 1``).
  Datasets are Blosc-compressed (HDF5 filter 32001, zstd, bit shuffle): ``import hdf5plugin`` first.
* ``images/timestamps.txt``: one absolute int64 microsecond time per line, on the clock of
  ``t_offset + events/t`` (``io.extract_from_h5_by_timewindow`` subtracts ``t_offset`` from image times),
  one line per image file. ``images/left/rectified/%06d.png`` are the frames in the rectified frame-camera
  view (1440 x 1080); ``images/left/distorted/%06d.png`` are the same frames remapped into the distorted
  event-camera view at 640 x 480 (``scripts/remap_images_to_events.py``, or download_remapped_images.sh).
  The labels are in the distorted event view, and ``DSECDet.get_image`` reads ``distorted``: that is our
  default ``image_view``. (FRN's DSEC frames are ``rectified`` ones resized to 480 x 640 with unscaled
  boxes; its labels come from abhishek1411/event-rgb-fusion, classes person / large_vehicle / car.)
* ``object_detections/left/tracks.npy``: a structured array in Prophesee's box format with fields ``t``
  (uint64 us, absolute: an image timestamp), ``x``, ``y`` (top-left corner), ``w``, ``h``, ``class_id``
  (uint8 into :data:`DSEC_CLASSES`), ``class_confidence``, ``track_id`` (label.py's dtype also has an
  ``img_name`` field). ``preprocessing.compute_img_idx_to_track_idx`` gives image i the tracks whose ``t``
  *equals* its timestamp; tracks at other times belong to no image.
* Events of an image in the official ``DSECDet``: those between consecutive frames, ``[t_i, t_i+1)`` with
  the labels of image i for ``sync="back"`` (used by its examples and by DAGR) or ``[t_i-1, t_i)`` for
  ``sync="front"``, sliced with ``ms_to_idx`` at millisecond resolution. DAGR keeps pedestrian and maps
  car / bus / truck to car.

Our choices: one item per labelled image (at least one box left after the class map and the size filter);
its events are those in ``[t_img - window_us, t_img)``, before the frame (the ``sync="front"`` side, with
a fixed window instead of the inter-frame interval), found with
``ms_to_idx`` (a conservative millisecond window, as the DSEC ``EventSlicer``) refined by a binary search,
reading only that slice. Boxes are ``[x, y, x + w, y + h]`` clipped to the image.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .events import MODALITIES, EventError, EventRepresentation, check_events, check_modalities

__all__ = [
    "DSEC_CLASSES",
    "DSEC_DET_URL",
    "FRN_CLASSES",
    "FRN_CLASS_NAMES",
    "OFFICIAL_VAL_SEQUENCES",
    "TRACKS_DTYPE",
    "DSECDetDataset",
    "DatasetLayoutError",
    "write_dsec_det_sequence",
]

DSEC_DET_URL = "https://dsec.ifi.uzh.ch/dsec-detection/"
DSEC_CLASSES = ("pedestrian", "rider", "car", "bus", "truck", "bicycle", "motorcycle", "train")
# DSEC-Det ids -> FRN's classes (person, large_vehicle, car): our assumption; FRN's labels are not DSEC-Det's.
FRN_CLASS_NAMES = ("person", "large_vehicle", "car")
FRN_CLASSES = {0: 0, 2: 2, 3: 1, 4: 1}
# config/train_val_test_split.yaml of uzh-rpg/dsec-det: these train/ sequences form the val split.
OFFICIAL_VAL_SEQUENCES = (
    "zurich_city_16_a",
    "zurich_city_17_a",
    "zurich_city_18_a",
    "zurich_city_19_a",
    "zurich_city_20_a",
    "zurich_city_21_a",
)
# src/dsec_det/label.py's DTYPE without its img_name field.
TRACKS_DTYPE = np.dtype(
    [
        ("t", "<u8"),
        ("x", "<f4"),
        ("y", "<f4"),
        ("w", "<f4"),
        ("h", "<f4"),
        ("class_id", "u1"),
        ("class_confidence", "<f4"),
        ("track_id", "<u4"),
    ]
)
IMAGE_VIEWS = ("distorted", "rectified")
SPLITS = ("train", "val", "test")
EVENTS_FILE = Path("events/left/events.h5")
TRACKS_FILE = Path("object_detections/left/tracks.npy")
TIMESTAMPS_FILE = Path("images/timestamps.txt")
_TRACK_FIELDS = ("t", "x", "y", "w", "h", "class_id")


class DatasetLayoutError(ValueError):
    """Files that are not in the expected data-set layout (the message names the file and the fix)."""


_HINT = f"download DSEC-Det from {DSEC_DET_URL}"


def _read_image(path: Path, read: Callable[[Any], Any]) -> Any:
    """``read`` of the opened image file; an unreadable file is a :class:`DatasetLayoutError`."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return read(im)
    except (OSError, ValueError) as e:
        raise DatasetLayoutError(f"{path}: unreadable image ({e}); re-extract or re-download it") from None


def read_rgb(path: Path, size: tuple[int, int] | None = None) -> Tensor:
    """The image file as float32 ``[3, H, W]`` in [0, 1] (grey replicated), resized to ``size`` if given."""
    array = _read_image(path, lambda im: np.asarray(im.convert("RGB")))
    image = torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)
    if size is not None and tuple(image.shape[1:]) != tuple(size):
        image = torch.nn.functional.interpolate(
            image[None], size=size, mode="bilinear", align_corners=False, antialias=True
        )[0].clamp_(0.0, 1.0)
    return image


def image_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` of an image file, from its header."""
    return _read_image(path, lambda im: (im.height, im.width))


class DetectionItems(Dataset):
    """The items and COCO ground truth shared by the DSEC-Det and PKU-DDD17-Car readers.

    A reader fills ``_boxes`` (``[K, 4]`` xyxy pixels) and ``_labels`` (``[K]`` 0-based) per item, sets
    ``height``, ``width`` and ``class_names``, and defines ``_inputs(index)`` (the modality tensors) and
    ``_file_names()`` (one name per item).
    """

    def __len__(self) -> int:
        return len(self._boxes)

    def __getitem__(self, index: int) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """``(inputs, target)``; target: ``boxes`` float32 [K, 4] xyxy, ``labels`` int64 [K], ``image_id``."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"item {index} of a data set of {len(self)}")
        index = index % len(self)
        inputs = self._inputs(index)
        return inputs, {
            "boxes": torch.from_numpy(np.asarray(self._boxes[index], dtype=np.float32).reshape(-1, 4).copy()),
            "labels": torch.from_numpy(np.asarray(self._labels[index], dtype=np.int64).reshape(-1).copy()),
            "image_id": torch.tensor(index, dtype=torch.int64),
        }

    def coco_ground_truth(self) -> dict[str, Any]:
        """The boxes of every item as a COCO-format dict (image ids = item indices, categories = labels)."""
        images, annotations = [], []
        for i, (name, b, lab) in enumerate(zip(self._file_names(), self._boxes, self._labels, strict=True)):
            images.append({"id": i, "width": int(self.width), "height": int(self.height), "file_name": name})
            for (x1, y1, x2, y2), c in zip(b.tolist(), lab.tolist(), strict=True):
                bw, bh = x2 - x1, y2 - y1
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": i,
                        "category_id": int(c),
                        "bbox": [x1, y1, bw, bh],
                        "area": bw * bh,
                        "iscrowd": 0,
                    }
                )
        categories = [{"id": k, "name": n} for k, n in enumerate(self.class_names)]
        return {"images": images, "annotations": annotations, "categories": categories}


def ms_to_idx(t_rel: np.ndarray) -> np.ndarray:
    """DSEC's ``ms_to_idx`` of sorted relative times: the first event at or after each millisecond."""
    t_rel = np.asarray(t_rel, dtype=np.int64)
    last_ms = int(t_rel[-1]) // 1000 if t_rel.size else 0
    return np.searchsorted(t_rel, np.arange(last_ms + 1, dtype=np.int64) * 1000, side="left").astype(
        np.uint64
    )


def write_dsec_det_sequence(
    root: str | os.PathLike[str],
    split: str,
    name: str,
    *,
    images: np.ndarray,
    image_timestamps_us: Sequence[int] | np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    t: np.ndarray,
    p: np.ndarray,
    tracks: np.ndarray,
    t_offset: int = 0,
    image_view: str = "distorted",
) -> Path:
    """Write one sequence in the DSEC-Det layout (module docstring) and return its folder.

    ``images`` uint8 ``[N, H, W, 3]`` become ``images/left/<image_view>/%06d.png``;
    ``image_timestamps_us`` (N absolute times) ``images/timestamps.txt``; the events (``t`` absolute
    int64 microseconds, sorted; x, y inside the images) ``events/left/events.h5`` with ``t - t_offset``
    as uint32, ``t_offset`` and ``ms_to_idx``, Blosc-compressed as the released files; ``tracks`` (a
    structured array with at least t, x, y, w, h, class_id) ``object_detections/left/tracks.npy``.
    """
    from PIL import Image

    if split not in ("train", "test"):
        raise DatasetLayoutError(
            f"split folder {split!r}: DSEC has only train/ and test/ folders (val sequences live in train/)"
        )
    if image_view not in IMAGE_VIEWS:
        raise DatasetLayoutError(f"image_view {image_view!r}: choose one of {', '.join(IMAGE_VIEWS)}")
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise DatasetLayoutError(
            f"images: expected uint8 [N, H, W, 3], got {images.dtype} {tuple(images.shape)}"
        )
    stamps = np.asarray(image_timestamps_us, dtype=np.int64).reshape(-1)
    if stamps.size != images.shape[0]:
        raise DatasetLayoutError(
            f"mismatched frame/event counts: {images.shape[0]} images but {stamps.size} timestamps"
        )
    height, width = images.shape[1:3]
    try:
        check_events(x, y, t, p, height, width)
    except EventError as e:
        raise DatasetLayoutError(str(e)) from None
    t_rel = np.asarray(t, dtype=np.int64) - int(t_offset)
    if t_rel.size and (t_rel[0] < 0 or t_rel[-1] >= 2**32):
        raise DatasetLayoutError(
            f"events: t - t_offset spans [{t_rel[0]}, {t_rel[-1]}] us; DSEC stores it as uint32 >= 0, "
            f"choose t_offset <= the first event's time"
        )
    tracks = np.asarray(tracks)
    missing = [f for f in _TRACK_FIELDS if tracks.dtype.names is None or f not in tracks.dtype.names]
    if missing:
        raise DatasetLayoutError(
            f"tracks: a structured array with fields {_TRACK_FIELDS} is needed, missing {missing}"
        )

    seq = Path(root) / split / name
    image_dir = seq / "images" / "left" / image_view
    for folder in (image_dir, (seq / EVENTS_FILE).parent, (seq / TRACKS_FILE).parent):
        folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(image_dir / f"{i:06d}.png")
    np.savetxt(seq / TIMESTAMPS_FILE, stamps, fmt="%d")

    # Blosc / zstd / bit shuffle, the filter of the released files (dagr's H5_BLOSC_COMPRESSION_FLAGS)
    blosc = dict(hdf5plugin.Blosc(cname="zstd", clevel=1, shuffle=hdf5plugin.Blosc.BITSHUFFLE))
    with h5py.File(seq / EVENTS_FILE, "w") as f:
        for key, values, dtype in (("x", x, "u2"), ("y", y, "u2"), ("p", p, "u1"), ("t", t_rel, "u4")):
            f.create_dataset(f"events/{key}", data=np.asarray(values).astype(dtype), **blosc)
        f.create_dataset("ms_to_idx", data=ms_to_idx(t_rel), **blosc)
        f.create_dataset("t_offset", data=np.int64(t_offset), dtype="i8")

    out = np.zeros(len(tracks), dtype=TRACKS_DTYPE)
    out["class_confidence"] = 1.0  # the fields ``tracks`` lacks are 0, the confidence 1
    for field in set(TRACKS_DTYPE.names) & set(tracks.dtype.names):
        out[field] = tracks[field]
    np.save(seq / TRACKS_FILE, out)
    return seq


class _Sequence:
    """One sequence folder: its image files, timestamps and the path of its events file."""

    def __init__(self, folder: Path, image_view: str) -> None:
        self.name = folder.name
        image_dir = folder / "images" / "left" / image_view
        for path, what in (
            (image_dir, f"the {image_view} images folder"),
            (folder / TIMESTAMPS_FILE, "the image timestamps"),
            (folder / EVENTS_FILE, "the events file"),
            (folder / TRACKS_FILE, "the labels (tracks)"),
        ):
            if not path.exists():
                raise DatasetLayoutError(
                    f"sequence {folder}: missing {path} ({what}); {_HINT}"
                    + (" and remap the images (dsec-det readme)" if what.startswith("the distorted") else "")
                )
        self.image_files = sorted(image_dir.glob("*.png"))
        try:
            stamps = np.loadtxt(folder / TIMESTAMPS_FILE, dtype=np.int64, ndmin=1)
        except ValueError as e:
            raise DatasetLayoutError(f"{folder / TIMESTAMPS_FILE}: not one integer per line ({e})") from None
        if len(self.image_files) != stamps.size:
            raise DatasetLayoutError(
                f"sequence {folder}: mismatched frame/event counts: {len(self.image_files)} images in "
                f"{image_dir} but {stamps.size} timestamps in {folder / TIMESTAMPS_FILE}; re-extract them"
            )
        if bool((np.diff(stamps) <= 0).any()):
            first = int(np.argmax(np.diff(stamps) <= 0)) + 1
            raise DatasetLayoutError(
                f"{folder / TIMESTAMPS_FILE}: timestamps do not increase (line {first + 1}); re-extract them"
            )
        self.timestamps = stamps
        self.events_file = folder / EVENTS_FILE
        tracks = np.load(folder / TRACKS_FILE, allow_pickle=False)
        names = tracks.dtype.names or ()
        missing = [f for f in _TRACK_FIELDS if f not in names]
        if tracks.ndim != 1 or missing:
            raise DatasetLayoutError(
                f"{folder / TRACKS_FILE}: not a DSEC-Det tracks array (1-D with fields "
                f"{', '.join(_TRACK_FIELDS)}): missing {missing or 'nothing'}, shape {tracks.shape}"
            )
        self.tracks = tracks


class DSECDetDataset(DetectionItems):
    """DSEC-Det frames, events and boxes as ``(inputs, target)`` items (layout: module docstring).

    ``inputs`` holds the requested modalities: ``"rgb"`` float32 ``[3, H, W]`` in [0, 1] and ``"events"``
    float32 ``[C, H, W]`` (``representation`` of the events in ``[t_img - window_us, t_img)``). ``target``:
    ``boxes`` float32 ``[K, 4]`` xyxy pixels, ``labels`` int64 ``[K]`` 0-based, ``image_id`` (the index).

    Args:
        root: folder holding ``train/`` and ``test/``.
        split: ``train``, ``val`` (official val sequences, in ``train/``) or ``test``.
        sequences: sequence names to use (default: every sequence of the split).
        classes: DSEC class id -> our 0-based label (default: all 8 :data:`DSEC_CLASSES`); tracks of
            other classes are dropped.
        class_names: names of our labels (default: the DSEC names mapped to each, joined by ``+``).
        min_box_side: boxes narrower or lower than this (pixels, after clipping) are dropped (FRN: 1).
        image_view: ``distorted`` (frames in the event view, as the labels) or ``rectified``.
        sensor_size: ``(height, width)`` of the event sensor (default: the first image's size); frames of
            another size are resized to it, as FRN's Resizer does to DSEC's rectified frames.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        *,
        sequences: Sequence[str] | None = None,
        representation: EventRepresentation | None = None,
        window_us: int = 50_000,
        classes: dict[int, int] | None = None,
        class_names: Sequence[str] | None = None,
        modalities: Iterable[str] = MODALITIES,
        min_box_side: float = 1.0,
        image_view: str = "distorted",
        sensor_size: tuple[int, int] | None = None,
    ) -> None:
        self.modalities = check_modalities(modalities)
        self.representation = representation or EventRepresentation()
        if isinstance(window_us, bool) or not isinstance(window_us, (int, np.integer)) or window_us <= 0:
            raise DatasetLayoutError(
                f"window_us must be a positive integer (microseconds), got {window_us!r}"
            )
        self.window_us = int(window_us)
        if image_view not in IMAGE_VIEWS:
            raise DatasetLayoutError(f"image_view {image_view!r}: choose one of {', '.join(IMAGE_VIEWS)}")
        self.image_view = image_view
        self.min_box_side = float(min_box_side)
        self.class_map, self.class_names = self._class_map(classes, class_names)
        self.num_classes = len(self.class_names)
        self.event_channels = int(self.representation.channels)
        self.split = split
        self.sequences = self._find_sequences(Path(root), split, sequences)
        if sensor_size is None:
            first = next((s.image_files[0] for s in self.sequences if s.image_files), None)
            if first is None:
                raise DatasetLayoutError(f"split {split!r} of {root} holds no images; {_HINT}")
            sensor_size = image_size(first)
        self.height, self.width = int(sensor_size[0]), int(sensor_size[1])
        self._items: list[tuple[int, int]] = []  # (sequence index, image index)
        self._boxes: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        for k, seq in enumerate(self.sequences):
            self._index(k, seq)
        self._h5: dict[int, h5py.File] = {}
        self._pid = os.getpid()

    # -- set-up -----------------------------------------------------------------------------------------
    @staticmethod
    def _class_map(
        classes: dict[int, int] | None, class_names: Sequence[str] | None
    ) -> tuple[np.ndarray, tuple[str, ...]]:
        """A lookup table DSEC class id -> our label (-1: dropped) and the names of our labels."""
        classes = dict(enumerate(range(len(DSEC_CLASSES)))) if classes is None else dict(classes)
        bad = [k for k in classes if not 0 <= int(k) < len(DSEC_CLASSES)]
        if bad:
            raise DatasetLayoutError(
                f"classes: DSEC class ids {bad} do not exist (0..{len(DSEC_CLASSES) - 1})"
            )
        ours = sorted(set(int(v) for v in classes.values()))
        if not ours or ours != list(range(len(ours))):
            raise DatasetLayoutError(f"classes: our labels must be 0..K-1 without gaps, got {ours}")
        table = np.full(len(DSEC_CLASSES), -1, dtype=np.int64)
        for k, v in classes.items():
            table[int(k)] = int(v)
        if class_names is None:
            names = tuple("+".join(DSEC_CLASSES[k] for k in sorted(classes) if classes[k] == c) for c in ours)
        else:
            names = tuple(class_names)
            if len(names) != len(ours):
                raise DatasetLayoutError(f"class_names: {len(names)} names for {len(ours)} labels")
        return table, names

    def _find_sequences(self, root: Path, split: str, sequences: Sequence[str] | None) -> list[_Sequence]:
        """The sequence folders of ``split``: ``sequences``, or all, with the official val ones apart."""
        if split not in SPLITS:
            raise DatasetLayoutError(f"split {split!r}: choose one of {', '.join(SPLITS)}")
        if not root.is_dir():
            raise DatasetLayoutError(f"DSEC-Det root {root} does not exist; {_HINT}")
        folder = root / ("test" if split == "test" else "train")
        if not folder.is_dir():
            raise DatasetLayoutError(f"no split folder {folder} (split {split!r} lives there); {_HINT}")
        available = sorted(d.name for d in folder.iterdir() if d.is_dir())
        if sequences is not None:
            names = list(sequences)
            missing = [n for n in names if n not in available]
            if missing:
                raise DatasetLayoutError(
                    f"no sequence folder {folder / missing[0]} (asked for {missing}); {_HINT}"
                )
        elif split == "val":
            names = [n for n in available if n in OFFICIAL_VAL_SEQUENCES]
        elif split == "train":
            names = [n for n in available if n not in OFFICIAL_VAL_SEQUENCES]
        else:
            names = available
        if not names:
            raise DatasetLayoutError(
                f"no sequence folder of split {split!r} in {folder}"
                + (f" (official val: {', '.join(OFFICIAL_VAL_SEQUENCES)})" if split == "val" else "")
                + f"; {_HINT}"
            )
        return [_Sequence(folder / n, self.image_view) for n in names]

    def _index(self, k: int, seq: _Sequence) -> None:
        """Items of one sequence: its images with a box left after the class map and the size filter."""
        tr = seq.tracks
        cid = tr["class_id"].astype(np.int64)
        labels = np.full(cid.shape, -1, dtype=np.int64)
        known = (cid >= 0) & (cid < len(self.class_map))
        labels[known] = self.class_map[cid[known]]
        x1 = np.clip(tr["x"].astype(np.float64), 0, self.width)
        y1 = np.clip(tr["y"].astype(np.float64), 0, self.height)
        x2 = np.clip(tr["x"].astype(np.float64) + tr["w"], 0, self.width)
        y2 = np.clip(tr["y"].astype(np.float64) + tr["h"], 0, self.height)
        keep = (labels >= 0) & (x2 - x1 >= self.min_box_side) & (y2 - y1 >= self.min_box_side)
        boxes = np.stack([x1, y1, x2, y2], axis=1)
        t = tr["t"].astype(np.int64)
        for i, stamp in enumerate(seq.timestamps):
            sel = keep & (t == stamp)
            if sel.any():
                self._items.append((k, i))
                self._boxes.append(boxes[sel].astype(np.float32))
                self._labels.append(labels[sel])

    # -- items ------------------------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_h5"] = {}  # h5py handles do not pickle; each worker opens its own
        return state

    def _file(self, k: int) -> h5py.File:
        """The events file of sequence ``k``, opened once per process and checked on first use."""
        if self._pid != os.getpid():
            self._h5, self._pid = {}, os.getpid()
        f = self._h5.get(k)
        if f is None:
            path = self.sequences[k].events_file
            try:
                f = h5py.File(path, "r")
            except OSError as e:
                raise DatasetLayoutError(f"{path}: not a readable HDF5 file ({e}); re-download it") from None
            _check_events_file(f, path)
            self._h5[k] = f
        return f

    def events_in_window(self, index: int) -> dict[str, np.ndarray]:
        """Item ``index``'s events: ``x, y, p`` and absolute int64 ``t`` in ``[t_img - window_us, t_img)``."""
        k, i = self._items[index]
        f = self._file(k)
        t_offset = int(f["t_offset"][()]) if "t_offset" in f else 0
        t1 = int(self.sequences[k].timestamps[i]) - t_offset
        t0 = t1 - self.window_us
        table = f["ms_to_idx"]
        n_table, n_events = table.shape[0], f["events/t"].shape[0]
        # ms_to_idx[ms] = first event at or after ms: floor(t0) and ceil(t1) bracket the window (EventSlicer)
        lo_ms, hi_ms = t0 // 1000, -(-t1 // 1000)
        lo = 0 if lo_ms <= 0 else (n_events if lo_ms >= n_table else int(table[lo_ms]))
        hi = 0 if hi_ms <= 0 else (n_events if hi_ms >= n_table else int(table[hi_ms]))
        t_chunk = np.asarray(f["events/t"][lo:hi], dtype=np.int64)
        a = lo + int(np.searchsorted(t_chunk, t0, side="left"))
        b = lo + int(np.searchsorted(t_chunk, t1, side="left"))
        out = {key: np.asarray(f[f"events/{key}"][a:b]).astype(np.int64) for key in ("x", "y", "p")}
        out["t"] = t_chunk[a - lo : b - lo] + t_offset
        return out

    def _inputs(self, index: int) -> dict[str, Tensor]:
        k, i = self._items[index]
        seq = self.sequences[k]
        inputs: dict[str, Tensor] = {}
        if "rgb" in self.modalities:
            inputs["rgb"] = read_rgb(seq.image_files[i], (self.height, self.width))
        if "events" in self.modalities:
            ev = self.events_in_window(index)
            try:
                check_events(ev["x"], ev["y"], ev["t"], ev["p"], self.height, self.width)
            except EventError as e:
                raise DatasetLayoutError(f"{seq.events_file}: {e}") from None
            t_end = int(seq.timestamps[i])
            t_start = t_end - self.window_us
            # times relative to the window start keep the representation exact in any float precision
            inputs["events"] = self.representation(
                ev["x"], ev["y"], ev["t"] - t_start, ev["p"], self.height, self.width, 0, self.window_us
            )
        return inputs

    def _file_names(self) -> list[str]:
        return [f"{self.sequences[k].name}/{self.sequences[k].image_files[i].name}" for k, i in self._items]


def _check_events_file(f: h5py.File, path: Path) -> None:
    """Refuse an events file without the DSEC datasets or with non-integer event arrays."""
    for key in ("events/x", "events/y", "events/t", "events/p", "ms_to_idx"):
        if key not in f:
            raise DatasetLayoutError(f"{path}: no {key!r} dataset; not a DSEC events file, re-download it")
    lengths = {key: f[f"events/{key}"].shape[0] for key in "xytp"}
    if len(set(lengths.values())) > 1:
        raise DatasetLayoutError(f"{path}: event arrays of different lengths {lengths}; re-download it")
    for key in ("x", "y", "t", "p", "ms_to_idx"):
        ds = f[key] if key == "ms_to_idx" else f[f"events/{key}"]
        if ds.dtype.kind not in "iu":
            raise DatasetLayoutError(
                f"{path}: {ds.name} has dtype {ds.dtype}; DSEC stores integers (t: uint32 microseconds "
                f"after t_offset), convert the file"
            )
