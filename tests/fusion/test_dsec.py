"""DSEC-Det reader on tiny sequences written in the released layout (h5 + Blosc, png, txt, npy)."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (the Blosc filter of the written files)
import numpy as np
import pytest
import torch

from senet.fusion.dsec import (
    DatasetLayoutError,
    DSECDetDataset,
    ms_to_idx,
    write_dsec_det_sequence,
)
from senet.fusion.events import EventRepresentation

H, W = 24, 32
T_OFFSET = 5_000_000
WINDOW = 50_000
# absolute image times 60.5 ms, 110.25 ms and 160 ms after t_offset (off and on millisecond edges)
STAMPS = T_OFFSET + np.array([60_500, 110_250, 160_000], dtype=np.int64)


def _events(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = 300
    t_rel = np.sort(rng.integers(0, 170_000, n))
    # events on the window edges (t_img - 50 ms is in, t_img is out) and on millisecond edges
    edges = [10_000, 10_499, 10_500, 10_500, 60_000, 60_249, 60_250, 60_499, 60_500, 60_500]
    edges += [110_000, 110_250]
    t_rel = np.sort(np.concatenate([t_rel, edges]))
    m = t_rel.size
    return {
        "x": rng.integers(0, W, m),
        "y": rng.integers(0, H, m),
        "t": (t_rel + T_OFFSET).astype(np.int64),
        "p": rng.integers(0, 2, m),
    }


def _tracks() -> np.ndarray:
    dtype = [("t", "<u8"), ("x", "<f8"), ("y", "<f8"), ("w", "<f8"), ("h", "<f8"), ("class_id", "u1")]
    rows = [
        (STAMPS[0], 2.0, 3.0, 10.0, 5.0, 2),  # car -> [2, 3, 12, 8]
        (STAMPS[0], 20.5, 1.0, 4.0, 6.5, 0),  # pedestrian -> [20.5, 1, 24.5, 7.5]
        (STAMPS[1], 25.0, 18.0, 12.0, 10.0, 3),  # bus, clipped to [25, 18, 32, 24]
        (STAMPS[1], 5.0, 5.0, 0.5, 4.0, 2),  # narrower than min_box_side: dropped
        (STAMPS[0] + 7, 1.0, 1.0, 5.0, 5.0, 2),  # at no image time: dropped
    ]
    return np.array(rows, dtype=dtype)


def _images(n: int = 3, h: int = H, w: int = W, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


@pytest.fixture
def seq(tmp_path: Path) -> dict:
    ev, images = _events(), _images()
    folder = write_dsec_det_sequence(
        tmp_path,
        "train",
        "seq_a",
        images=images,
        image_timestamps_us=STAMPS,
        **ev,
        tracks=_tracks(),
        t_offset=T_OFFSET,
    )
    return {"root": tmp_path, "folder": folder, "events": ev, "images": images}


def _rewrite(path: Path, key: str, values: np.ndarray) -> None:
    with h5py.File(path, "a") as f:
        del f[key]
        f.create_dataset(key, data=values)


def test_written_file_is_the_dsec_format(seq: dict) -> None:
    folder = seq["folder"]
    assert sorted(p.name for p in (folder / "images/left/distorted").iterdir()) == [
        "000000.png",
        "000001.png",
        "000002.png",
    ]
    assert np.loadtxt(folder / "images/timestamps.txt", dtype=np.int64).tolist() == STAMPS.tolist()
    with h5py.File(folder / "events/left/events.h5", "r") as f:
        dtypes = {k: f[k].dtype.str for k in ("events/x", "events/y", "events/p", "events/t", "ms_to_idx")}
        assert dtypes == {
            "events/x": "<u2",
            "events/y": "<u2",
            "events/p": "|u1",
            "events/t": "<u4",
            "ms_to_idx": "<u8",
        }
        assert "32001" in f["events/t"]._filters  # Blosc, as the released files
        assert int(f["t_offset"][()]) == T_OFFSET
        t = f["events/t"][()].astype(np.int64)
        table = f["ms_to_idx"][()].astype(np.int64)
    assert t.tolist() == (seq["events"]["t"] - T_OFFSET).tolist()
    assert table.size == t[-1] // 1000 + 1
    for ms, idx in enumerate(table):  # DSEC eventslicer.py: t[idx] >= 1000 ms > t[idx - 1]
        assert idx == t.size or t[idx] >= 1000 * ms
        assert idx == 0 or t[idx - 1] < 1000 * ms
    tracks = np.load(folder / "object_detections/left/tracks.npy")
    assert set(tracks.dtype.names) >= {"t", "x", "y", "w", "h", "class_id", "class_confidence", "track_id"}


def test_ms_to_idx_of_the_dsec_example() -> None:
    # the worked example in uzh-rpg/DSEC scripts/utils/eventslicer.py
    t = np.array([0, 500, 2100, 5000, 5000, 7100, 7200, 7200, 8100, 9000])
    assert ms_to_idx(t).tolist() == [0, 2, 2, 3, 3, 3, 5, 5, 8, 9]


def test_items_boxes_labels_and_pixels(seq: dict) -> None:
    ds = DSECDetDataset(seq["root"], "train")
    assert len(ds) == 2  # image 2 has no tracks
    assert (ds.height, ds.width, ds.num_classes, ds.event_channels) == (H, W, 8, 5)
    assert ds.class_names[2] == "car"
    inputs, target = ds[0]
    assert set(inputs) == {"rgb", "events"}
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    assert target["boxes"].tolist() == [[2.0, 3.0, 12.0, 8.0], [20.5, 1.0, 24.5, 7.5]]
    assert target["labels"].tolist() == [2, 0]
    assert target["image_id"].dtype == torch.int64 and int(target["image_id"]) == 0
    expected = torch.from_numpy(seq["images"][0]).permute(2, 0, 1).double() / 255
    assert inputs["rgb"].dtype == torch.float32 and inputs["rgb"].shape == (3, H, W)
    torch.testing.assert_close(inputs["rgb"].double(), expected, rtol=0, atol=1e-7)
    _, target1 = ds[1]
    assert target1["boxes"].tolist() == [[25.0, 18.0, 32.0, 24.0]]
    assert target1["labels"].tolist() == [3]
    torch.testing.assert_close(
        ds[1][0]["rgb"].double(),
        torch.from_numpy(seq["images"][1]).permute(2, 0, 1) / 255.0,
        rtol=0,
        atol=1e-7,
        check_dtype=False,
    )


def _in_window(ev: dict, stamp: int) -> np.ndarray:
    return (ev["t"] >= stamp - WINDOW) & (ev["t"] < stamp)


@pytest.mark.parametrize("item", [0, 1])
def test_event_slice_is_exactly_the_window(seq: dict, item: int) -> None:
    ev = seq["events"]
    ds = DSECDetDataset(seq["root"], "train", representation=EventRepresentation("count"), window_us=WINDOW)
    m = _in_window(ev, STAMPS[item])
    sliced = ds.events_in_window(item)
    stamp = int(STAMPS[item])
    assert (ev["t"] == stamp).any() and (ev["t"] == stamp - WINDOW).any()  # edge events exist
    assert sliced["t"].min() == stamp - WINDOW and sliced["t"].max() < stamp  # [start in, end out)
    assert sliced["t"].tolist() == ev["t"][m].tolist()
    assert sliced["x"].tolist() == ev["x"][m].tolist() and sliced["p"].tolist() == ev["p"][m].tolist()
    # per-pixel ON / OFF counts computed here, independently of the representation code
    counts = np.zeros((2, H, W), dtype=np.float32)
    np.add.at(counts, (1 - ev["p"][m], ev["y"][m], ev["x"][m]), 1.0)
    assert counts.sum() == m.sum() > 0
    torch.testing.assert_close(ds[item][0]["events"], torch.from_numpy(counts), rtol=0, atol=0)


def test_voxel_events_match_the_representation_of_the_window(seq: dict) -> None:
    ev = seq["events"]
    rep = EventRepresentation("voxel", 5)
    ds = DSECDetDataset(seq["root"], "train", representation=rep, window_us=WINDOW, modalities=("events",))
    m = _in_window(ev, STAMPS[0])
    stamp = int(STAMPS[0])
    expected = rep(ev["x"][m], ev["y"][m], ev["t"][m], ev["p"][m], H, W, stamp - WINDOW, stamp)
    inputs, _ = ds[0]
    assert set(inputs) == {"events"} and inputs["events"].shape == (5, H, W)
    torch.testing.assert_close(inputs["events"], expected, rtol=0, atol=1e-6)


def test_class_map_names_and_size_filter(seq: dict) -> None:
    ds = DSECDetDataset(seq["root"], "train", classes={2: 0, 3: 1}, modalities=("rgb",))
    assert ds.class_names == ("car", "bus") and ds.num_classes == 2
    assert [t["labels"].tolist() for _, t in (ds[0], ds[1])] == [[0], [1]]
    assert set(ds[0][0]) == {"rgb"}
    merged = DSECDetDataset(seq["root"], "train", classes={0: 0, 2: 1, 3: 1}, modalities=("rgb",))
    assert merged.class_names == ("pedestrian", "car+bus")
    assert merged[0][1]["labels"].tolist() == [1, 0]
    big = DSECDetDataset(seq["root"], "train", min_box_side=5.0, modalities=("rgb",))
    assert big[0][1]["labels"].tolist() == [2]  # the 4-pixel-wide pedestrian is dropped, the 5-high car kept
    big = DSECDetDataset(seq["root"], "train", min_box_side=6.0, modalities=("rgb",))
    assert len(big) == 1 and big[0][1]["labels"].tolist() == [3]
    # the bus is 10 high but 6 after clipping to the image: the filter sees the clipped box
    assert len(DSECDetDataset(seq["root"], "train", min_box_side=6.5, modalities=("rgb",))) == 0
    only_pedestrians = DSECDetDataset(seq["root"], "train", classes={0: 0}, modalities=("rgb",))
    assert len(only_pedestrians) == 1  # item 1 has no pedestrian


def test_coco_ground_truth(seq: dict) -> None:
    from senet.fusion.evaluate import coco_evaluate, detections_to_coco

    ds = DSECDetDataset(seq["root"], "train", classes={0: 0, 2: 1, 3: 2}, modalities=("rgb",))
    gt = ds.coco_ground_truth()
    assert [im["id"] for im in gt["images"]] == [0, 1]
    assert gt["images"][0]["width"] == W and gt["images"][0]["height"] == H
    assert gt["categories"] == [
        {"id": 0, "name": "pedestrian"},
        {"id": 1, "name": "car"},
        {"id": 2, "name": "bus"},
    ]
    anns = [(a["image_id"], a["category_id"], a["bbox"], a["area"], a["iscrowd"]) for a in gt["annotations"]]
    assert anns == [
        (0, 1, [2.0, 3.0, 10.0, 5.0], 50.0, 0),
        (0, 0, [20.5, 1.0, 4.0, 6.5], 26.0, 0),
        (1, 2, [25.0, 18.0, 7.0, 6.0], 42.0, 0),
    ]
    assert len({a["id"] for a in gt["annotations"]}) == 3
    targets = [ds[i][1] for i in range(len(ds))]
    preds = [
        {"boxes": t["boxes"], "labels": t["labels"], "scores": torch.ones(len(t["labels"]))} for t in targets
    ]
    assert coco_evaluate(gt, detections_to_coco([0, 1], preds))["mAP"] == pytest.approx(1.0)


def test_pickles_with_an_open_file(seq: dict) -> None:
    ds = DSECDetDataset(seq["root"], "train", modalities=("events",))
    first = ds[0][0]["events"]
    clone = pickle.loads(pickle.dumps(ds))
    torch.testing.assert_close(clone[0][0]["events"], first)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=1)
    torch.testing.assert_close(next(iter(loader))[0]["events"], first)


def test_official_val_sequences_live_in_train(tmp_path: Path) -> None:
    common = dict(
        images=_images(), image_timestamps_us=STAMPS, **_events(), tracks=_tracks(), t_offset=T_OFFSET
    )
    write_dsec_det_sequence(tmp_path, "train", "zurich_city_16_a", **common)
    write_dsec_det_sequence(tmp_path, "train", "seq_a", **common)
    assert [s.name for s in DSECDetDataset(tmp_path, "val").sequences] == ["zurich_city_16_a"]
    assert [s.name for s in DSECDetDataset(tmp_path, "train").sequences] == ["seq_a"]
    both = DSECDetDataset(tmp_path, "train", sequences=["seq_a", "zurich_city_16_a"])
    assert len(both) == 4 and [int(both[i][1]["image_id"]) for i in range(4)] == [0, 1, 2, 3]


def test_rectified_frames_are_resized_to_the_sensor(tmp_path: Path) -> None:
    big = np.zeros((3, 2 * H, 2 * W, 3), dtype=np.uint8)
    big[:, :, :W] = (10, 20, 30)  # left half of the large frame
    big[:, :, W:] = (200, 150, 100)  # right half
    write_dsec_det_sequence(
        tmp_path,
        "test",
        "s",
        images=big,
        image_timestamps_us=STAMPS,
        **_events(),
        tracks=_tracks(),
        t_offset=T_OFFSET,
        image_view="rectified",
    )
    ds = DSECDetDataset(tmp_path, "test", image_view="rectified", sensor_size=(H, W))
    rgb = ds[0][0]["rgb"]
    assert rgb.shape == (3, H, W) and (ds.height, ds.width) == (H, W)
    left = torch.tensor([10.0, 20.0, 30.0]) / 255
    right = torch.tensor([200.0, 150.0, 100.0]) / 255
    torch.testing.assert_close(rgb[:, :, : W // 2 - 2], left[:, None, None].expand(3, H, W // 2 - 2))
    torch.testing.assert_close(rgb[:, :, W // 2 + 2 :], right[:, None, None].expand(3, H, W // 2 - 2))


# -- errors -------------------------------------------------------------------------------------------------


def test_missing_root_split_and_sequence(tmp_path: Path, seq: dict) -> None:
    with pytest.raises(DatasetLayoutError, match=r"does not exist.*dsec\.ifi\.uzh\.ch/dsec-detection"):
        DSECDetDataset(tmp_path / "nowhere")
    with pytest.raises(DatasetLayoutError, match=r"no split folder .*test.*dsec-detection"):
        DSECDetDataset(seq["root"], "test")
    with pytest.raises(DatasetLayoutError, match=r"no sequence folder .*nope"):
        DSECDetDataset(seq["root"], "train", sequences=["nope"])
    with pytest.raises(DatasetLayoutError, match=r"no sequence folder of split 'val'"):
        DSECDetDataset(seq["root"], "val")
    with pytest.raises(DatasetLayoutError, match=r"split 'dev'"):
        DSECDetDataset(seq["root"], "dev")


@pytest.mark.parametrize(
    "relative", ["events/left/events.h5", "object_detections/left/tracks.npy", "images/timestamps.txt"]
)
def test_missing_files(seq: dict, relative: str) -> None:
    (seq["folder"] / relative).unlink()
    with pytest.raises(DatasetLayoutError, match=f"missing .*{Path(relative).name}"):
        DSECDetDataset(seq["root"], "train")


def test_mismatched_frame_counts(seq: dict) -> None:
    (seq["folder"] / "images/left/distorted/000002.png").unlink()
    with pytest.raises(DatasetLayoutError, match=r"mismatched frame/event counts: 2 images .* 3 timestamps"):
        DSECDetDataset(seq["root"], "train")
    with pytest.raises(DatasetLayoutError, match="mismatched frame/event counts"):
        write_dsec_det_sequence(
            seq["root"],
            "train",
            "b",
            images=_images(2),
            image_timestamps_us=STAMPS,
            **seq["events"],
            tracks=_tracks(),
            t_offset=T_OFFSET,
        )


def test_event_arrays_of_wrong_dtype_order_or_position(seq: dict) -> None:
    path = seq["folder"] / "events/left/events.h5"
    t_rel = seq["events"]["t"] - T_OFFSET
    _rewrite(path, "events/t", t_rel.astype(np.float64))
    with pytest.raises(DatasetLayoutError, match=r"events\.h5: /events/t has dtype float64"):
        DSECDetDataset(seq["root"], "train")[0]

    unsorted = t_rel.copy().astype(np.uint32)
    j = int(np.searchsorted(t_rel, 30_000))  # inside item 0's window [10.5 ms, 60.5 ms)
    unsorted[j], unsorted[j + 1] = unsorted[j + 1] + 1, unsorted[j]
    assert unsorted[j] > unsorted[j + 1]
    _rewrite(path, "events/t", unsorted)
    with pytest.raises(DatasetLayoutError, match=r"events\.h5: events: t is not sorted"):
        DSECDetDataset(seq["root"], "train")[0]

    _rewrite(path, "events/t", t_rel.astype(np.uint32))
    x = seq["events"]["x"].astype(np.uint16)
    x[j] = W  # one column right of the sensor
    _rewrite(path, "events/x", x)
    ds = DSECDetDataset(seq["root"], "train")
    with pytest.raises(DatasetLayoutError, match=r"events: x = 32 is outside the sensor"):
        ds[0]
    assert len(ds[1][1]["labels"]) == 1  # item 1's window does not hold the bad event


def test_unknown_modality_and_bad_arguments(seq: dict) -> None:
    with pytest.raises(ValueError, match=r"unknown modality names \['depth'\]"):
        DSECDetDataset(seq["root"], "train", modalities=("rgb", "depth"))
    with pytest.raises(DatasetLayoutError, match="classes: DSEC class ids"):
        DSECDetDataset(seq["root"], "train", classes={9: 0})
    with pytest.raises(DatasetLayoutError, match="without gaps"):
        DSECDetDataset(seq["root"], "train", classes={0: 0, 2: 2})
    with pytest.raises(DatasetLayoutError, match="window_us"):
        DSECDetDataset(seq["root"], "train", window_us=0)
    with pytest.raises(IndexError):
        DSECDetDataset(seq["root"], "train")[2]
