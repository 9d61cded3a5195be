"""PKU-DDD17-Car reader (FRN's CSV + npz + png layout) on a tiny set written with write_ddd17."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from senet.fusion.ddd17 import DDD17Dataset, write_ddd17
from senet.fusion.dsec import DatasetLayoutError

H, W, C = 24, 32, 5
STEMS = ["rec1487339175_1000", "rec1487339175_10400", "rec1487339175_10500"]
BOXES = [
    np.array([[1, 2, 10, 12], [15, 3, 31, 20]]),
    np.array([[0.5, 1, 8, 23.5]]),
    np.zeros((0, 4)),
]
LABELS = [np.array([0, 0]), np.array([0]), np.zeros(0, dtype=np.int64)]


@pytest.fixture
def ddd(tmp_path: Path) -> dict:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, H, W), dtype=np.uint8)
    voxels = rng.normal(size=(3, C, H, W)).astype(np.float32)
    paths = write_ddd17(tmp_path, STEMS, images, voxels, BOXES, LABELS)
    return {"root": tmp_path, "paths": paths, "images": images, "voxels": voxels}


def test_written_files_are_in_frns_format(ddd: dict) -> None:
    paths = ddd["paths"]
    assert paths["csv_file"] == ddd["root"] / "annotations_CSV/labels_filtered_train.csv"
    assert paths["classes_csv"].read_text() == "car,0\n"
    assert paths["csv_file"].read_text().splitlines() == [
        "rec1487339175_1000.npz,1,2,10,12,car",
        "rec1487339175_1000.npz,15,3,31,20,car",
        "rec1487339175_10400.npz,0.5,1,8,23.5,car",
        "rec1487339175_10500.npz,,,,,",
    ]
    with np.load(paths["events_dir"] / "rec1487339175_1000.npz") as z:
        assert z.files == ["arr_0"] and z["arr_0"].shape == (C, H, W)
    assert (paths["images_dir"] / "rec1487339175_1000.png").is_file()


def test_items(ddd: dict) -> None:
    ds = DDD17Dataset(**ddd["paths"])
    assert len(ds) == 3
    assert (ds.class_names, ds.num_classes, ds.height, ds.width, ds.event_channels) == (("car",), 1, H, W, C)
    for i in range(3):
        inputs, target = ds[i]
        assert set(inputs) == {"rgb", "events"}
        grey = torch.from_numpy(ddd["images"][i]).double() / 255
        assert inputs["rgb"].dtype == torch.float32 and inputs["rgb"].shape == (3, H, W)
        torch.testing.assert_close(inputs["rgb"].double(), grey.expand(3, H, W), rtol=0, atol=1e-7)
        assert inputs["events"].dtype == torch.float32
        assert torch.equal(inputs["events"], torch.from_numpy(ddd["voxels"][i]))
        assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
        assert target["boxes"].shape == (len(BOXES[i]), 4)
        assert (
            target["boxes"].tolist() == BOXES[i].tolist() and target["labels"].tolist() == LABELS[i].tolist()
        )
        assert int(target["image_id"]) == i and target["image_id"].dtype == torch.int64
    only_events = DDD17Dataset(**ddd["paths"], modalities=("events",))
    assert set(only_events[0][0]) == {"events"}


def test_from_folder_and_pickle(ddd: dict) -> None:
    ds = DDD17Dataset.from_folder(ddd["root"], "train", modalities=("rgb",))
    assert len(ds) == 3 and set(ds[1][0]) == {"rgb"}
    assert ds[1][1]["boxes"].tolist() == [[0.5, 1.0, 8.0, 23.5]]
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[0][0]["rgb"], ds[0][0]["rgb"])
    with pytest.raises(DatasetLayoutError, match=r"missing CSV file .*labels_filtered_test_all\.csv"):
        DDD17Dataset.from_folder(ddd["root"], "test")
    with pytest.raises(DatasetLayoutError, match="split 'val'.*test_all"):
        DDD17Dataset.from_folder(ddd["root"], "val")
    with pytest.raises(DatasetLayoutError, match="does not exist.*pku-ddd17-car"):
        DDD17Dataset.from_folder(ddd["root"] / "nowhere", "train")


def test_coco_ground_truth(ddd: dict) -> None:
    gt = DDD17Dataset(**ddd["paths"]).coco_ground_truth()
    assert [(im["id"], im["width"], im["height"]) for im in gt["images"]] == [(0, W, H), (1, W, H), (2, W, H)]
    assert gt["categories"] == [{"id": 0, "name": "car"}]
    anns = [(a["image_id"], a["category_id"], a["bbox"], a["area"], a["iscrowd"]) for a in gt["annotations"]]
    assert anns == [
        (0, 0, [1.0, 2.0, 9.0, 10.0], 90.0, 0),
        (0, 0, [15.0, 3.0, 16.0, 17.0], 272.0, 0),
        (1, 0, [0.5, 1.0, 7.5, 22.5], 168.75, 0),
    ]


# -- errors -------------------------------------------------------------------------------------------------


def _edit_csv(path: Path, line: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[line - 1] = text
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ("rec1487339175_10400.npz,0,1,8", r"labels_filtered_train\.csv:3: expected 'file,x1,y1,x2,y2,class'"),
        ("rec1487339175_10400.npz,0,abc,8,20,car", r"labels_filtered_train\.csv:3: malformed y1 'abc'"),
        ("rec1487339175_10400.npz,8,1,8,20,car", r"labels_filtered_train\.csv:3: empty box"),
        ("rec1487339175_10400.npz,0,1,8,20,bus", r"labels_filtered_train\.csv:3: unknown class 'bus'.* car"),
    ],
)
def test_malformed_annotation_rows(ddd: dict, row: str, match: str) -> None:
    _edit_csv(ddd["paths"]["csv_file"], 3, row)
    with pytest.raises(DatasetLayoutError, match=match):
        DDD17Dataset(**ddd["paths"])


def test_malformed_class_map(ddd: dict) -> None:
    ddd["paths"]["classes_csv"].write_text("car,0\ntruck\n")
    with pytest.raises(
        DatasetLayoutError, match=r"labels_filtered_map\.csv:2: expected 'class_name,class_id'"
    ):
        DDD17Dataset(**ddd["paths"])
    ddd["paths"]["classes_csv"].write_text("car,zero\n")
    with pytest.raises(DatasetLayoutError, match=r"labels_filtered_map\.csv:1: malformed class id 'zero'"):
        DDD17Dataset(**ddd["paths"])
    ddd["paths"]["classes_csv"].write_text("car,1\n")
    with pytest.raises(DatasetLayoutError, match=r"0\.\.K-1"):
        DDD17Dataset(**ddd["paths"])


def test_missing_files(ddd: dict) -> None:
    paths = ddd["paths"]
    (paths["events_dir"] / "rec1487339175_10400.npz").unlink()
    ds = DDD17Dataset(**paths)
    with pytest.raises(
        DatasetLayoutError, match=r"missing event tensor .*_10400\.npz \(row .*train\.csv:3\)"
    ):
        ds[1]
    (paths["images_dir"] / "rec1487339175_10500.png").unlink()
    with pytest.raises(DatasetLayoutError, match=r"missing frame .*_10500\.png \(row .*train\.csv:4\)"):
        ds[2]
    with pytest.raises(DatasetLayoutError, match=r"missing CSV file .*nope\.csv"):
        DDD17Dataset(**{**paths, "csv_file": paths["csv_file"].with_name("nope.csv")})
    with pytest.raises(DatasetLayoutError, match=r"missing folder .*nowhere of the frames"):
        DDD17Dataset(**{**paths, "images_dir": ddd["root"] / "nowhere"})
    assert len(DDD17Dataset(**{**paths, "images_dir": ddd["root"] / "nowhere"}, modalities=("events",))) == 3


def test_event_tensor_of_the_wrong_shape(ddd: dict) -> None:
    paths = ddd["paths"]
    np.savez(paths["events_dir"] / "rec1487339175_10400.npz", np.zeros((4, H, W), dtype=np.float32))
    ds = DDD17Dataset(**paths)
    with pytest.raises(
        DatasetLayoutError, match=r"_10400\.npz: event tensor of shape \(4, 24, 32\), expected"
    ):
        ds[1]
    np.savez(paths["events_dir"] / "rec1487339175_10400.npz", voxel=np.zeros((C, H, W), dtype=np.float32))
    with pytest.raises(DatasetLayoutError, match=r"no 'arr_0' array \(found \['voxel'\]\)"):
        ds[1]


def test_unknown_modality(ddd: dict) -> None:
    with pytest.raises(ValueError, match=r"unknown modality names \['lidar'\]"):
        DDD17Dataset(**ddd["paths"], modalities=("lidar",))
