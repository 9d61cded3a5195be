"""The excitation recorder against hand computations, the paper's block names, and `senet excite`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import senet
from senet import SEBlock
from senet.analysis.excite import (
    ExcitationRecorder,
    ExcitationStats,
    block_names,
    class_specificity,
    default_blocks,
    select_blocks,
)
from senet.cli import main
from senet.surgery import insert_se

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class TinySE(nn.Module):
    """conv -> ReLU -> SE -> conv -> ReLU -> SE -> pool -> fc: two SE blocks of different widths."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.se1 = SEBlock(8, 4)
        self.conv2 = nn.Conv2d(8, 6, 3, stride=2, padding=1)
        self.se2 = SEBlock(6, 2)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.se1(F.relu(self.conv1(x)))
        x = self.se2(F.relu(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


def _hand_gate(se: SEBlock, x: torch.Tensor) -> torch.Tensor:
    """sigmoid(fc2(relu(fc1(mean(x))))) with the block's weights, written out as matrix products."""
    z = x.mean((2, 3))
    w1, b1 = se.fc1.weight.flatten(1), se.fc1.bias
    w2, b2 = se.fc2.weight.flatten(1), se.fc2.bias
    return torch.sigmoid(torch.relu(z @ w1.T + b1) @ w2.T + b2)


def test_recorded_gate_equals_the_hand_computation():
    model = TinySE().eval()
    for m in model.modules():  # non-trivial biases so that every term matters
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.bias, std=0.5)
    inputs = {}
    for name in ("se1", "se2"):
        getattr(model, name).register_forward_pre_hook(lambda m, a, name=name: inputs.__setitem__(name, a[0]))
    x, y = torch.randn(5, 3, 8, 8), torch.tensor([0, 1, 1, 2, 0])
    with ExcitationRecorder(model, num_classes=3) as rec:
        rec.observe(x, y)
        assert list(rec.last) == ["se1", "se2"]
        for name in ("se1", "se2"):
            expected = _hand_gate(getattr(model, name), inputs[name])
            torch.testing.assert_close(rec.last[name], expected, rtol=1e-5, atol=1e-6)
        assert rec.last["se1"].shape == (5, 8) and rec.last["se2"].shape == (5, 6)
    assert all(not m._forward_hooks for m in model.modules()), "hooks must be removed on exit"


def test_per_class_mean_and_std_over_batches():
    model = TinySE().eval()
    gates, labels = [], []
    rec = ExcitationRecorder(model, num_classes=3)
    for _ in range(3):
        x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 3, (4,))
        y[0] = 2  # class 2 appears in every batch
        rec.observe(x, y)
        gates.append(rec.last["se2"].double())
        labels.append(y)
    stats = rec.stats(["a", "b", "c"])
    rec.close()
    g, y = torch.cat(gates), torch.cat(labels)
    for k in range(3):
        sel = g[y == k]
        assert stats.counts[k] == len(sel)
        if len(sel):
            np.testing.assert_allclose(stats.mean["se2"][k], sel.mean(0).numpy(), rtol=1e-6)
            np.testing.assert_allclose(stats.std["se2"][k], sel.std(0, unbiased=False).numpy(), atol=1e-6)
            np.testing.assert_allclose(stats.high["se2"][k], (sel >= 0.9).double().mean(0).numpy())
    np.testing.assert_allclose(stats.all_mean["se2"], g.mean(0).numpy(), rtol=1e-6)
    np.testing.assert_allclose(stats.all_std["se2"], g.std(0, unbiased=False).numpy(), atol=1e-6)


def test_nosqueeze_gate_is_averaged_over_space():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), SEBlock(4, 2, squeeze="none")).eval()
    x = torch.randn(2, 3, 5, 5)
    with ExcitationRecorder(model, 1) as rec:
        rec.observe(x, torch.zeros(2, dtype=torch.long))
        se = model[1]
        full = torch.sigmoid(se.fc2(torch.relu(se.fc1(model[0](x)))))
        torch.testing.assert_close(rec.last["1"], full.mean((2, 3)))


def test_paper_block_names_and_default_choice_for_se_resnet50():
    with torch.device("meta"):
        model = senet.create_model("se_resnet50")
    names = list(block_names(model).values())
    assert names[:4] == ["SE_2_1", "SE_2_2", "SE_2_3", "SE_3_1"]
    assert names[-1] == "SE_5_3" and len(names) == 16
    # Sec. 7.2 / Fig. 6 of the paper plot exactly these blocks.
    assert default_blocks(names) == ["SE_2_3", "SE_3_4", "SE_4_6", "SE_5_1", "SE_5_2", "SE_5_3"]


def test_block_names_follow_the_family_stage_numbering():
    with torch.device("meta"):
        cifar = senet.create_model("se_resnet20")
        late = senet.create_model("se_resnet50", stages=[4, 5])
    assert list(block_names(cifar).values()) == [f"SE_{s}_{b}" for s in (1, 2, 3) for b in (1, 2, 3)]
    assert list(block_names(late))[0] == "layer3.0.se" and list(block_names(late).values())[0] == "SE_4_1"
    paper_choice = ["SE_1_3", "SE_2_3", "SE_3_1", "SE_3_2", "SE_3_3"]
    assert default_blocks(list(block_names(cifar).values())) == paper_choice


def test_insert_se_networks_are_recorded_with_paper_names():
    from torchvision.models import resnet18

    model = insert_se(resnet18(num_classes=4)).eval()
    names = block_names(model)
    assert list(names.values()) == [f"SE_{s}_{b}" for s in (2, 3, 4, 5) for b in (1, 2)]
    assert list(names)[0] == "layer1.0.bn2.se"
    with ExcitationRecorder(model, 4) as rec:
        rec.observe(torch.randn(2, 3, 64, 64), torch.tensor([1, 3]))
    assert set(rec.last) == set(names.values())
    assert rec.last["SE_5_2"].shape == (2, 512)


def test_other_families_use_module_paths():
    with torch.device("meta"):
        model = senet.create_model("se_vgg16")
    names = block_names(model)
    assert names and all(k == v for k, v in names.items())
    assert select_blocks(names, ["stage5.*"]) == [p for p in names if p.startswith("stage5.")]


def test_network_without_se_is_refused():
    with pytest.raises(ValueError, match="has no SE blocks"):
        ExcitationRecorder(nn.Sequential(nn.Conv2d(3, 3, 1)), 2)


def test_unknown_block_and_class_are_named():
    names = {"layer1.0.se": "SE_1_1", "layer2.0.se": "SE_2_1"}
    with pytest.raises(ValueError, match="no SE block matches 'SE_9_1'.*SE_1_1, SE_2_1"):
        select_blocks(names, ["SE_9_1"])
    assert select_blocks(names, ["layer2.*"]) == ["SE_2_1"]
    st = ExcitationStats(["b"], ["b"], ["cat", "dog"], np.array([1, 1]))
    with pytest.raises(ValueError, match="unknown class 'kitten'"):
        st.select(["kitten"])


def _stats(means: np.ndarray, stds: np.ndarray, counts: list[int]) -> ExcitationStats:
    st = ExcitationStats(["b"], ["b"], [f"c{i}" for i in range(len(counts))], np.array(counts))
    n = np.array(counts, float)[:, None]
    st.mean["b"], st.std["b"], st.high["b"] = means, stds, (means >= 0.9).astype(float)
    st.all_mean["b"] = (n * means).sum(0) / n.sum()
    st.all_std["b"] = np.zeros(means.shape[1])
    st.all_high["b"] = (n * st.high["b"]).sum(0) / n.sum()
    return st


def test_class_specificity_by_hand():
    # Two classes, one channel: class 0 always 0.2, class 1 always 0.8 -> the class explains everything.
    row = class_specificity(_stats(np.array([[0.2], [0.8]]), np.zeros((2, 1)), [4, 4]))[0]
    assert row["class_specificity"] == pytest.approx(1.0)
    assert row["class_distance"] == pytest.approx(0.6)
    assert row["mean_gate"] == pytest.approx(0.5)
    # Same profile for every class, spread within classes -> class-agnostic (exactly 0 after correction
    # only in expectation; here between-class variance is 0, so it is slightly negative).
    row = class_specificity(_stats(np.full((3, 2), 0.5), np.full((3, 2), 0.1), [10, 10, 10]))[0]
    assert row["class_distance"] == 0 and row["class_specificity"] <= 0
    # Saturated block: every gate 0.95.
    row = class_specificity(_stats(np.full((2, 3), 0.95), np.zeros((2, 3)), [5, 5]))[0]
    assert row["saturated"] == 1.0


def test_npz_round_trip(tmp_path):
    model = TinySE().eval()
    with ExcitationRecorder(model, 2) as rec:
        rec.observe(torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 0, 1]))
        stats = rec.stats(["x", "y"])
    path = stats.save(tmp_path / "e.npz")
    back = ExcitationStats.load(path)
    assert back.blocks == ["se1", "se2"] and back.classes == ["x", "y"]
    np.testing.assert_allclose(back.mean["se1"], stats.mean["se1"], rtol=1e-6)
    np.testing.assert_allclose(back.all_std["se2"], stats.all_std["se2"], rtol=1e-6)


def test_senet_excite_end_to_end(run20, cifar10_jpeg, tmp_path, capsys):
    out = tmp_path / "excite"
    argv = ["excite", "--checkpoint", str(run20 / "last.pt"), "--data-dir", str(cifar10_jpeg)]
    argv += ["--classes", "cat", "dog", "ship", "--images-per-class", "3", "--out", str(out)]
    assert main(argv) == 0
    assert "SE_3_3" in capsys.readouterr().out
    with np.load(out / "excitations.npz") as d:
        assert list(d["classes"]) == ["cat", "dog", "ship"]
        assert list(d["counts"]) == [3, 3, 3]
        assert d["SE_1_1/mean"].shape == (3, 16) and d["SE_3_3/all_mean"].shape == (64,)
        assert ((d["SE_2_2/mean"] > 0) & (d["SE_2_2/mean"] < 1)).all()
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["fig6_excitations.png", "fig7_cat.png", "fig7_dog.png", "fig7_ship.png"]
    assert all((out / p).read_bytes()[:8] == PNG_SIGNATURE for p in pngs)
    summary = json.loads((out / "summary.json").read_text())
    assert [r["block"] for r in summary["blocks"]] == [f"SE_{s}_{b}" for s in (1, 2, 3) for b in (1, 2, 3)]


def test_senet_excite_refusals(run20, cifar10_jpeg, tmp_path, capsys):
    base = ["excite", "--checkpoint", str(run20 / "last.pt"), "--data-dir", str(cifar10_jpeg)]
    for extra, message in (
        (["--classes", "kitten"], "unknown class 'kitten'"),
        (["--blocks", "SE_4_1"], "no SE block matches 'SE_4_1'"),
    ):
        assert main(base + extra + ["--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0]
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    assert main(["excite", "--checkpoint", str(junk), "--data-dir", str(cifar10_jpeg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "junk.pt" in err[0] and "checkpoint" in err[0] and "Traceback" not in err[0]
