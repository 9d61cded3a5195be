"""Pictures of excitations in the style of the paper's Figs. 6 and 7 (matplotlib, Agg backend, PNG).

* Fig. 6: one panel per SE block; x = channel index, y = mean excitation; one line per class and
  one for all images.
* Fig. 7: one panel per SE block for a single class; the per-channel mean with a band of one
  standard deviation over the images of that class.

As in the paper, at most ``channels`` channels (default 50) are drawn, uniformly spaced over the
block's channels, so that wide blocks stay readable. Both functions return the (closed) figure so
that callers and tests can inspect what was drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .excite import ExcitationStats

__all__ = ["plot_class_profiles", "plot_class_spread", "sampled_channels"]


def sampled_channels(num_channels: int, channels: int = 50) -> np.ndarray:
    """Indices of at most ``channels`` channels spread uniformly over ``num_channels``."""
    if num_channels <= channels:
        return np.arange(num_channels)
    return np.unique(np.linspace(0, num_channels - 1, channels).round().astype(int))


def _grid(n: int, title: str):  # noqa: ANN202 - matplotlib objects
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows + 0.6), squeeze=False)
    for ax in axes.flat[n:]:
        fig.delaxes(ax)
    fig.suptitle(title)
    return plt, fig, list(axes.flat[:n])


def _check(stats: ExcitationStats, blocks: Sequence[str]) -> None:
    if not blocks:
        raise ValueError("no SE blocks to plot")
    unknown = [b for b in blocks if b not in stats.mean]
    if unknown:
        raise ValueError(f"blocks {unknown} were not recorded; recorded: {', '.join(stats.blocks)}")


def _panels(stats: ExcitationStats, blocks: Sequence[str], axes: list, channels: int):  # noqa: ANN202
    """Per block: its styled panel, name, sampled channel indices and their x positions."""
    for ax, b in zip(axes, blocks, strict=True):
        idx = sampled_channels(stats.mean[b].shape[1], channels)
        i = stats.blocks.index(b)
        ax.set_title(b if stats.paths[i] == b else f"{b}  ({stats.paths[i]})", fontsize=9)
        ax.set_xlabel(f"channel ({len(idx)} of {stats.mean[b].shape[1]})", fontsize=8)
        ax.set_ylabel("excitation", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        yield ax, b, idx, np.arange(len(idx))


def _unit_range(ax, *arrays: np.ndarray) -> None:
    """Sigmoid gates are drawn on [0, 1] as in the paper, so flat profiles look flat."""
    values = np.concatenate([np.ravel(a) for a in arrays])
    values = values[np.isfinite(values)]
    if values.size and values.min() >= 0 and values.max() <= 1:
        ax.set_ylim(-0.02, 1.02)


def _save(plt, fig, path: str | Path, bottom: float = 0.0):  # noqa: ANN001, ANN202
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return fig


def plot_class_profiles(stats: ExcitationStats, blocks: Sequence[str], path: str | Path, channels: int = 50):  # noqa: ANN201
    """Fig. 6: mean excitation per channel, one line per class and one for all images, per block."""
    _check(stats, blocks)
    plt, fig, axes = _grid(len(blocks), f"{stats.model}: mean excitation per channel (Fig. 6 style)")
    colors = plt.get_cmap("tab10")
    for ax, b, idx, x in _panels(stats, blocks, axes, channels):
        for k, c in enumerate(stats.classes):
            ax.plot(x, stats.mean[b][k, idx], lw=1.0, color=colors(k % 10), label=c)
        ax.plot(x, stats.all_mean[b][idx], lw=1.8, color="black", ls="--", label="all")
        _unit_range(ax, stats.mean[b][:, idx], stats.all_mean[b][idx])
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=8, frameon=False)
    return _save(plt, fig, path, bottom=0.04 + 0.03 * (len(labels) > 6))


def plot_class_spread(  # noqa: ANN201
    stats: ExcitationStats, cls: str, blocks: Sequence[str], path: str | Path, channels: int = 50
):
    """Fig. 7: per-channel mean excitation and one standard deviation within class ``cls``, per block."""
    _check(stats, blocks)
    if cls not in stats.classes:
        raise ValueError(f"class {cls!r} was not recorded; recorded: {', '.join(stats.classes)}")
    k = stats.classes.index(cls)
    plt, fig, axes = _grid(
        len(blocks), f"{stats.model}: excitations of class '{cls}', mean and std (Fig. 7 style)"
    )
    for ax, b, idx, x in _panels(stats, blocks, axes, channels):
        m, s = stats.mean[b][k, idx], stats.std[b][k, idx]
        ax.fill_between(x, m - s, m + s, color="tab:blue", alpha=0.25, lw=0)
        ax.plot(x, m, color="tab:blue", lw=1.2)
        _unit_range(ax, m)
    return _save(plt, fig, path)
