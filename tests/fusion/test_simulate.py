"""The ESIM-style simulator against hand-computed events, and the synthetic scene against its own boxes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from senet.fusion.simulate import (
    TRACKS_DTYPE,
    SimulationError,
    cifar_objects,
    log_intensity,
    simulate_events,
    simulate_sequence,
)

DSEC_TRACKS = np.dtype(
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

# a 1x2 sensor: pixel 0 ramps 0 -> 1 -> 0.5 -> 0.5, pixel 1 ramps 0 -> -0.6 -> -0.6 -> -0.8
RAMP = torch.tensor([[[0.0, 0.0]], [[1.0, -0.6]], [[0.5, -0.6]], [[0.5, -0.8]]])
RAMP_TIMES = np.array([0, 1000, 2000, 3000], dtype=np.int64)


def test_esim_ramp_hand_computed() -> None:
    x, y, t, p = simulate_events(RAMP, RAMP_TIMES, threshold=0.25, threshold_sigma=0.0)
    # pixel 0, 0 -> 1 in 1000 us: ON crossings at 0.25, 0.5, 0.75, 1.0 -> t = 250, 500, 750, 1000;
    #          1 -> 0.5: OFF crossings at 0.75, 0.5 -> t = 1500, 2000
    # pixel 1, 0 -> -0.6: OFF crossings at -0.25, -0.5 -> t = 1000 * 0.25 / 0.6 = 416.7, 833.3;
    #          reference stays at -0.5, so -0.6 -> -0.8 crosses -0.75 at t = 2000 + 1000 * 0.15 / 0.2 = 2750
    np.testing.assert_array_equal(t, [250, 417, 500, 750, 833, 1000, 1500, 2000, 2750])
    np.testing.assert_array_equal(x, [0, 1, 0, 0, 1, 0, 0, 0, 1])
    np.testing.assert_array_equal(p, [1, 0, 1, 1, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(y, np.zeros(9))
    assert (x.dtype, y.dtype, t.dtype, p.dtype) == (np.uint16, np.uint16, np.int64, np.int8)


def test_esim_refractory_period() -> None:
    # 300 us refractory: pixel 0 drops 500 (250 us after 250) and 1000 (250 us after 750)
    x, _, t, p = simulate_events(RAMP, RAMP_TIMES, threshold=0.25, threshold_sigma=0.0, refractory_us=300)
    np.testing.assert_array_equal(t, [250, 417, 750, 833, 1500, 2000, 2750])
    np.testing.assert_array_equal(x, [0, 1, 0, 1, 0, 0, 1])
    np.testing.assert_array_equal(p, [1, 0, 1, 0, 0, 0, 0])
    # exactly the refractory period after the previous event is allowed
    _, _, t, _ = simulate_events(RAMP, RAMP_TIMES, threshold=0.25, threshold_sigma=0.0, refractory_us=250)
    np.testing.assert_array_equal(t, [250, 417, 500, 750, 833, 1000, 1500, 2000, 2750])


def test_esim_thresholds_vary_per_pixel() -> None:
    # a uniform ramp of 2.0: about 2.0 / C events per pixel, C ~ N(0.2, 0.03) drawn per pixel
    frames = torch.stack([torch.zeros(20, 20), torch.full((20, 20), 2.0)])
    x, y, t, p = simulate_events(frames, [0, 10_000], threshold=0.2, threshold_sigma=0.03, seed=1)
    counts = np.bincount(y.astype(np.int64) * 20 + x, minlength=400)
    assert (p == 1).all() and 8 < counts.mean() < 12 and counts.min() < counts.max()
    # each pixel's events are evenly spaced in time (linear ramp, fixed threshold)
    sel = (x == 3) & (y == 4)
    gaps = np.diff(np.concatenate([[0], t[sel]]))
    assert gaps.max() - gaps.min() <= 1


def test_no_events_on_static_scene() -> None:
    frames = torch.rand(1, 6, 5).log().expand(7, 6, 5).contiguous()
    x, y, t, p = simulate_events(frames, np.arange(7) * 1000)
    assert len(x) == len(y) == len(t) == len(p) == 0


def test_events_sorted_and_deterministic() -> None:
    g = torch.Generator().manual_seed(0)
    frames = torch.randn(6, 8, 9, generator=g)
    times = np.array([0, 100, 250, 400, 700, 1000])
    x, y, t, p = simulate_events(frames, times, seed=3)
    assert len(t) > 50 and (np.diff(t) >= 0).all() and t.min() > 0 and t.max() <= 1000
    assert set(np.unique(p)) <= {0, 1} and x.max() < 9 and y.max() < 8
    again = simulate_events(frames, times, seed=3)
    for a, b in zip((x, y, t, p), again, strict=True):
        np.testing.assert_array_equal(a, b)
    other = simulate_events(frames, times, seed=4)
    assert len(other[2]) != len(t) or not np.array_equal(other[2], t)


def test_moving_square_events_only_at_its_edges() -> None:
    # a bright 2x3 square (log 1 on log 0) steps one pixel right per frame: columns 2-4 -> 5-7
    frames = torch.zeros(4, 6, 10)
    for i in range(4):
        frames[i, 2:4, 2 + i : 5 + i] = 1.0
    x, y, t, p = simulate_events(frames, [0, 1000, 2000, 3000], threshold=0.25, threshold_sigma=0.0)
    on = {(int(a), int(b)) for a, b in zip(x[p == 1], y[p == 1], strict=True)}
    off = {(int(a), int(b)) for a, b in zip(x[p == 0], y[p == 0], strict=True)}
    assert on == {(c, r) for c in (5, 6, 7) for r in (2, 3)}  # the leading edge, one column per step
    assert off == {(c, r) for c in (2, 3, 4) for r in (2, 3)}  # the trailing edge
    assert len(t) == 4 * 6 * 2  # each edge pixel: a log step of 1 = 4 crossings of 0.25


def test_log_intensity_bt601() -> None:
    rgb = np.array([[[[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 0, 255]]]], dtype=np.uint8)
    out = log_intensity(rgb, eps=1e-3)
    expected = [math.log(1.001), math.log(1e-3), math.log(1e-3 + 0.299), math.log(1e-3 + 0.114)]
    assert out.shape == (1, 1, 4) and out.dtype == torch.float32
    np.testing.assert_allclose(out[0, 0].numpy(), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(log_intensity(torch.from_numpy(rgb).float() / 255), out)


def test_bad_simulator_inputs() -> None:
    with pytest.raises(SimulationError, match=r"must increase strictly \(not at index 2\)"):
        simulate_events(RAMP, [0, 1000, 1000, 3000])
    with pytest.raises(SimulationError, match="one time per frame"):
        simulate_events(RAMP, [0, 1000])
    with pytest.raises(SimulationError, match="float log intensities"):
        simulate_events(torch.zeros(3, 2, 2, dtype=torch.uint8), [0, 1, 2])
    with pytest.raises(SimulationError, match=r"log_frames must be \[N, H, W\]"):
        simulate_events(torch.zeros(3, 2, 2, 3), [0, 1, 2])
    with pytest.raises(SimulationError, match=r"expected RGB images \[\.\.\., H, W, 3\]"):
        log_intensity(np.zeros((2, 4, 4), dtype=np.uint8))


def _solid(size: int, value: int, class_id: int) -> tuple[np.ndarray, int]:
    return np.full((size, size, 3), value, dtype=np.uint8), class_id


def _cells_in_box(box: np.void, height: int, width: int) -> np.ndarray:
    """Pixels whose unit square [c, c+1) x [r, r+1) meets the interior of the box."""
    cols, rows = np.arange(width), np.arange(height)
    in_x = (cols + 1 > box["x"]) & (cols < box["x"] + box["w"])
    in_y = (rows + 1 > box["y"]) & (rows < box["y"] + box["h"])
    return in_y[:, None] & in_x[None, :]


def test_tracks_are_the_rendered_extent() -> None:
    rng = np.random.default_rng(0)
    sprite = rng.integers(60, 256, (12, 9, 3), dtype=np.uint8)  # never equal to the black background
    bg = np.zeros((30, 40, 3), dtype=np.uint8)
    seq = simulate_sequence([(sprite, 2)], height=30, width=40, frames=4, substeps=2, background=bg, seed=5)
    assert seq.tracks.dtype == DSEC_TRACKS and TRACKS_DTYPE == DSEC_TRACKS
    assert (
        len(seq.tracks) == 4 and (seq.tracks["class_id"] == 2).all() and (seq.tracks["track_id"] == 0).all()
    )
    np.testing.assert_array_equal(seq.tracks["t"], seq.image_timestamps_us)
    np.testing.assert_array_equal(seq.image_timestamps_us, [50_000, 100_000, 150_000, 200_000])
    assert (seq.tracks["w"] == 9).all() and (seq.tracks["h"] == 12).all()
    assert seq.class_names == ("0", "1", "2")
    fractional = 0
    for box, image in zip(seq.tracks, seq.images, strict=True):
        inside = _cells_in_box(box, 30, 40)
        render = seq.scene.render(int(box["t"]))
        np.testing.assert_array_equal((render != 0).any(-1), inside)  # the clean render, exactly
        drawn = (image != 0).any(-1)  # the uint8 frame: nothing outside, the fully covered pixels inside
        assert not drawn[~inside].any()
        x0, y0 = math.ceil(box["x"]), math.ceil(box["y"])
        x1, y1 = math.floor(box["x"] + box["w"]), math.floor(box["y"] + box["h"])
        assert drawn[y0:y1, x0:x1].all()
        fractional += box["x"] % 1 != 0
    assert fractional > 0  # sub-pixel positions were exercised


def test_subpixel_render_preserves_area() -> None:
    # a solid 200 square on black: the painted mass is 200 * area at any sub-pixel position
    bg = np.zeros((20, 24, 3), dtype=np.uint8)
    seq = simulate_sequence([_solid(5, 200, 0)], height=20, width=24, frames=3, background=bg, seed=2)
    for ti in (1234, 50_000, 77_777):
        render = seq.scene.render(ti)[..., 0]
        assert render.sum() == pytest.approx(200 * 25)
        assert render.max() <= 200 + 1e-9
        # the painted mass is centred on the box (pixel c has its centre at c + 0.5)
        (x, y) = seq.scene.positions(ti)[0]
        rows, cols = np.indices(render.shape) + 0.5
        assert (render * cols).sum() / render.sum() == pytest.approx(x + 2.5)
        assert (render * rows).sum() / render.sum() == pytest.approx(y + 2.5)


def test_moving_square_sequence_events_near_edges() -> None:
    # a 16 px white square at exactly 40 px/s (2 px per 50 ms frame) on a flat grey background
    seq = simulate_sequence(
        [_solid(16, 255, 0)], height=48, width=64, frames=6, substeps=8, background="flat", speed=(40, 40)
    )
    assert len(seq.t) > 100
    dt = 50_000
    label = np.ceil(seq.t / dt).astype(np.int64) - 1  # the labelled frame ending each event's interval
    boxes = seq.tracks[label]
    ex, ey = seq.x.astype(np.float64) + 0.5, seq.y.astype(np.float64) + 0.5  # pixel centres
    margin = 2 + 1  # motion within one interval plus the pixel
    near = (ex > boxes["x"] - margin) & (ex < boxes["x"] + boxes["w"] + margin)
    near &= (ey > boxes["y"] - margin) & (ey < boxes["y"] + boxes["h"] + margin)
    assert near.all()  # no events away from the square
    interior = (ex > boxes["x"] + margin) & (ex < boxes["x"] + boxes["w"] - margin)
    interior &= (ey > boxes["y"] + margin) & (ey < boxes["y"] + boxes["h"] - margin)
    assert not interior.any()  # none inside its uniform interior
    assert (seq.p == 1).any() and (seq.p == 0).any()
    x, y, t, p = seq.events_between(50_000, 100_000)
    window = (seq.t >= 50_000) & (seq.t < 100_000)
    assert 0 < len(t) < len(seq.t) and np.array_equal(t, seq.t[window]) and np.array_equal(x, seq.x[window])


def test_sequence_deterministic_and_degrade_only_changes_rgb() -> None:
    rng = np.random.default_rng(1)
    objects = [(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8), k) for k in range(2)]
    kwargs = dict(height=32, width=40, frames=6, substeps=4, seed=7)
    clean = simulate_sequence(objects, **kwargs)
    again = simulate_sequence(objects, **kwargs)
    for name in ("images", "image_timestamps_us", "x", "y", "t", "p", "tracks"):
        np.testing.assert_array_equal(getattr(clean, name), getattr(again, name))
    assert clean.degraded == ("",) * 6
    other = simulate_sequence(objects, **(kwargs | dict(seed=8)))
    assert not np.array_equal(other.tracks, clean.tracks)

    bad = simulate_sequence(objects, degrade=0.5, **kwargs)
    for name in ("x", "y", "t", "p", "tracks"):  # events see the clean, high-dynamic-range scene
        np.testing.assert_array_equal(getattr(bad, name), getattr(clean, name))
    hit = [i for i, mode in enumerate(bad.degraded) if mode]
    assert len(hit) == 3 and set(bad.degraded) <= {"", "dark", "blur"}
    for i in range(6):
        same = np.array_equal(bad.images[i], clean.images[i])
        assert same == (i not in hit)
    dark = simulate_sequence(objects, degrade=1.0, degrade_modes=("dark",), **kwargs)
    assert dark.images.mean() < 0.25 * clean.images.mean()
    blur = simulate_sequence(objects, degrade=1.0, degrade_modes=("blur",), **kwargs)
    diff = np.abs(blur.images.astype(int) - clean.images.astype(int))
    assert diff.max() > 10 and diff.mean() < 10  # blurred where objects move, not a different scene


def test_bad_sequence_inputs() -> None:
    with pytest.raises(SimulationError, match="no objects given"):
        simulate_sequence([])
    with pytest.raises(SimulationError, match="must be an RGB uint8 image"):
        simulate_sequence([(np.zeros((8, 8), dtype=np.uint8), 0)])
    with pytest.raises(SimulationError, match="larger than the 16x16 image"):
        simulate_sequence([_solid(20, 9, 0)], height=16, width=16)
    with pytest.raises(SimulationError, match="class id 3 has no name"):
        simulate_sequence([_solid(4, 9, 3)], height=16, width=16, class_names=("a", "b"))
    with pytest.raises(SimulationError, match="unknown degrade_modes"):
        simulate_sequence([_solid(4, 9, 0)], height=16, width=16, degrade=0.5, degrade_modes=("fog",))
    with pytest.raises(SimulationError, match="unknown background 'plain'"):
        simulate_sequence([_solid(4, 9, 0)], height=16, width=16, background="plain")


def test_cifar_objects(cifar10_jpeg) -> None:
    classes = {"automobile": 2, "truck": 1}
    objects = cifar_objects(cifar10_jpeg, classes, per_class=3, seed=0)
    assert [cid for _, cid in objects] == [2, 2, 2, 1, 1, 1]
    for img, _ in objects:
        assert img.shape == (32, 32, 3) and img.dtype == np.uint8 and img.std() > 5
    again = cifar_objects(cifar10_jpeg, classes, per_class=3, seed=0)
    assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(objects, again, strict=True))
    other = cifar_objects(cifar10_jpeg, classes, per_class=3, seed=1)
    assert not all(np.array_equal(a, b) for (a, _), (b, _) in zip(objects, other, strict=True))
    seq = simulate_sequence(
        objects[:2], height=48, width=64, frames=2, substeps=2, class_names=("a", "b", "c")
    )
    assert len(seq.tracks) == 4 and len(seq.t) > 0
    with pytest.raises(SimulationError, match=r"no class folder 'automobil'.*did you mean 'automobile'\?"):
        cifar_objects(cifar10_jpeg, {"automobil": 0}, per_class=1, seed=0)


def test_cifar_objects_missing_folder(tmp_path) -> None:
    with pytest.raises(
        SimulationError, match=r"cifar_objects: no folder .*train; pass the CIFAR-10 ImageFolder"
    ):
        cifar_objects(tmp_path / "nowhere", {"cat": 0}, per_class=1, seed=0)


def test_simulated_sequence_reads_back_through_the_dsec_reader(tmp_path) -> None:
    """A simulated sequence written in the DSEC-Det layout comes back through DSECDetDataset with its
    frames, its boxes (xywh -> xyxy) and exactly the events of the 50 ms before each frame."""
    from senet.fusion.dsec import DSEC_CLASSES, DSECDetDataset
    from senet.fusion.events import EventRepresentation

    rng = np.random.default_rng(0)
    objects = [
        (rng.integers(0, 255, (12, 12, 3), dtype=np.uint8), 2),
        (rng.integers(0, 255, (10, 14, 3), dtype=np.uint8), 4),
    ]
    seq = simulate_sequence(objects, height=40, width=48, frames=4, seed=5, class_names=DSEC_CLASSES)
    seq.write_dsec_det(tmp_path, "train", "sim_000")
    count = EventRepresentation("count")
    ds = DSECDetDataset(tmp_path, "train", representation=count, window_us=50_000)
    assert len(ds) == 4
    for i, t_img in enumerate(seq.image_timestamps_us):
        inputs, target = ds[i]
        assert torch.equal(
            (inputs["rgb"] * 255).round().to(torch.uint8), torch.from_numpy(seq.images[i]).permute(2, 0, 1)
        )
        rows = seq.tracks[seq.tracks["t"] == t_img]
        want = np.stack([rows["x"], rows["y"], rows["x"] + rows["w"], rows["y"] + rows["h"]], 1)
        order = np.lexsort(want.T[::-1])
        got = target["boxes"].numpy()
        assert np.allclose(got[np.lexsort(got.T[::-1])], want[order], atol=1e-4)
        assert sorted(target["labels"].tolist()) == sorted(rows["class_id"].tolist())
        x, y, t, p = seq.events_between(int(t_img) - 50_000, int(t_img))
        assert x.size > 0
        assert torch.equal(inputs["events"], count(x, y, t, p, 40, 48))
