"""Fig. 6 / Fig. 7-style plots: valid PNG files with one panel per block and one line per class."""

from __future__ import annotations

import matplotlib.image
import pytest
import torch
from matplotlib.collections import PolyCollection

import senet
from senet.analysis.excite import ExcitationRecorder, block_names, default_blocks
from senet.analysis.plots import plot_class_profiles, plot_class_spread, sampled_channels

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def stats():
    model = senet.create_model("se_resnet20").eval()
    with ExcitationRecorder(model, 3) as rec:
        rec.observe(torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2]))
        return rec.stats(["plane", "car", "bird"])


def test_fig6_has_one_panel_per_block_and_one_line_per_class(stats, tmp_path):
    blocks = default_blocks(stats.blocks)
    assert blocks == ["SE_1_3", "SE_2_3", "SE_3_1", "SE_3_2", "SE_3_3"]
    path = tmp_path / "fig6.png"
    fig = plot_class_profiles(stats, blocks, path)
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    h, w, _ = matplotlib.image.imread(path).shape
    assert h > 100 and w > 100
    assert len(fig.axes) == len(blocks)
    for ax, block in zip(fig.axes, blocks, strict=True):
        assert ax.get_title().startswith(block)
        lines = ax.get_lines()
        assert [ln.get_label() for ln in lines] == ["plane", "car", "bird", "all"]
        channels = stats.mean[block].shape[1]
        assert len(lines[0].get_xdata()) == min(channels, 50)


def test_fig7_has_one_band_per_block(stats, tmp_path):
    path = tmp_path / "fig7.png"
    fig = plot_class_spread(stats, "car", ["SE_1_1", "SE_3_3"], path)
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert len(ax.get_lines()) == 1 and any(isinstance(c, PolyCollection) for c in ax.collections)


def test_channel_sampling_is_uniform_and_bounded():
    assert list(sampled_channels(16)) == list(range(16))
    idx = sampled_channels(2048, 50)
    assert len(idx) == 50 and idx[0] == 0 and idx[-1] == 2047


def test_plot_refuses_unknown_blocks_and_classes(stats, tmp_path):
    with pytest.raises(ValueError, match="not recorded"):
        plot_class_profiles(stats, ["SE_9_9"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="class 'dog' was not recorded"):
        plot_class_spread(stats, "dog", ["SE_1_1"], tmp_path / "x.png")


def test_module_path_names_for_other_networks(tmp_path):
    with torch.device("meta"):
        names = block_names(senet.create_model("se_vgg16"))
    assert len(default_blocks(list(names.values()))) == 6
