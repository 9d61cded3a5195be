"""Event representations against hand-computed tensors, and the one-line errors for bad event arrays."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch

from senet.fusion.events import (
    REPRESENTATIONS,
    EventError,
    EventRepresentation,
    check_events,
    event_count,
    time_surface,
    voxel_grid,
)

H, W = 3, 4


def _events(lib: str = "numpy", polarity: str = "01"):
    """Five (x, y, t, p) events, 3x4 sensor: (0,0,0,ON) (3,2,25,OFF) (1,1,50,ON) (1,1,75,OFF) (3,2,100,ON)."""
    x = np.array([0, 3, 1, 1, 3], dtype=np.int64)
    y = np.array([0, 2, 1, 1, 2], dtype=np.int64)
    t = np.array([0, 25, 50, 75, 100], dtype=np.int64)
    p = np.array([1, 0, 1, 0, 1], dtype=np.int64)
    if polarity == "-11":
        p = 2 * p - 1
    if lib == "torch":
        return tuple(torch.from_numpy(a) for a in (x, y, t, p))
    return x, y, t, p


def test_event_count_hand_computed() -> None:
    expected = torch.zeros(2, H, W)
    expected[0, 0, 0] = 1  # ON
    expected[0, 1, 1] = 1
    expected[0, 2, 3] = 1
    expected[1, 2, 3] = 1  # OFF
    expected[1, 1, 1] = 1
    out = event_count(*_events(), H, W)
    assert out.dtype == torch.float32 and out.shape == (2, H, W)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_event_count_accumulates_repeated_pixels() -> None:
    x = np.array([2, 2, 2, 2])
    y = np.array([1, 1, 1, 1])
    t = np.array([5, 5, 6, 9])
    p = np.array([1, 1, 1, 0])
    out = event_count(x, y, t, p, H, W)
    assert out[0, 1, 2] == 3 and out[1, 1, 2] == 1 and out.sum() == 4


def test_voxel_grid_integer_bins() -> None:
    # bins=5 over [0, 100]: tn = t * 4 / 100 = 0, 1, 2, 3, 4, each event lands in one bin with weight 1
    expected = torch.zeros(5, H, W)
    expected[0, 0, 0] = 1
    expected[1, 2, 3] = -1
    expected[2, 1, 1] = 1
    expected[3, 1, 1] = -1
    expected[4, 2, 3] = 1
    torch.testing.assert_close(voxel_grid(*_events(), H, W, bins=5), expected, rtol=0, atol=0)


def test_voxel_grid_bilinear_split() -> None:
    # bins=3 over [0, 100]: tn = 0, 0.5, 1, 1.5, 2; the OFF events at 0.5 and 1.5 split -0.5 / -0.5
    expected = torch.zeros(3, H, W)
    expected[0, 0, 0] = 1
    expected[0, 2, 3] = -0.5
    expected[1, 2, 3] = -0.5
    expected[1, 1, 1] = 1 - 0.5
    expected[2, 1, 1] = -0.5
    expected[2, 2, 3] = 1
    torch.testing.assert_close(voxel_grid(*_events(), H, W, bins=3), expected, rtol=0, atol=1e-7)


def test_voxel_grid_uneven_split_and_sign() -> None:
    # bins=5 over [0, 100]: the OFF event at t=10 has tn = 0.4 -> -0.6 in bin 0, -0.4 in bin 1
    x, y, t, p = np.array([0, 2, 1]), np.array([0, 2, 0]), np.array([0, 10, 100]), np.array([1, 0, 1])
    out = voxel_grid(x, y, t, p, H, W, bins=5)
    assert out[0, 2, 2].item() == pytest.approx(-0.6)
    assert out[1, 2, 2].item() == pytest.approx(-0.4)
    assert out[0, 0, 0].item() == 1 and out[4, 0, 1].item() == 1
    assert out.abs().sum().item() == pytest.approx(3.0)


def test_voxel_grid_window_and_zero_length() -> None:
    # window [25, 75], bins=3: tn = (t - 25) * 2 / 50 = 0, 1, 2 for the three events inside
    expected = torch.zeros(3, H, W)
    expected[0, 2, 3] = -1
    expected[1, 1, 1] = 1
    expected[2, 1, 1] = -1
    out = voxel_grid(*_events(), H, W, bins=3, t_start=25, t_end=75)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    # a zero-length window puts every event in bin 0 with its full polarity
    out = voxel_grid(*_events(), H, W, bins=3, t_start=50, t_end=50)
    assert out[0, 1, 1] == 1 and out.abs().sum() == 1
    # bins=1: every event in the single bin with weight 1: ON minus OFF per pixel
    single = voxel_grid(*_events(), H, W, bins=1)
    net = torch.zeros(1, H, W)
    net[0, 0, 0] = 1  # (2,3) and (1,1) have one ON and one OFF each: 0
    torch.testing.assert_close(single, net, rtol=0, atol=0)


def test_voxel_grid_large_absolute_timestamps() -> None:
    # DSEC-like absolute microsecond times: float32 would lose the 25 us steps at 1e12
    x, y, t, p = _events()
    ref = voxel_grid(x, y, t, p, H, W, bins=3)
    out = voxel_grid(x, y, t + 10**12, p, H, W, bins=3)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_time_surface_hand_computed() -> None:
    tau = 100.0
    expected = torch.zeros(2, H, W)
    expected[0, 0, 0] = math.exp(-1.0)  # t_ref = 100 (last event), ON at t = 0
    expected[0, 1, 1] = math.exp(-0.5)
    expected[0, 2, 3] = 1.0
    expected[1, 2, 3] = math.exp(-0.75)
    expected[1, 1, 1] = math.exp(-0.25)
    torch.testing.assert_close(time_surface(*_events(), H, W, tau_us=tau), expected)
    # t_end = 200: every age grows by 100 us
    later = time_surface(*_events(), H, W, tau_us=tau, t_end=200)
    torch.testing.assert_close(later, expected * math.exp(-1.0))


def test_time_surface_uses_latest_event_and_window() -> None:
    x, y, t, p = np.array([1, 1, 2]), np.array([0, 0, 2]), np.array([10, 60, 80]), np.array([1, 1, 1])
    out = time_surface(x, y, t, p, H, W, tau_us=20.0)
    assert out[0, 0, 1].item() == pytest.approx(math.exp(-20 / 20))  # latest event at t=60, t_ref=80
    assert out[0, 2, 2].item() == pytest.approx(1.0)
    assert out[1].abs().sum() == 0
    out = time_surface(x, y, t, p, H, W, tau_us=20.0, t_start=0, t_end=30)
    assert out[0, 0, 1].item() == pytest.approx(math.exp(-20 / 20))  # only the t=10 event, t_ref=30
    assert out[0, 2, 2] == 0


@pytest.mark.parametrize("fn", [event_count, voxel_grid, time_surface])
def test_numpy_torch_and_polarity_conventions_agree(fn) -> None:
    ref = fn(*_events("numpy", "01"), H, W)
    for lib, pol in (("torch", "01"), ("numpy", "-11"), ("torch", "-11")):
        torch.testing.assert_close(fn(*_events(lib, pol), H, W), ref, rtol=0, atol=0)


def test_dsec_dtypes_accepted() -> None:
    x, y, t, p = _events()
    dsec = (x.astype(np.uint16), y.astype(np.uint16), t.astype(np.uint64), p.astype(np.int8))
    torch.testing.assert_close(voxel_grid(*dsec, H, W), voxel_grid(x, y, t, p, H, W))
    bools = torch.from_numpy(p.astype(bool))
    torch.testing.assert_close(event_count(x, y, t, bools, H, W), event_count(x, y, t, p, H, W))


def test_empty_events() -> None:
    e = np.zeros(0, dtype=np.int64)
    check_events(e, e, e, e, H, W)
    assert voxel_grid(e, e, e, e, H, W, bins=4).shape == (4, H, W)
    assert event_count(e, e, e, e, H, W).abs().sum() == 0
    assert time_surface(e, e, e, e, H, W, t_end=10).abs().sum() == 0
    # events that all fall outside the window
    assert voxel_grid(*_events(), H, W, t_start=200, t_end=300).abs().sum() == 0


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (dict(x=np.array([0, 1])), r"equal lengths, got x=2, y=5"),
        (dict(x=np.array([0.0, 3, 1, 1, 3])), r"x has dtype float64, integer pixel coordinates"),
        (dict(y=torch.zeros(5)), r"y has dtype float32, integer pixel coordinates"),
        (dict(t=np.array([0.0, 25, 50, 75, 100])), r"t has dtype float64, integer microseconds"),
        (dict(p=np.array([1, 0, 2, 0, 1])), r"p must hold polarities in \{0, 1\} or \{-1, 1\}"),
        (dict(p=np.array([1, 0, -1, 0, 1])), r"p must hold polarities"),
        (dict(t=np.array([0, 25, 20, 75, 100])), r"t is not sorted \(first decrease at index 2\)"),
        (dict(x=np.array([0, 4, 1, 1, 3])), r"x = 4 is outside the sensor \(width 4"),
        (dict(y=np.array([0, 2, -1, 1, 2])), r"y = -1 is outside the sensor \(height 3"),
        (dict(x=np.zeros((5, 1), dtype=np.int64)), r"x must be a 1-D array"),
    ],
)
def test_bad_events_one_line_errors(change, match) -> None:
    arrays = dict(zip("xytp", _events(), strict=True)) | change
    for fn in (check_events, event_count, voxel_grid, time_surface):
        with pytest.raises(EventError, match=match) as info:
            fn(arrays["x"], arrays["y"], arrays["t"], arrays["p"], H, W)
        assert "\n" not in str(info.value)


def test_bad_window_bins_and_sensor() -> None:
    with pytest.raises(EventError, match=r"t_end \(10\) is before t_start \(20\)"):
        voxel_grid(*_events(), H, W, t_start=20, t_end=10)
    with pytest.raises(EventError, match="bins must be an integer >= 1"):
        voxel_grid(*_events(), H, W, bins=0)
    with pytest.raises(EventError, match="sensor size must be positive"):
        event_count(*_events(), 0, W)
    with pytest.raises(EventError, match="tau_us must be a positive"):
        time_surface(*_events(), H, W, tau_us=0)


def test_representation_dispatch_channels_and_pickle() -> None:
    events = _events()
    assert REPRESENTATIONS == ("voxel", "count", "time_surface")
    voxel = EventRepresentation()
    assert voxel.channels == 5
    torch.testing.assert_close(voxel(*events, H, W), voxel_grid(*events, H, W, bins=5))
    count = EventRepresentation("count")
    assert count.channels == 2
    torch.testing.assert_close(count(*events, H, W, t_start=50), event_count(*events, H, W, t_start=50))
    surface = EventRepresentation("time_surface", tau_us=10.0)
    assert surface.channels == 2
    torch.testing.assert_close(surface(*events, H, W), time_surface(*events, H, W, tau_us=10.0))
    assert EventRepresentation("voxel", bins=3)(*events, H, W).shape == (3, H, W)
    clone = pickle.loads(pickle.dumps(EventRepresentation("voxel", bins=7)))
    assert clone == EventRepresentation("voxel", bins=7) and clone.channels == 7


def test_representation_validation() -> None:
    with pytest.raises(
        EventError, match=r"unknown representation 'voxl'; did you mean 'voxel'\? choose one of"
    ):
        EventRepresentation("voxl")
    with pytest.raises(EventError, match="choose one of voxel, count, time_surface"):
        EventRepresentation("histogram")
    with pytest.raises(EventError, match="bins must be an integer >= 1"):
        EventRepresentation("voxel", bins=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_follows_inputs() -> None:
    events = tuple(a.cuda() for a in _events("torch"))
    for fn in (event_count, voxel_grid, time_surface):
        out = fn(*events, H, W)
        assert out.is_cuda
        torch.testing.assert_close(out.cpu(), fn(*_events(), H, W))
