"""Synthetic RGB + event sequences with exact boxes: an ESIM-style event simulator and a moving-object scene.

Real DSEC / PKU-DDD17-Car recordings are large; this module makes small, fully known test beds for the
two-stream detector instead. :func:`simulate_events` turns a sequence of log-intensity frames into an
event stream as ESIM does (Rebecq et al., "ESIM: an open event camera simulator", CoRL 2018);
:func:`simulate_sequence` moves real object images (CIFAR-10, :func:`cifar_objects`) over a textured
background, renders labelled RGB frames (optionally degraded: dark or motion-blurred, where events still
see the objects) and the events of the clean scene between them, with boxes in the DSEC-Det
``tracks.npy`` layout.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .dsec import DSEC_CLASSES, TRACKS_DTYPE, write_dsec_det_sequence

__all__ = [
    "DEGRADE_MODES",
    "SIM_CLASSES",
    "TRACKS_DTYPE",
    "Scene",
    "SimulatedSequence",
    "SimulationError",
    "cifar_objects",
    "log_intensity",
    "make_scene",
    "simulate_events",
    "simulate_sequence",
    "write_simulated_dsec",
]

BT601 = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma weights
DEGRADE_MODES = ("dark", "blur")
_ESIM_TOLERANCE = 1e-6  # ESIM skips pixels whose log intensity changes less than this in an interval


class SimulationError(ValueError):
    """Bad input to the event simulator or the synthetic scene."""


def log_intensity(rgb: Any, eps: float = 1e-3) -> Tensor:
    """``log(eps + luminance)`` as float32 ``[..., H, W]`` from RGB ``[..., H, W, 3]``.

    Luminance uses the ITU-R BT.601 weights on intensities in [0, 1] (uint8 inputs are divided by 255,
    float inputs are taken as already in [0, 1]). ``eps`` keeps black pixels finite, as ESIM's
    ``log_eps`` (1e-3) does. Torch inputs stay on their device.
    """
    img = rgb if isinstance(rgb, Tensor) else torch.from_numpy(np.ascontiguousarray(rgb))
    if img.ndim < 3 or img.shape[-1] != 3:
        raise SimulationError(
            f"log_intensity: expected RGB images [..., H, W, 3], got shape {tuple(img.shape)}; "
            f"stack the frames as [N, H, W, 3]"
        )
    if not eps > 0:
        raise SimulationError(f"log_intensity: eps must be positive, got {eps!r}")
    if img.dtype == torch.uint8:
        img = img.to(torch.float32) / 255.0
    elif img.is_floating_point():
        img = img.to(torch.float32)
    else:
        raise SimulationError(
            f"log_intensity: RGB images must be uint8 (0-255) or float (0-1), got {str(img.dtype)[6:]}"
        )
    weights = torch.tensor(BT601, dtype=torch.float32, device=img.device)
    return torch.log(eps + (img * weights).sum(-1))


def _timestamps(timestamps_us: Any, n: int) -> np.ndarray:
    ts = np.asarray(timestamps_us.detach().cpu() if isinstance(timestamps_us, Tensor) else timestamps_us)
    if ts.ndim != 1 or ts.shape[0] != n:
        raise SimulationError(
            f"simulate_events: timestamps_us must be 1-D with one time per frame ({n}), got shape {ts.shape}"
        )
    if ts.dtype.kind not in "iu":
        raise SimulationError(
            f"simulate_events: timestamps_us has dtype {ts.dtype}; integer microseconds (int64) are expected"
        )
    ts = ts.astype(np.int64)
    if (np.diff(ts) <= 0).any():
        first = int(np.argmax(np.diff(ts) <= 0)) + 1
        raise SimulationError(
            f"simulate_events: timestamps_us must increase strictly (not at index {first}); sort the frames"
        )
    return ts


def simulate_events(
    log_frames: Any,
    timestamps_us: Any,
    *,
    threshold: float = 0.2,
    threshold_sigma: float = 0.03,
    seed: int = 0,
    refractory_us: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Events ``(x uint16, y uint16, t int64 us, p int8 in {0,1})`` of log-intensity frames, sorted by t.

    ESIM (Rebecq et al., CoRL 2018; rpg_esim ``event_simulator.cpp``): each pixel has positive and
    negative contrast thresholds drawn once from N(threshold, threshold_sigma), clipped to >= 0.01, and a
    reference log intensity starting at ``log_frames[0]``. Between frames the log intensity is linear in
    time; each time it crosses reference + C+ (reference - C-) an ON (OFF) event is emitted at the
    interpolated crossing time (rounded to the microsecond) and the reference moves to the crossing
    level, so one interval can give several events. An event less than ``refractory_us`` after the
    pixel's previous event is dropped (the reference still moves, as in ESIM). Computed on the device of
    ``log_frames``, looping over frame intervals and crossings, never over pixels.
    """
    frames = log_frames if isinstance(log_frames, Tensor) else torch.from_numpy(np.asarray(log_frames))
    if frames.ndim != 3:
        raise SimulationError(
            f"simulate_events: log_frames must be [N, H, W], got shape {tuple(frames.shape)}; "
            f"convert RGB frames with log_intensity() first"
        )
    if not frames.is_floating_point():
        raise SimulationError(
            f"simulate_events: log_frames must be float log intensities, got {str(frames.dtype)[6:]}; "
            f"convert images with log_intensity() first"
        )
    if not bool(torch.isfinite(frames).all()):
        raise SimulationError("simulate_events: log_frames holds NaN or inf; use log(eps + intensity)")
    if not threshold > 0 or not threshold_sigma >= 0:
        raise SimulationError(
            f"simulate_events: need threshold > 0 and threshold_sigma >= 0, "
            f"got {threshold} and {threshold_sigma}"
        )
    if refractory_us < 0:
        raise SimulationError(f"simulate_events: refractory_us must be >= 0, got {refractory_us}")
    n, height, width = frames.shape
    if height > 65536 or width > 65536:
        raise SimulationError(f"simulate_events: frames of {height}x{width} do not fit uint16 coordinates")
    ts = _timestamps(timestamps_us, n)
    device = frames.device
    frames = frames.to(torch.float64)
    # thresholds drawn on the CPU so that a seed gives the same sensor on every device
    gen = torch.Generator().manual_seed(int(seed))
    c_on, c_off = (
        (threshold + threshold_sigma * torch.randn(height, width, generator=gen, dtype=torch.float64))
        .clamp_min(0.01)
        .to(device)
        for _ in range(2)
    )
    ref = frames[0].clone()
    last = torch.full((height, width), torch.iinfo(torch.int64).min // 2, dtype=torch.int64, device=device)
    chunks: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
    for i in range(n - 1):
        it, itdt = frames[i], frames[i + 1]
        ta, dt = int(ts[i]), int(ts[i + 1] - ts[i])
        change = itdt - it
        up, down = change > _ESIM_TOLERANCE, change < -_ESIM_TOLERANCE
        active = up | down
        step = torch.where(up, c_on, -c_off)
        while True:
            cross = ref + step
            valid = active & ((up & (cross > it) & (cross <= itdt)) | (down & (cross < it) & (cross >= itdt)))
            if not bool(valid.any()):
                break
            yy, xx = valid.nonzero(as_tuple=True)
            te = ta + torch.round((cross[valid] - it[valid]) * dt / change[valid]).to(torch.int64)
            keep = te - last[valid] >= refractory_us
            last[yy[keep], xx[keep]] = te[keep]
            chunks.append((xx[keep], yy[keep], te[keep], up[valid][keep]))
            ref = torch.where(valid, cross, ref)
            active = valid
    if not chunks:
        empty = np.zeros(0, dtype=np.uint16)
        return empty, empty.copy(), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int8)
    x, y, t, p = (torch.cat(parts).cpu().numpy() for parts in zip(*chunks, strict=True))
    order = np.argsort(t, kind="stable")
    return x[order].astype(np.uint16), y[order].astype(np.uint16), t[order], p[order].astype(np.int8)


def _bounce(start: np.ndarray, velocity: np.ndarray, t_s: float, span: np.ndarray) -> np.ndarray:
    """Position at time ``t_s`` of a point moving at constant velocity that bounces off 0 and ``span``."""
    span = np.maximum(span, 0.0)
    period = np.where(span > 0, 2 * span, 1.0)
    u = np.mod(start + velocity * t_s, period)
    return np.where(span > 0, np.where(u <= span, u, period - u), 0.0)


def _composite(frame: np.ndarray, sprite: np.ndarray, x: float, y: float) -> None:
    """Paint ``sprite`` (h, w, 3) into ``frame`` (H, W, 3) with its top-left corner at float (x, y).

    Area-weighted (box-filter) subpixel rendering: sprite pixel (r, c) covers the square
    [x + c, x + c + 1) x [y + r, y + r + 1) and each frame pixel gets the colour of the area it shares
    with the sprite, so the painted pixels are exactly those whose square meets the box (x, y, w, h).
    """
    h, w = sprite.shape[:2]
    ix, iy = math.floor(x), math.floor(y)
    fx, fy = x - ix, y - iy
    rgba = np.concatenate([sprite, np.ones((h, w, 1))], axis=-1)
    rgba = np.pad(rgba, ((1, 1), (1, 1), (0, 0)))
    rgba = (1 - fx) * rgba[:, 1:] + fx * rgba[:, :-1]
    rgba = (1 - fy) * rgba[1:] + fy * rgba[:-1]  # (h + 1, w + 1, 4): premultiplied colour, coverage
    height, width = frame.shape[:2]
    r0, c0 = max(iy, 0), max(ix, 0)
    r1, c1 = min(iy + h + 1, height), min(ix + w + 1, width)
    if r1 <= r0 or c1 <= c0:
        return
    patch = rgba[r0 - iy : r1 - iy, c0 - ix : c1 - ix]
    region = frame[r0:r1, c0:c1]
    region *= 1 - patch[..., 3:]
    region += patch[..., :3]


@dataclass
class Scene:
    """Objects moving over a static background: positions, boxes and renders at any time.

    Object ``k`` (``sprites[k]``, ``class_ids[k]``) starts with its top-left corner at ``starts[k]``
    (x, y pixels) and moves at ``velocities[k]`` (pixels per second), bouncing off the image borders so
    that it stays fully visible. Objects are painted in order (later ones occlude earlier ones); a box
    is the object's full extent.
    """

    background: np.ndarray
    sprites: list[np.ndarray]
    class_ids: list[int]
    starts: np.ndarray
    velocities: np.ndarray

    @property
    def height(self) -> int:
        return int(self.background.shape[0])

    @property
    def width(self) -> int:
        return int(self.background.shape[1])

    def positions(self, t_us: float) -> np.ndarray:
        """Top-left corners ``[K, 2]`` (x, y) at ``t_us``, rounded to float32 so that boxes are exact."""
        sizes = np.array([[s.shape[1], s.shape[0]] for s in self.sprites], dtype=np.float64)
        span = np.array([self.width, self.height], dtype=np.float64) - sizes
        pos = _bounce(self.starts, self.velocities, t_us * 1e-6, span)
        return pos.astype(np.float32).astype(np.float64)

    def render(self, t_us: float) -> np.ndarray:
        """The clean scene at ``t_us``: float64 ``[H, W, 3]`` in [0, 255]."""
        frame = self.background.astype(np.float64)
        for sprite, (x, y) in zip(self.sprites, self.positions(t_us), strict=True):
            _composite(frame, sprite.astype(np.float64), float(x), float(y))
        return frame

    def boxes(self, t_us: int) -> np.ndarray:
        """One :data:`TRACKS_DTYPE` row per visible object at ``t_us``, clipped to the image."""
        rows = []
        for k, (sprite, (x, y)) in enumerate(zip(self.sprites, self.positions(t_us), strict=True)):
            x0, y0 = max(x, 0.0), max(y, 0.0)
            x1, y1 = min(x + sprite.shape[1], self.width), min(y + sprite.shape[0], self.height)
            if x1 > x0 and y1 > y0:
                rows.append((t_us, x0, y0, x1 - x0, y1 - y0, self.class_ids[k], 1.0, k))
        return np.array(rows, dtype=TRACKS_DTYPE)


def _texture(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth random colour texture (two octaves of bilinearly upsampled noise) in [40, 215]."""
    out = np.zeros((height, width, 3))
    for cell, amplitude in ((24, 1.0), (6, 0.35)):
        coarse = rng.uniform(-1, 1, (3, height // cell + 2, width // cell + 2))
        up = torch.nn.functional.interpolate(
            torch.from_numpy(coarse)[None], size=(height, width), mode="bilinear", align_corners=True
        )
        out += amplitude * up[0].permute(1, 2, 0).numpy()
    out = (out - out.min()) / max(out.max() - out.min(), 1e-9)
    return 40 + 175 * out


def _check_objects(objects: Sequence[tuple[Any, int]], height: int, width: int) -> list[np.ndarray]:
    if len(objects) == 0:
        raise SimulationError("simulate_sequence: no objects given; pass 1-3 (image, class_id) pairs")
    sprites = []
    for k, item in enumerate(objects):
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise SimulationError(f"simulate_sequence: object {k} must be an (image, class_id) pair")
        img, cid = np.asarray(item[0]), item[1]
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise SimulationError(
                f"simulate_sequence: object {k} must be an RGB uint8 image [h, w, 3], "
                f"got {img.dtype} {img.shape}"
            )
        if img.shape[0] > height or img.shape[1] > width:
            raise SimulationError(
                f"simulate_sequence: object {k} ({img.shape[1]}x{img.shape[0]}) is larger than the "
                f"{width}x{height} image; resize it or enlarge the image"
            )
        if not isinstance(cid, (int, np.integer)) or isinstance(cid, bool) or not 0 <= cid < 256:
            raise SimulationError(f"simulate_sequence: object {k} has class id {cid!r}; expected 0..255")
        sprites.append(img)
    return sprites


def make_scene(
    objects: Sequence[tuple[Any, int]],
    *,
    height: int = 96,
    width: int = 128,
    seed: int = 0,
    background: str | np.ndarray = "texture",
    speed: tuple[float, float] = (40.0, 120.0),
) -> Scene:
    """A random :class:`Scene` of ``objects`` ((RGB uint8 image, class id) pairs), deterministic for a seed.

    Start positions are uniform over the image, directions uniform, speeds uniform in ``speed`` (pixels
    per second). ``background`` is ``"texture"`` (smooth random texture), ``"flat"`` (grey 128) or an
    RGB uint8 ``[height, width, 3]`` array.
    """
    if height < 1 or width < 1:
        raise SimulationError(f"simulate_sequence: image size must be positive, got {height}x{width}")
    sprites = _check_objects(objects, height, width)
    if not 0 <= speed[0] <= speed[1]:
        raise SimulationError(f"simulate_sequence: speed must be a range 0 <= low <= high, got {speed}")
    rng = np.random.default_rng([int(seed), 0])
    if isinstance(background, str):
        if background == "texture":
            bg = _texture(height, width, rng)
        elif background == "flat":
            bg = np.full((height, width, 3), 128.0)
        else:
            raise SimulationError(
                f"simulate_sequence: unknown background {background!r}; use 'texture', 'flat' or an image"
            )
    else:
        bg = np.asarray(background)
        if bg.shape != (height, width, 3) or bg.dtype != np.uint8:
            raise SimulationError(
                f"simulate_sequence: background image must be uint8 [{height}, {width}, 3], "
                f"got {bg.dtype} {bg.shape}"
            )
        bg = bg.astype(np.float64)
    span = np.array([[width - s.shape[1], height - s.shape[0]] for s in sprites], dtype=np.float64)
    starts = rng.uniform(0, 1, span.shape) * span
    angle = rng.uniform(0, 2 * math.pi, len(sprites))
    v = rng.uniform(speed[0], speed[1], len(sprites))
    velocities = np.stack([v * np.cos(angle), v * np.sin(angle)], axis=1)
    class_ids = [int(cid) for _, cid in objects]
    return Scene(background=bg, sprites=sprites, class_ids=class_ids, starts=starts, velocities=velocities)


@dataclass
class SimulatedSequence:
    """A synthetic recording: labelled RGB frames, the event stream and DSEC-Det style boxes.

    ``tracks`` holds one :data:`TRACKS_DTYPE` row per object and labelled frame (``t`` = the frame's
    timestamp, x, y = top-left corner, w, h in pixels); ``class_names[class_id]`` names a class.
    ``degraded[i]`` is ``""`` for a clean frame, else the degradation of frame ``i`` (``"dark"``,
    ``"blur"``); the events always come from the clean scene.
    """

    images: np.ndarray
    image_timestamps_us: np.ndarray
    x: np.ndarray
    y: np.ndarray
    t: np.ndarray
    p: np.ndarray
    tracks: np.ndarray
    class_names: tuple[str, ...]
    height: int
    width: int
    degraded: tuple[str, ...] = ()
    scene: Scene | None = field(default=None, repr=False)

    def write_dsec_det(self, root: str | Path, split: str, name: str) -> Path:
        """Write the sequence as ``root/split/name`` in the DSEC-Det layout (read by ``DSECDetDataset``)."""
        arrays = ("images", "image_timestamps_us", "x", "y", "t", "p", "tracks")
        return write_dsec_det_sequence(root, split, name, **{k: getattr(self, k) for k in arrays})

    def events_between(
        self, t_start: int, t_end: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The events with ``t_start <= t < t_end`` (a binary search on the sorted timestamps)."""
        i0, i1 = np.searchsorted(self.t, [t_start, t_end], side="left")
        return self.x[i0:i1], self.y[i0:i1], self.t[i0:i1], self.p[i0:i1]


def _degrade_frame(
    scene: Scene, clean: np.ndarray, t_us: int, dt_us: int, mode: str, substeps: int, rng: np.random.Generator
) -> np.ndarray:
    if mode == "dark":  # under-exposed: low gain, then sensor noise that the low signal no longer hides
        gain = rng.uniform(0.05, 0.15)
        return gain * clean + rng.normal(0.0, 3.0, clean.shape)
    # motion blur: the exposure integrates the scene over one frame interval centred on the frame time
    offsets = np.linspace(-0.5, 0.5, 2 * substeps + 1) * dt_us
    return np.mean([scene.render(t_us + o) for o in offsets], axis=0)


def simulate_sequence(
    objects: Sequence[tuple[Any, int]],
    *,
    height: int = 96,
    width: int = 128,
    frames: int = 10,
    fps: float = 20.0,
    substeps: int = 8,
    seed: int = 0,
    background: str | np.ndarray = "texture",
    degrade: float = 0.0,
    degrade_modes: Sequence[str] = DEGRADE_MODES,
    class_names: Sequence[str] | None = None,
    speed: tuple[float, float] = (40.0, 120.0),
    threshold: float = 0.2,
    threshold_sigma: float = 0.03,
) -> SimulatedSequence:
    """A synthetic sequence of ``objects``, (RGB uint8 image, class id) pairs from :func:`cifar_objects`.

    The scene (see :func:`make_scene`) is rendered at ``frames * substeps + 1`` instants from 0 to
    ``frames`` frame intervals; labelled frame ``i`` is the render at ``(i + 1) / fps`` seconds, so that
    every labelled frame, the first included, has one full interval of events before it. Events are
    simulated with :func:`simulate_events` from the clean renders. ``degrade`` is the fraction of
    labelled frames made adverse, each with a mode drawn from ``degrade_modes``: ``"dark"`` (gain
    0.05-0.15 plus noise) or ``"blur"`` (exposure over one frame interval). Scene, events and boxes do
    not depend on ``degrade``. Everything is deterministic for a ``seed``.
    """
    if frames < 1 or substeps < 1 or not fps > 0:
        raise SimulationError(
            f"simulate_sequence: need frames >= 1, substeps >= 1 and fps > 0, got {frames}, {substeps}, {fps}"
        )
    dt_us = round(1e6 / fps)
    if dt_us < substeps:
        raise SimulationError(f"simulate_sequence: fps={fps} with substeps={substeps} is finer than 1 us")
    if not 0.0 <= degrade <= 1.0:
        raise SimulationError(f"simulate_sequence: degrade is a fraction of frames in [0, 1], got {degrade}")
    unknown = [m for m in degrade_modes if m not in DEGRADE_MODES]
    if unknown or not degrade_modes:
        raise SimulationError(
            f"simulate_sequence: unknown degrade_modes {unknown or list(degrade_modes)}; "
            f"use some of {DEGRADE_MODES}"
        )
    scene = make_scene(objects, height=height, width=width, seed=seed, background=background, speed=speed)
    top = max(scene.class_ids)
    names = tuple(str(i) for i in range(top + 1)) if class_names is None else tuple(class_names)
    if len(names) <= top:
        raise SimulationError(
            f"simulate_sequence: class id {top} has no name in class_names ({len(names)} names); "
            f"pass one name per class id"
        )
    times = np.array([k * dt_us // substeps for k in range(frames * substeps + 1)], dtype=np.int64)
    renders = np.stack([scene.render(float(t)) for t in times])
    logs = log_intensity(torch.from_numpy(renders / 255.0))
    x, y, t, p = simulate_events(logs, times, threshold=threshold, threshold_sigma=threshold_sigma, seed=seed)

    image_times = times[substeps::substeps]
    images = renders[substeps::substeps].copy()
    rng = np.random.default_rng([int(seed), 1])
    count = round(degrade * frames)
    chosen = rng.choice(frames, size=count, replace=False) if count else np.zeros(0, dtype=np.int64)
    modes = [""] * frames
    for i in sorted(int(c) for c in chosen):
        modes[i] = str(rng.choice(list(degrade_modes)))
        images[i] = _degrade_frame(scene, images[i], int(image_times[i]), dt_us, modes[i], substeps, rng)
    images = np.clip(np.round(images), 0, 255).astype(np.uint8)
    tracks = np.concatenate([scene.boxes(int(ti)) for ti in image_times])
    return SimulatedSequence(
        images=images,
        image_timestamps_us=image_times,
        x=x,
        y=y,
        t=t,
        p=p,
        tracks=tracks,
        class_names=names,
        height=height,
        width=width,
        degraded=tuple(modes),
        scene=scene,
    )


def cifar_objects(
    root: Path, classes: dict[str, int], per_class: int, seed: int, split: str = "train"
) -> list[tuple[np.ndarray, int]]:
    """``per_class`` real images (RGB uint8 ``[32, 32, 3]``, class id) per CIFAR-10 class, chosen by seed.

    ``root`` is the ImageFolder copy (``root/{train,test}/<class>/*.jpg``, e.g.
    /work/shared/datasets/cifar10-jpeg); ``classes`` maps CIFAR-10 folder names to the class ids of the
    synthetic data set (e.g. ``{"automobile": 0, "truck": 1}``). Returned in the order of ``classes``.
    """
    from PIL import Image

    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise SimulationError(
            f"cifar_objects: no folder {split_dir}; pass the CIFAR-10 ImageFolder copy "
            f"(root/{{train,test}}/<class>/*.jpg) as root"
        )
    if per_class < 1:
        raise SimulationError(f"cifar_objects: per_class must be >= 1, got {per_class}")
    available = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
    rng = np.random.default_rng(int(seed))
    out = []
    for name, cid in classes.items():
        if name not in available:
            close = difflib.get_close_matches(name, available, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise SimulationError(
                f"cifar_objects: no class folder {name!r} in {split_dir}; {hint}found {', '.join(available)}"
            )
        files = sorted(
            f for f in (split_dir / name).iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png")
        )
        if len(files) < per_class:
            raise SimulationError(
                f"cifar_objects: {split_dir / name} holds {len(files)} images, "
                f"fewer than per_class={per_class}"
            )
        for j in rng.choice(len(files), size=per_class, replace=False):
            with Image.open(files[int(j)]) as img:
                out.append((np.asarray(img.convert("RGB"), dtype=np.uint8).copy(), int(cid)))
    return out


SIM_CLASSES = {"automobile": "car", "truck": "truck"}  # CIFAR-10 folder -> DSEC-Det class


def write_simulated_dsec(
    out: str | Path,
    cifar_root: str | Path,
    *,
    train_sequences: int = 24,
    test_sequences: int = 8,
    frames: int = 10,
    height: int = 64,
    width: int = 80,
    max_objects: int = 3,
    degrade: float = 0.3,
    seed: int = 0,
) -> Path:
    """A simulated set in the DSEC-Det layout (``out/{train,test}/sim_NNN``), read by ``DSECDetDataset``.

    Each sequence moves 1..``max_objects`` real CIFAR-10 cars and trucks (training sequences take
    images of CIFAR's train split, test sequences of its test split: held-out objects) over its own
    background; ``degrade`` of the RGB frames are dark or blurred (the events are not). Class ids are
    DSEC-Det's (car 2, truck 4), so the DSEC recipes' class maps apply.
    """
    ids = {cifar: DSEC_CLASSES.index(dsec) for cifar, dsec in SIM_CLASSES.items()}
    out = Path(out)
    for split, count in (("train", train_sequences), ("test", test_sequences)):
        split_seed = seed * 7919 + (0 if split == "train" else 1)
        pool = cifar_objects(
            Path(cifar_root), ids, per_class=count * max_objects, seed=split_seed, split=split
        )
        rng = np.random.default_rng(split_seed)
        order = rng.permutation(len(pool))
        used = 0
        for k in range(count):
            n = int(rng.integers(1, max_objects + 1))
            objects = [pool[i] for i in order[used : used + n]]
            used += n
            seq = simulate_sequence(
                objects,
                height=height,
                width=width,
                frames=frames,
                seed=split_seed * 1000 + k,
                degrade=degrade,
                class_names=DSEC_CLASSES,
            )
            seq.write_dsec_det(out, split, f"sim_{k:03d}")
    return out
