"""Checkpoints are atomic and load with weights_only=True."""

from __future__ import annotations

import pytest
import torch

from senet.train import checkpoint as ck


def test_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ck.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)

    def half_written(obj, f):
        f.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(ck.torch, "save", half_written)
    with pytest.raises(OSError, match="disk full"):
        ck.save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    state = torch.load(path, weights_only=True)
    assert state["epoch"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_rng_round_trip_and_weights_only_content(tmp_path):
    import random

    torch.manual_seed(3)
    random.seed(3)
    state = {"rng": ck.capture_rng(), "epoch": 4}
    a, b = torch.rand(5), random.random()
    ck.save_checkpoint(state, tmp_path / "c.pt")
    loaded = ck.load_checkpoint(tmp_path / "c.pt")
    ck.restore_rng(loaded["rng"])
    assert torch.equal(torch.rand(5), a) and random.random() == b


def test_bad_checkpoint_is_one_line_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ck.load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="truncated, corrupted or not a PyTorch checkpoint"):
        ck.load_checkpoint(tmp_path / "bad.pt")
