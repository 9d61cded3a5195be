"""Event-camera data as dense tensors: per-polarity counts, voxel grids and time surfaces.

An event stream is four equal-length 1-D arrays (numpy or torch): pixel coordinates ``x``, ``y``
(integers), timestamps ``t`` (integer microseconds, sorted; DSEC stores them as int64/uint64 us) and
polarity ``p`` in {0, 1} (DSEC: 1 = ON, a brightness increase) or {-1, 1}. Every representation is
computed with scatter operations on the device of the inputs (numpy inputs go to the CPU), without a
Python loop over events. FRN (Cao et al., ECCV 2024) feeds its event stream a 5-bin voxel grid.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "MODALITIES",
    "REPRESENTATIONS",
    "EventError",
    "EventRepresentation",
    "check_events",
    "check_modalities",
    "event_count",
    "time_surface",
    "voxel_grid",
]

REPRESENTATIONS = ("voxel", "count", "time_surface")
MODALITIES = ("rgb", "events")  # input streams, in the detector's channel order


def check_modalities(modalities: str | Iterable[str]) -> tuple[str, ...]:
    """``modalities`` in the canonical (channel) order, RGB first; one line refusing unknown, repeated
    or no names."""
    mods = (modalities,) if isinstance(modalities, str) else tuple(modalities)
    unknown = [m for m in mods if m not in MODALITIES]
    if unknown or not mods or len(set(mods)) != len(mods):
        what = f"unknown modality names {unknown}" if unknown else f"modalities {list(mods)}"
        raise ValueError(f"{what}: choose rgb, events or both, each once")
    return tuple(m for m in MODALITIES if m in mods)


class EventError(ValueError):
    """Event arrays that cannot be a valid event stream for the given sensor."""


def _is_integer(a: Any) -> bool:
    if isinstance(a, Tensor):
        return not (a.is_floating_point() or a.is_complex() or a.dtype == torch.bool)
    return a.dtype.kind in "iu"


def _is_int_scalar(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _to_int64(a: Any, device: torch.device) -> Tensor:
    """``a`` as an int64 tensor on ``device`` (numpy uint64, which torch lacks, via numpy)."""
    if isinstance(a, Tensor):
        return a.to(device=device, dtype=torch.int64)
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)).to(device)


def _prepare(
    x: Any, y: Any, t: Any, p: Any, height: int, width: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Validated int64 tensors ``x, y, t`` and ``p`` as +1 (ON) / -1 (OFF), on the inputs' device."""
    if not (_is_int_scalar(height) and _is_int_scalar(width)):
        raise EventError(f"events: height and width must be integers, got {height!r} x {width!r}")
    if height < 1 or width < 1:
        raise EventError(f"events: the sensor size must be positive, got height={height}, width={width}")
    arrays = {"x": x, "y": y, "t": t, "p": p}
    for name, a in list(arrays.items()):
        if not isinstance(a, Tensor):
            a = np.asarray(a)
            arrays[name] = a
        if a.ndim != 1:
            raise EventError(f"events: {name} must be a 1-D array, got shape {tuple(a.shape)}")
    lengths = {name: a.shape[0] for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        sizes = ", ".join(f"{k}={v}" for k, v in lengths.items())
        raise EventError(f"events: x, y, t, p must have equal lengths, got {sizes}")
    for name in ("x", "y", "t"):
        a = arrays[name]
        if not _is_integer(a):
            unit = "microseconds" if name == "t" else "pixel coordinates"
            raise EventError(
                f"events: {name} has dtype {str(a.dtype).removeprefix('torch.')}, integer {unit} (int64) are "
                f"expected; convert it with .astype(np.int64) (rounding first if it holds fractions)"
            )
    device = next((a.device for a in arrays.values() if isinstance(a, Tensor)), torch.device("cpu"))
    xs, ys, ts = (_to_int64(arrays[k], device) for k in ("x", "y", "t"))
    p = arrays["p"]
    pt = p.to(device) if isinstance(p, Tensor) else torch.from_numpy(np.ascontiguousarray(p)).to(device)
    if xs.shape[0] == 0:
        return xs, ys, ts, torch.zeros(0, dtype=torch.float32, device=device)
    on = pt == 1
    if not bool((on | (pt == 0)).all()) and not bool((on | (pt == -1)).all()):
        values = torch.unique(pt.double()).tolist()[:6]
        raise EventError(
            f"events: p must hold polarities in {{0, 1}} or {{-1, 1}}, found values {values}; "
            f"map OFF events to 0 (or -1) and ON events to 1"
        )
    dec = ts[1:] < ts[:-1]
    if bool(dec.any()):
        first = int(torch.argmax(dec.to(torch.uint8))) + 1
        raise EventError(
            f"events: t is not sorted (first decrease at index {first}); sort the events by time"
        )
    for name, v, size, axis in (("x", xs, width, "width"), ("y", ys, height, "height")):
        lo, hi = int(v.min()), int(v.max())
        if lo < 0 or hi >= size:
            bad = lo if lo < 0 else hi
            raise EventError(
                f"events: {name} = {bad} is outside the sensor ({axis} {size}: 0 <= {name} < {size}); "
                f"pass the sensor size the events were recorded with (height={height}, width={width})"
            )
    return xs, ys, ts, on.to(torch.float32) * 2 - 1


def check_events(x: Any, y: Any, t: Any, p: Any, height: int, width: int) -> None:
    """Raise a one-line :class:`EventError` when the arrays are not an event stream of the sensor.

    Checks equal lengths, integer x/y/t, polarities in {0,1} or {-1,1}, ascending t and coordinates
    inside the ``height`` x ``width`` sensor. Empty arrays are a valid (empty) stream.
    """
    _prepare(x, y, t, p, height, width)


def _windowed(
    x: Any, y: Any, t: Any, p: Any, height: int, width: int, t_start: int | None, t_end: int | None
) -> tuple[Tensor, Tensor, Tensor, Tensor, int | None, int | None]:
    """:func:`_prepare`'s tensors of the events in ``[t_start, t_end]`` and the window ends (default:
    the first / last event; None for an empty stream without given ends)."""
    xs, ys, ts, ps = _prepare(x, y, t, p, height, width)
    for name, v in (("t_start", t_start), ("t_end", t_end)):
        if v is not None and not _is_int_scalar(v) and not (isinstance(v, float) and v.is_integer()):
            raise EventError(f"events: {name} must be an integer time in microseconds, got {v!r}")
    if ts.numel() == 0:
        return xs, ys, ts, ps, t_start, t_end
    t0 = int(ts[0]) if t_start is None else int(t_start)
    t1 = int(ts[-1]) if t_end is None else int(t_end)
    if t1 < t0:
        raise EventError(
            f"events: t_end ({t1}) is before t_start ({t0}); pass a window with t_start <= t_end"
        )
    if t_start is not None or t_end is not None:
        mask = (ts >= t0) & (ts <= t1)
        xs, ys, ts, ps = xs[mask], ys[mask], ts[mask], ps[mask]
    return xs, ys, ts, ps, t0, t1


def _check_settings(bins: Any = 1, tau_us: Any = 1.0) -> None:
    if not _is_int_scalar(bins) or bins < 1:
        raise EventError(f"events: bins must be an integer >= 1, got {bins!r}")
    if not tau_us > 0:
        raise EventError(f"events: tau_us must be a positive time in microseconds, got {tau_us!r}")


def event_count(
    x: Any,
    y: Any,
    t: Any,
    p: Any,
    height: int,
    width: int,
    t_start: int | None = None,
    t_end: int | None = None,
) -> Tensor:
    """Events per pixel and polarity, ``[2, H, W]`` float32: channel 0 = ON (p=1), channel 1 = OFF.

    Events outside ``[t_start, t_end]`` are ignored (both ends default to the whole stream).
    """
    xs, ys, _, ps, _, _ = _windowed(x, y, t, p, height, width, t_start, t_end)
    out = torch.zeros(2 * height * width, dtype=torch.float32, device=xs.device)
    index = ((ps < 0).to(torch.int64) * height + ys) * width + xs
    out.index_put_((index,), torch.ones_like(ps), accumulate=True)
    return out.view(2, height, width)


def voxel_grid(
    x: Any,
    y: Any,
    t: Any,
    p: Any,
    height: int,
    width: int,
    bins: int = 5,
    t_start: int | None = None,
    t_end: int | None = None,
) -> Tensor:
    """The event voxel grid ``[bins, H, W]`` float32 with bilinear interpolation in time.

    Zhu et al., "Unsupervised event-based learning of optical flow, depth and egomotion" (CVPR 2019),
    as in the DSEC / RVT / FRN code: polarity +1/-1, ``tn = (bins-1) (t - t_start) / (t_end - t_start)``,
    and each event adds ``p (1 - |tn - k|)`` to the two bins ``k`` next to ``tn``. ``t_start``/``t_end``
    default to the first/last event; a zero-length window puts every event in bin 0. No normalisation.
    """
    _check_settings(bins=bins)
    xs, ys, ts, ps, t0, t1 = _windowed(x, y, t, p, height, width, t_start, t_end)
    out = torch.zeros(bins * height * width, dtype=torch.float32, device=xs.device)
    if xs.numel() == 0:
        return out.view(bins, height, width)
    if t1 == t0:
        tn = torch.zeros(ts.shape, dtype=torch.float64, device=ts.device)
    else:
        # int64 differences first, then float64: absolute DSEC timestamps exceed float32 precision
        tn = (ts - t0).to(torch.float64) * (bins - 1) / (t1 - t0)
    k0 = tn.floor()
    pixel = ys * width + xs
    for k in (k0, k0 + 1):
        weight = 1 - (tn - k).abs()
        valid = (weight > 0) & (k >= 0) & (k < bins)
        index = k[valid].to(torch.int64) * (height * width) + pixel[valid]
        out.index_put_((index,), (ps[valid] * weight[valid]).to(torch.float32), accumulate=True)
    return out.view(bins, height, width)


def time_surface(
    x: Any,
    y: Any,
    t: Any,
    p: Any,
    height: int,
    width: int,
    tau_us: float = 50_000.0,
    t_start: int | None = None,
    t_end: int | None = None,
) -> Tensor:
    """Exponentially decaying time surface ``[2, H, W]`` float32 (channel 0 = ON, 1 = OFF).

    Lagorce et al., "HOTS" (TPAMI 2017): ``exp(-(t_ref - t_last) / tau)`` at every pixel with an event,
    where ``t_last`` is the pixel's latest event of that polarity and ``t_ref`` is ``t_end`` (default:
    the last event); 0 at pixels without events.
    """
    _check_settings(tau_us=tau_us)
    xs, ys, ts, ps, _, t1 = _windowed(x, y, t, p, height, width, t_start, t_end)
    size = 2 * height * width
    out = torch.zeros(size, dtype=torch.float32, device=xs.device)
    if xs.numel() == 0:
        return out.view(2, height, width)
    index = ((ps < 0).to(torch.int64) * height + ys) * width + xs
    last = torch.full((size,), torch.iinfo(torch.int64).min, dtype=torch.int64, device=xs.device)
    last.scatter_reduce_(0, index, ts, reduce="amax")
    hit = torch.zeros(size, dtype=torch.bool, device=xs.device)
    hit[index] = True
    age = (t1 - last[hit]).to(torch.float64)
    out[hit] = torch.exp(-age / float(tau_us)).to(torch.float32)
    return out.view(2, height, width)


@dataclass(frozen=True)
class EventRepresentation:
    """A named event representation with its settings, callable on event arrays.

    ``name`` is one of :data:`REPRESENTATIONS`; ``bins`` is used by ``"voxel"`` (FRN: 5) and ``tau_us``
    by ``"time_surface"``. ``channels`` is the number of output channels (the event stream's ``in_chans``).
    """

    name: str = "voxel"
    bins: int = 5
    tau_us: float = 50_000.0

    def __post_init__(self) -> None:
        if self.name not in REPRESENTATIONS:
            close = difflib.get_close_matches(str(self.name), REPRESENTATIONS, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}? " if close else ""
            names = ", ".join(REPRESENTATIONS)
            raise EventError(f"events: unknown representation {self.name!r}; {hint}choose one of {names}")
        _check_settings(self.bins, self.tau_us)

    @property
    def channels(self) -> int:
        """Output channels: ``bins`` for the voxel grid, 2 (ON, OFF) otherwise."""
        return int(self.bins) if self.name == "voxel" else 2

    def __call__(
        self,
        x: Any,
        y: Any,
        t: Any,
        p: Any,
        height: int,
        width: int,
        t_start: int | None = None,
        t_end: int | None = None,
    ) -> Tensor:
        """The ``[channels, H, W]`` float32 representation of the events in ``[t_start, t_end]``."""
        if self.name == "voxel":
            return voxel_grid(x, y, t, p, height, width, self.bins, t_start, t_end)
        if self.name == "count":
            return event_count(x, y, t, p, height, width, t_start, t_end)
        return time_surface(x, y, t, p, height, width, self.tau_us, t_start, t_end)
