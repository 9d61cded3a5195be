"""`senet profile` measurements: latency / throughput fields, peak memory against a hand count, twins."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import senet
from senet.analysis.profile import measure, peak_forward_memory, with_twins
from senet.cli import main


class Chain(nn.Module):
    """Three out-of-place ReLUs: each allocates one tensor like x; the previous one is freed after."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(x)
        b = torch.relu(a)
        del a
        return torch.relu(b)


def test_peak_memory_of_a_chain_by_hand():
    x = torch.randn(256, 1024)  # 1 MiB
    peak, method = peak_forward_memory(Chain(), x)
    # At most two results are alive at once (the one being read and the one being written).
    assert peak == 2 * x.numel() * 4
    assert method


def test_peak_memory_grows_with_the_batch():
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1)).eval()
    small, _ = peak_forward_memory(model, torch.randn(1, 3, 32, 32))
    large, _ = peak_forward_memory(model, torch.randn(8, 3, 32, 32))
    one_map = 16 * 32 * 32 * 4
    assert small >= one_map and large >= 8 * one_map
    # Operator workspaces add a part that does not scale; the activations' part grows with the batch.
    assert large - small >= 7 * one_map


def test_timing_fields_are_sane():
    t = measure("resnet20", batch_size=2, warmup=1, repeats=3, device="cpu")
    assert t.device == "cpu" and t.batch_size == 2 and t.repeats == 3 and t.threads >= 1
    assert 0 < t.min_ms <= t.median_ms <= t.max_ms
    assert t.images_per_s == pytest.approx(2000 / t.median_ms)
    feature_map = 2 * 16 * 32 * 32 * 4  # the stem's output alone, in bytes
    assert feature_map <= t.peak_mem_bytes < 64 * 2**20
    params = sum(p.numel() for p in senet.create_model("resnet20").parameters())
    assert t.param_bytes >= 4 * params


def test_bad_measure_arguments_are_refused():
    with pytest.raises(ValueError, match="batch_size >= 1"):
        measure("resnet20", batch_size=0)


def test_twins_are_added_beside_each_other():
    assert with_twins(["se_resnet50"]) == ["resnet50", "se_resnet50"]
    assert with_twins(["resnet20", "se_resnet20", "senet154"])[:2] == ["resnet20", "se_resnet20"]


def test_profile_cli_times_both_twins(capsys):
    assert main(["profile", "se_resnet20", "--time", "--repeats", "2", "--warmup", "1", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"resnet20", "se_resnet20"}
    se, plain = rows["se_resnet20"], rows["resnet20"]
    for key in ("median_ms", "min_ms", "max_ms", "images_per_s", "peak_mem_mb", "batch_size", "device"):
        assert key in se and key in plain
    extra = 100 * (se["params"] - plain["params"]) / plain["params"]
    assert se["params_overhead_pct"] == pytest.approx(extra)
    assert se["latency_overhead_pct"] == pytest.approx(
        100 * (se["median_ms"] - plain["median_ms"]) / plain["median_ms"]
    )
    assert "latency_overhead_pct" not in plain


def test_profile_markdown_has_the_paper_overheads(capsys):
    assert main(["profile", "se_resnet50", "--markdown"]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("|")]
    assert lines[0].startswith("| model | input | params (M) |") and len(lines) == 4
    se = lines[3]
    assert se.startswith("| se_resnet50 |")
    # Parameter counts of the official release (28,088,024 vs 25,557,032) and, in parentheses, the
    # paper's rounded figures (28.1M vs 25.6M; 3.87 vs 3.86 GFLOPs, the +0.26% of Sec. 6).
    release = 100 * (28_088_024 - 25_557_032) / 25_557_032
    assert f"{release:+.2f}% ({100 * (28.1 - 25.6) / 25.6:+.2f}%)" in se
    assert f"({100 * (3.87 - 3.86) / 3.86:+.2f}%)" in se


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when CUDA is absent")
def test_cuda_without_cuda_is_one_line(capsys):
    assert main(["profile", "resnet20", "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["senet profile: error: CUDA is not available on this machine: use --device cpu"]
