"""Bad data (issue 13): unreadable images, class sets that differ between the splits, stale caches,
16-bit images, empty class folders, symbolic link loops, a file given as the data folder.

Every case runs on a small copy of the real CIFAR-10 JPEGs (a few classes, five images each), in
memory and streamed, and checks the message and what the loaders then serve.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from senet.data import BadImageError, build_data, folder_dataset, load_array_split, scan_folder

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
MODES = [pytest.param(True, id="in_memory"), pytest.param(False, id="streamed")]


def _copy(src: Path, dst: Path, classes=("airplane", "bird", "cat"), n: int = 5) -> Path:
    """``dst`` with train/ and test/ holding the first ``n`` real images of each of ``classes``."""
    for split in ("train", "test"):
        for cls in classes:
            (dst / split / cls).mkdir(parents=True)
            for f in sorted((src / split / cls).iterdir())[:n]:
                shutil.copy(f, dst / split / cls / f.name)
    return dst


def _build(root: Path, in_memory: bool, **kw):
    kw = dict(in_memory=in_memory, cache_dir="", workers=0, batch_size=2, eval_batch_size=64, **kw)
    return build_data(root, mean=MEAN, std=STD, augment="none", **kw)


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _served(loader) -> tuple[torch.Tensor, torch.Tensor]:
    """All images (back in 0..255) and labels a loader serves, in its order."""
    xs, ys = zip(*loader, strict=True)
    x = torch.cat(xs) * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)
    return (x * 255).round().to(torch.uint8), torch.cat(ys)


def _files(root: Path, split: str) -> list[Path]:
    return sorted(p for p in (root / split).rglob("*") if p.is_file())


@pytest.fixture
def damaged(cifar10_jpeg, tmp_path) -> tuple[Path, dict[str, Path]]:
    """A copy with a truncated JPEG (80% of it: PIL decodes it in part without loading it whole)
    and a text file named .jpg in train/, an empty file in test/."""
    root = _copy(cifar10_jpeg, tmp_path / "data")
    truncated = sorted((root / "train" / "bird").iterdir())[2]
    data = truncated.read_bytes()
    truncated.write_bytes(data[: int(len(data) * 0.8)])
    text = root / "train" / "cat" / "notes.jpg"
    text.write_text("not an image, only named like one\n")
    empty = sorted((root / "test" / "airplane").iterdir())[1]
    empty.write_bytes(b"")
    return root, {"truncated": truncated, "text": text, "empty": empty}


def test_unreadable_images_are_skipped_and_listed_in_memory(damaged):
    root, bad = damaged
    data = _build(root, True)
    assert sorted(data.skipped) == sorted(
        [
            (str(bad["truncated"]), "truncated image"),
            (str(bad["text"]), "not an image (PIL cannot identify it)"),
            (str(bad["empty"]), "empty file (0 bytes)"),
        ]
    )
    for split, loader in (("train", data.train), ("test", data.val)):
        good = [f for f in _files(root, split) if f not in bad.values()]
        assert len(loader.data) == len(good) == 14
        # Every image keeps its own label: the bad files are left out, nothing shifts.
        labels = [data.classes.index(f.parent.name) for f in good]
        assert loader.data.labels.tolist() == labels
        expected = np.stack([_pixels(f) for f in good]).transpose(0, 3, 1, 2)
        assert np.array_equal(loader.data.images.numpy(), expected)


def test_unreadable_images_are_skipped_when_streamed(damaged, capsys):
    root, bad = damaged
    data = _build(root, False)
    # Up front: the files that are no image at all (the truncated one has a good header).
    assert sorted(data.skipped) == sorted(
        [
            (str(bad["text"]), "not an image (PIL cannot identify it)"),
            (str(bad["empty"]), "empty file (0 bytes)"),
        ]
    )
    val = data.val.loader.dataset
    assert len(val) == 14 and str(bad["empty"]) not in [p for p, _ in val.samples]
    train = data.train.loader.dataset
    assert len(train) == 15 and str(bad["text"]) not in [p for p, _ in train.samples]
    # At load time: the truncated image is replaced by the next sample (image and label) and named.
    i = [p for p, _ in train.samples].index(str(bad["truncated"]))
    x, y = train[i]
    x_next, y_next = train[i + 1]
    assert torch.equal(x, x_next) and y == y_next == data.classes.index("bird")
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"senet: warning: skipped unreadable image {bad['truncated']} (truncated image); "
        f"{train.samples[i + 1][0]} served in its place"
    ]
    images, labels = _served(data.val)
    good = [f for f in _files(root, "test") if f != bad["empty"]]
    assert labels.tolist() == [data.classes.index(f.parent.name) for f in good]
    assert np.array_equal(images.numpy(), np.stack([_pixels(f) for f in good]).transpose(0, 3, 1, 2))


def test_a_streamed_replacement_can_be_logged_to_a_file(damaged, tmp_path, capsys):
    root, bad = damaged
    ds = folder_dataset(root / "train", 0, None)
    ds.skip_log = tmp_path / "skipped.txt"
    i = [p for p, _ in ds.samples].index(str(bad["truncated"]))
    for _ in range(2):  # read twice: logged and warned once
        ds[i]
    assert (tmp_path / "skipped.txt").read_text() == f"{bad['truncated']}\ttruncated image\n"
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


@pytest.mark.parametrize("in_memory", MODES)
def test_strict_refuses_unreadable_images_in_one_line(damaged, in_memory):
    root, bad = damaged
    with pytest.raises(ValueError) as info:
        _build(root, in_memory, strict_data=True)
    msg = str(info.value)
    assert isinstance(info.value, BadImageError) and "\n" not in msg and "Traceback" not in msg
    n = 3 if in_memory else 2  # streamed: the truncated file shows only when read
    assert msg.startswith(f"{n} unreadable image files in {root}: ")
    assert msg.endswith("use strict_data: false to skip them")
    assert "train/cat/notes.jpg (not an image (PIL cannot identify it))" in msg
    assert f"test/airplane/{bad['empty'].name} (empty file (0 bytes))" in msg


def test_strict_refuses_a_truncated_image_read_by_a_worker(damaged):
    root, bad = damaged
    bad["text"].unlink()
    bad["empty"].unlink()
    # 3 batches of 5: every sample is read (drop_last would leave out a rest).
    kw = dict(in_memory=False, cache_dir="", workers=2, batch_size=5, augment="none")
    data = build_data(root, strict_data=True, **kw)
    with pytest.raises(BadImageError) as info:
        for _ in data.train:
            pass
    assert str(info.value) == (
        f"unreadable image {bad['truncated']} (truncated image): fix or remove it, "
        "or use strict_data: false to skip such files"
    )


def test_strict_messages_name_the_first_files_and_the_count(cifar10_jpeg, tmp_path):
    root = _copy(cifar10_jpeg, tmp_path / "data")
    for f in sorted((root / "train" / "bird").iterdir()):
        f.write_bytes(b"")
    with pytest.raises(BadImageError) as info:
        _build(root, True, strict_data=True)
    first = sorted(p.name for p in (root / "train" / "bird").iterdir())[:3]
    listed = ", ".join(f"train/bird/{name} (empty file (0 bytes))" for name in first)
    assert str(info.value).startswith(f"5 unreadable image files in {root}: {listed} and 2 more: ")


@pytest.mark.parametrize("in_memory", MODES)
def test_eval_split_with_some_of_the_classes_is_mapped_by_name(cifar10_jpeg, tmp_path, in_memory):
    root = _copy(cifar10_jpeg, tmp_path / "data")
    shutil.rmtree(root / "test" / "bird")  # test/: airplane, cat; train/: airplane, bird, cat
    data = _build(root, in_memory)
    assert data.classes == ["airplane", "bird", "cat"]
    assert data.notices == [
        "test/ has 2 of the 3 classes of train/ (missing: bird): evaluated on those, labels mapped by name"
    ]
    _, labels = _served(data.val)
    assert labels.tolist() == [0] * 5 + [2] * 5  # cat is class 2 of the model, not 1
    train = data.train.data if in_memory else data.train.loader.dataset
    assert sorted(set(train.labels.tolist() if in_memory else train.targets)) == [0, 1, 2]


@pytest.mark.parametrize("in_memory", MODES)
@pytest.mark.parametrize("change", ["renamed", "extra_in_test", "extra_in_train_and_renamed"])
def test_class_folders_that_differ_are_refused(cifar10_jpeg, tmp_path, in_memory, change):
    root = _copy(cifar10_jpeg, tmp_path / "data")
    only_train, only_test = "[]", "[]"
    if "renamed" in change:
        (root / "test" / "cat").rename(root / "test" / "kitty")
        only_train, only_test = "['cat']", "['kitty']"
    if change == "extra_in_test":
        shutil.copytree(root / "test" / "cat", root / "test" / "dog")
        only_test = "['dog']"
    if change == "extra_in_train_and_renamed":
        shutil.copytree(root / "train" / "cat", root / "train" / "dog")
        only_train = "['cat', 'dog']"
    with pytest.raises(ValueError) as info:
        _build(root, in_memory)
    msg = str(info.value)
    assert "\n" not in msg
    assert f"differ: classes only in train/: {only_train}, only in test/: {only_test} " in msg
    # Evaluation alone has nothing to compare against: the split's own classes.
    assert _build(root, in_memory, train=False).classes == sorted(os.listdir(root / "test"))


def test_an_image_overwritten_in_place_is_decoded_again(cifar10_jpeg, tmp_path):
    root = _copy(cifar10_jpeg, tmp_path / "data")
    cache = str(tmp_path / "cache")
    first = load_array_split(root, False, cache_dir=cache)
    target = sorted((root / "test" / "cat").iterdir())[0]
    other = sorted((cifar10_jpeg / "test" / "cat").iterdir())[9]
    shutil.copyfile(other, target)  # same name, same folder, another image
    again = load_array_split(root, False, cache_dir=cache)
    i = 10  # the first cat
    assert not torch.equal(first.images[i], again.images[i])
    assert np.array_equal(again.images[i].permute(1, 2, 0).numpy(), _pixels(other))
    assert len(list(Path(cache).glob("test-*.npy"))) == 2


def test_a_same_size_overwrite_with_a_new_mtime_is_decoded_again(cifar10_jpeg, tmp_path):
    root = _copy(cifar10_jpeg, tmp_path / "data", n=2)
    for f in _files(root, "train"):  # BMP: the same size in bytes for any content of 32x32
        Image.open(f).convert("RGB").save(f.with_suffix(".bmp"))
        f.unlink()
    cache = str(tmp_path / "cache")
    first = load_array_split(root, True, cache_dir=cache)
    target = _files(root, "train")[0]
    st = os.stat(target)
    Image.fromarray(255 - _pixels(target)).save(target)
    assert os.stat(target).st_size == st.st_size
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    again = load_array_split(root, True, cache_dir=cache)
    assert torch.equal(again.images[0], 255 - first.images[0])


def test_cached_split_still_reports_its_skipped_files(damaged, tmp_path):
    root, bad = damaged
    cache = str(tmp_path / "cache")
    first = load_array_split(root, True, cache_dir=cache)
    again = load_array_split(root, True, cache_dir=cache)
    assert again.skipped == first.skipped and len(first.skipped) == 2
    assert torch.equal(again.images, first.images) and torch.equal(again.labels, first.labels)
    with pytest.raises(BadImageError, match="notes.jpg"):
        load_array_split(root, True, cache_dir=cache, strict=True)


@pytest.mark.parametrize("suffix", [".png", ".pgm"])
@pytest.mark.parametrize("in_memory", MODES)
def test_16_bit_images_keep_their_values(cifar10_jpeg, tmp_path, in_memory, suffix):
    root = _copy(cifar10_jpeg, tmp_path / "data", n=2)
    src = sorted((root / "test" / "bird").iterdir())[0]
    grey = np.asarray(Image.open(src).convert("L"))
    path = src.with_suffix(suffix)
    Image.fromarray(grey.astype(np.uint16) * 257).save(path)  # 8-bit v as 16-bit v * 257
    assert Image.open(path).mode in ("I;16", "I")
    src.unlink()
    data = _build(root, in_memory, train=False)
    images, _ = _served(data.val)
    got = images[2].numpy().astype(int)  # the first bird
    assert got.shape == (3, 32, 32) and got.std() > 10
    assert np.abs(got - grey[None].astype(int)).max() <= 1


@pytest.mark.parametrize("in_memory", MODES)
def test_an_empty_class_folder_is_refused_the_same_way(cifar10_jpeg, tmp_path, in_memory):
    root = _copy(cifar10_jpeg, tmp_path / "data")
    for split in ("train", "test"):
        (root / split / "zebra").mkdir()
        (root / split / "zebra" / "readme.txt").write_text("to do\n")
    with pytest.raises(FileNotFoundError) as info:
        _build(root, in_memory)
    assert str(info.value) == (
        f"class folder {root / 'train' / 'zebra'} holds no images "
        "(.jpg, .jpeg, .png, .ppm, .bmp, .pgm, .tif, .tiff, .webp): remove it or add images"
    )


def test_symlink_loops_do_not_hang_and_both_modes_read_the_same_files(cifar10_jpeg, tmp_path):
    from torchvision.datasets import ImageFolder

    root = _copy(cifar10_jpeg, tmp_path / "data")
    nested = root / "train" / "cat" / "more"
    nested.mkdir()
    for f in sorted((cifar10_jpeg / "train" / "cat").iterdir())[5:7]:
        shutil.copy(f, nested / f.name)
    # Without loops, the streamed samples are torchvision's, sub-folders included.
    reference = ImageFolder(str(root / "train")).samples
    assert folder_dataset(root / "train", 0, None).samples == reference == scan_folder(root / "train")[0]
    os.symlink(".", root / "train" / "cat" / "loop")
    os.symlink("..", nested / "up")
    os.symlink("self.jpg", root / "train" / "cat" / "self.jpg")
    script = textwrap.dedent(
        f"""
        import json
        from senet.data import build_data
        out = {{}}
        for in_memory in (True, False):
            d = build_data({str(root)!r}, in_memory=in_memory, cache_dir="", workers=0, augment="none")
            ds = d.train.data if in_memory else d.train.loader.dataset
            labels = ds.labels.tolist() if in_memory else ds.targets
            out[str(in_memory)] = [labels, d.skipped]
        print(json.dumps(out))
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    loop = [[str(root / "train" / "cat" / "self.jpg"), "symbolic link loop"]]
    labels = [y for _, y in reference]
    assert out["True"] == out["False"] == [labels, loop]
    assert labels.count(2) == 7  # cat: five files and the two in cat/more, once each


@pytest.mark.parametrize("in_memory", MODES)
def test_a_file_as_data_folder_and_an_eval_only_folder(cifar10_jpeg, tmp_path, in_memory):
    path = tmp_path / "data.zip"
    path.write_bytes(b"PK")
    with pytest.raises(NotADirectoryError, match=r"data.zip is a file, not a folder \(expected a folder"):
        _build(path, in_memory)
    root = _copy(cifar10_jpeg, tmp_path / "data")
    shutil.rmtree(root / "train")
    data = _build(root, in_memory, train=False)
    assert data.train is None and data.classes == ["airplane", "bird", "cat"]
    assert _served(data.val)[1].tolist() == [0] * 5 + [1] * 5 + [2] * 5
    with pytest.raises(FileNotFoundError, match=r"holds val/ or test/ but no train/ folder"):
        _build(root, in_memory)
