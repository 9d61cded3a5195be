"""``senet excite``: the excitation analysis of a trained SE network as one job (paper Sec. 7.2).

It reads a checkpoint and its data, records the excitations (:mod:`senet.analysis.excite`) and
writes the figures (:mod:`senet.analysis.plots`) and summaries: the job stands above both, so that
the statistics and their plots do not import each other.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from . import plots
from .excite import (
    ExcitationRecorder,
    block_names,
    class_indices,
    class_specificity,
    select_blocks,
    summary_markdown,
)

__all__ = ["excite"]


def _split_args(values: Sequence[str] | None) -> list[str]:
    return [v for item in values or () for v in item.split(",") if v]


def excite(
    checkpoint: str | Path,
    data_dir: str | Path,
    *,
    classes: Sequence[str] | None = None,
    blocks: Sequence[str] | None = None,
    images_per_class: int = 50,
    out: str | Path = "excite",
    batch_size: int = 100,
    channels: int = 50,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Record the excitations of a trained SE network on the evaluation split of ``data_dir``.

    Runs ``images_per_class`` images of every class (as the paper, whose "all" line averages over
    all classes) and writes to ``out``: ``excitations.npz`` (all blocks, the chosen classes and
    "all"), ``fig6_excitations.png`` (one panel per chosen block, one line per class),
    ``fig7_<class>.png`` (per-channel mean and std within each chosen class), ``summary.md`` and
    ``summary.json`` (:func:`class_specificity` of every block). ``classes`` defaults to every
    class (at most 10 are plotted in one figure); ``blocks`` to :func:`default_blocks`.
    """
    from ..devices import pick_device
    from ..train import load_trained
    from ..train.engine import trained_data

    if images_per_class < 1 or batch_size < 1:
        raise ValueError(
            f"images_per_class and batch_size must be >= 1, got {images_per_class}, {batch_size}"
        )
    dev = pick_device(device)
    model, ckpt = load_trained(checkpoint, dev)
    names = block_names(model)
    if not names:
        raise ValueError(
            f"{ckpt['arch']} has no SE blocks, so it has no excitations: use an SE network's checkpoint"
        )
    chosen_blocks = select_blocks(names, _split_args(blocks))
    wanted = _split_args(classes)
    if "classes" in ckpt:
        class_indices(list(ckpt["classes"]), wanted)
    loader = dict(val_subset=images_per_class, eval_batch_size=batch_size, device=dev)
    data = trained_data(
        ckpt, data_dir, by_name=False, workers=min(2, ckpt["config"].get("workers", 2)), **loader
    )
    with ExcitationRecorder(model, len(data.classes), names) as rec:
        for x, y in data.val:
            rec.observe(x, y)
        stats = rec.stats(list(data.classes), ckpt["arch"])
    stats = stats.select(wanted if wanted else list(range(len(stats.classes))))
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create --out {out}: {e.strerror or e}") from None
    files = [stats.save(out / "excitations.npz")]
    shown = stats if len(stats.classes) <= 10 else stats.select(stats.classes[:10])
    fig6 = out / "fig6_excitations.png"
    plots.plot_class_profiles(shown, chosen_blocks, fig6, channels=channels)
    files.append(fig6)
    for c in shown.classes:
        path = out / f"fig7_{re.sub(r'[^A-Za-z0-9_.-]+', '_', c)}.png"
        plots.plot_class_spread(shown, c, chosen_blocks, path, channels=channels)
        files.append(path)
    rows = class_specificity(stats)
    (out / "summary.md").write_text(summary_markdown(stats, rows))
    summary = {"model": stats.model, "checkpoint": str(checkpoint), "classes": stats.classes, "blocks": rows}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    files += [out / "summary.md", out / "summary.json"]
    return {"stats": stats, "summary": rows, "blocks": chosen_blocks, "files": files}
