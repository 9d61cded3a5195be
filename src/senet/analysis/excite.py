"""What the excitations learn (paper Sec. 7.2, Figs. 6-7): per-class statistics of every SE gate.

:class:`ExcitationRecorder` puts a forward hook on the ``gate`` submodule of every
:class:`~senet.se.SEBlock` of a network, so it works on every SE network of the registry and on
networks built with :func:`senet.surgery.insert_se`, without a copy of any model code. For each
block it accumulates, per class, the mean and standard deviation of each channel's gate value over
the images seen (:class:`ExcitationStats`), and the same over all images (the paper's "all" line).
For the NoSqueeze variant, whose gate is a map, the gate of a channel is its spatial mean.

Blocks are named as in the paper, ``SE_stageID_blockID`` (Sec. 7.2), for ResNets: networks whose
SE blocks sit in residual units ``layer<k>.<j>``. The stage number is the family's own
``SEConfig.stages`` number, read from the network's ``feature_info`` (ImageNet ResNets:
conv2_x..conv5_x = 2..5; CIFAR ResNets: 1..3; torchvision ResNets after ``insert_se``: 2..5 as in
:mod:`senet.surgery`), the block number is ``j + 1``. Other networks' blocks are named by their module path.

:func:`class_specificity` condenses a block into the numbers behind the paper's reading of Fig. 6:
how far apart the class profiles are, how much of the gates' variance the class explains, and how
close the gates are to saturation (all near 1, where an SE block is the identity).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..se import SEBlock

__all__ = [
    "ExcitationRecorder",
    "ExcitationStats",
    "block_names",
    "class_indices",
    "class_specificity",
    "default_blocks",
    "select_blocks",
]

SATURATED = 0.9  # a gate at or above this counts as saturated (near the identity)
STAT_KEYS = ("mean", "std", "high", "all_mean", "all_std", "all_high")  # per block, in ExcitationStats
_RESNET_UNIT = re.compile(r"(?:^|\.)layer(\d+)\.(\d+)\.")
_PAPER_NAME = re.compile(r"SE_(\d+)_(\d+)")


def _se_paths(model: nn.Module) -> list[str]:
    return [p for p, m in model.named_modules() if isinstance(m, SEBlock)]


def _stages_from_feature_info(model: nn.Module, paths: Sequence[str]) -> dict[str, int]:
    """Stage number of each SE path: the ``stage`` (the family's own ``SEConfig.stages`` number) of
    the ``feature_info`` entry whose module holds it."""
    info = getattr(model, "feature_info", None) or []
    stages = {p: next((e["stage"] for e in info if p.startswith(e["module"] + ".")), None) for p in paths}
    return {p: s for p, s in stages.items() if s is not None}


def _stages_from_torchvision(model: nn.Module, paths: Sequence[str]) -> dict[str, int]:
    """torchvision ResNets (after ``insert_se``): ``layer1..layer4`` = conv2_x..conv5_x = 2..5."""
    try:
        from torchvision.models.resnet import ResNet
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return {}
    if not isinstance(model, ResNet):
        return {}
    return {p: int(m.group(1)) + 1 for p in paths if (m := _RESNET_UNIT.search(p))}


def block_names(model: nn.Module) -> dict[str, str]:
    """Module path -> display name of every SE block (``SE_stageID_blockID`` for ResNets, see the
    module docstring; else the module path), in registration order."""
    paths = _se_paths(model)
    if paths and all(_RESNET_UNIT.search(p) for p in paths):
        stages = _stages_from_feature_info(model, paths) or _stages_from_torchvision(model, paths)
        if set(stages) == set(paths):
            units = {p: int(_RESNET_UNIT.search(p).group(2)) + 1 for p in paths}  # type: ignore[union-attr]
            names = {p: f"SE_{stages[p]}_{units[p]}" for p in paths}
            if len(set(names.values())) == len(paths):
                return names
    return {p: p for p in paths}


def default_blocks(names: Sequence[str]) -> list[str]:
    """The paper's choice (Sec. 7.2): the last SE block of each stage and every block of the last stage.

    Without stage names: all blocks when there are at most six, else six spread over the depth.
    """
    parsed = [_PAPER_NAME.fullmatch(n) for n in names]
    if names and all(parsed):
        stages = [int(m.group(1)) for m in parsed]  # type: ignore[union-attr]
        last = max(stages)
        return [
            n
            for i, n in enumerate(names)
            if stages[i] == last or i + 1 == len(names) or stages[i + 1] != stages[i]
        ]
    if len(names) <= 6:
        return list(names)
    idx = np.unique(np.linspace(0, len(names) - 1, 6).round().astype(int))
    return [names[i] for i in idx]


def select_blocks(available: dict[str, str], wanted: Iterable[str] | None) -> list[str]:
    """Display names of the blocks matching ``wanted`` (names, module paths or shell patterns)."""
    names = list(available.values())
    if not wanted:
        return default_blocks(names)
    chosen: set[str] = set()
    for w in wanted:
        hits = {n for p, n in available.items() if fnmatch.fnmatchcase(n, w) or fnmatch.fnmatchcase(p, w)}
        if not hits:
            raise ValueError(f"no SE block matches {w!r}; the network's blocks: {', '.join(names)}")
        chosen |= hits
    return [n for n in names if n in chosen]


def class_indices(names: Sequence[str], wanted: Iterable[str | int]) -> list[int]:
    """Indices of ``wanted`` classes (names, or indices given as numbers) in ``names``, no repeats."""
    idx: list[int] = []
    for c in wanted:
        if isinstance(c, int) or (isinstance(c, str) and c.isdigit() and c not in names):
            i = int(c)
            if not 0 <= i < len(names):
                raise ValueError(f"class index {i} out of range: there are {len(names)} classes")
        elif c in names:
            i = list(names).index(c)
        else:
            raise ValueError(f"unknown class {c!r}; the data set's classes: {', '.join(names)}")
        if i not in idx:
            idx.append(i)
    return idx


class ExcitationRecorder:
    """Forward hooks on every SE block's gate that accumulate per-class gate statistics.

    Use as a context manager (the hooks are removed on exit)::

        with ExcitationRecorder(model, num_classes=10) as rec:
            for x, y in loader:
                rec.observe(x, y)
        stats = rec.stats(class_names)

    ``rec.last`` holds the gates of the last forward pass, ``{name: (N, C)}``.
    """

    def __init__(self, model: nn.Module, num_classes: int, names: dict[str, str] | None = None) -> None:
        self.model = model
        self.num_classes = num_classes
        self.names = names if names is not None else block_names(model)
        if not self.names:
            raise ValueError(
                f"{type(model).__name__} has no SE blocks: excitations need an SE network "
                "(e.g. create_model('se_resnet20') or senet.surgery.insert_se(model))"
            )
        self.last: dict[str, torch.Tensor] = {}
        self._acc: dict[str, torch.Tensor] = {}  # per block: (3, classes, C) sums of g, g^2, g >= SATURATED
        self._counts = torch.zeros(num_classes, dtype=torch.float64)
        self._handles = [
            model.get_submodule(path).gate.register_forward_hook(self._hook(name))
            for path, name in self.names.items()
        ]

    def _hook(self, name: str) -> Any:
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            g = output.detach().float()
            self.last[name] = g.flatten(2).mean(2) if g.dim() > 2 else g

        return hook

    def observe(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Run the network on ``x`` (inference) and add its gates to the statistics of classes ``y``."""
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise ValueError(f"labels must be in [0, {self.num_classes}), got {int(y.min())}..{int(y.max())}")
        self.last.clear()
        with torch.inference_mode():
            self.model(x)
        y = y.detach().cpu().long()
        for name, g in self.last.items():
            g = g.cpu().double()
            if name not in self._acc:
                self._acc[name] = torch.zeros(3, self.num_classes, g.shape[1], dtype=torch.float64)
            self._acc[name].index_add_(1, y, torch.stack([g, g * g, (g >= SATURATED).double()]))
        self._counts += torch.bincount(y, minlength=self.num_classes).double()

    def stats(self, classes: Sequence[str] | None = None, model_name: str = "") -> ExcitationStats:
        """Per-class mean / std / saturated fraction of every block that ran, and the same over all images."""
        if self._counts.sum() == 0:
            raise ValueError("no images were observed: call observe(x, y) first")
        classes = list(classes) if classes is not None else [str(i) for i in range(self.num_classes)]
        n = self._counts.unsqueeze(1)
        ns = n.clamp(min=1)
        total = self._counts.sum()
        order = [(p, name) for p, name in self.names.items() if name in self._acc]
        st = ExcitationStats(
            blocks=[name for _, name in order],
            paths=[p for p, _ in order],
            classes=classes,
            counts=self._counts.numpy().astype(np.int64),
            model=model_name or getattr(self.model, "model_name", type(self.model).__name__),
        )
        for _, name in order:
            s, sq, hi = self._acc[name]
            mean = torch.where(n > 0, s / ns, torch.nan)
            var = (sq / ns - (s / ns) ** 2).clamp(min=0)
            st.mean[name] = mean.numpy()
            st.std[name] = torch.where(n > 0, var.sqrt(), torch.nan).numpy()
            st.high[name] = torch.where(n > 0, hi / ns, torch.nan).numpy()
            all_mean = s.sum(0) / total
            st.all_mean[name] = all_mean.numpy()
            st.all_std[name] = (sq.sum(0) / total - all_mean**2).clamp(min=0).sqrt().numpy()
            st.all_high[name] = (hi.sum(0) / total).numpy()
        return st

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> ExcitationRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class ExcitationStats:
    """Per block: per-class (K, C) and all-image (C,) mean, std and saturated fraction of the gates.

    ``counts[k]`` images of class ``classes[k]`` were seen; the "all" arrays cover every image
    observed, including classes left out by :meth:`select`.
    """

    blocks: list[str]
    paths: list[str]
    classes: list[str]
    counts: np.ndarray
    model: str = ""
    mean: dict[str, np.ndarray] = field(default_factory=dict)
    std: dict[str, np.ndarray] = field(default_factory=dict)
    high: dict[str, np.ndarray] = field(default_factory=dict)
    all_mean: dict[str, np.ndarray] = field(default_factory=dict)
    all_std: dict[str, np.ndarray] = field(default_factory=dict)
    all_high: dict[str, np.ndarray] = field(default_factory=dict)

    def select(self, classes: Iterable[str | int]) -> ExcitationStats:
        """The same statistics restricted to ``classes`` (names or indices); "all" is unchanged."""
        idx = class_indices(self.classes, classes)
        out = ExcitationStats(
            self.blocks, self.paths, [self.classes[i] for i in idx], self.counts[idx], self.model
        )
        for key in STAT_KEYS:
            for b in self.blocks:
                v = getattr(self, key)[b]
                getattr(out, key)[b] = v if key.startswith("all_") else v[idx]  # "all" covers every class
        return out

    def save(self, path: str | Path) -> Path:
        """Write ``excitations.npz``: ``classes``, ``blocks``, ``paths``, ``counts``, ``model`` and,
        per block ``B``, ``B/mean`` ``B/std`` ``B/high`` (classes x channels) and ``B/all_mean``
        ``B/all_std`` ``B/all_high`` (channels)."""
        arrays = {k: np.array(getattr(self, k)) for k in ("classes", "blocks", "paths", "counts", "model")}
        for b in self.blocks:
            for key in STAT_KEYS:
                arrays[f"{b}/{key}"] = getattr(self, key)[b].astype(np.float32)
        np.savez_compressed(path, **arrays)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> ExcitationStats:
        with np.load(path) as d:
            st = cls(
                [str(b) for b in d["blocks"]],
                [str(p) for p in d["paths"]],
                [str(c) for c in d["classes"]],
                d["counts"],
                str(d["model"]),
            )
            for b in st.blocks:
                for key in STAT_KEYS:
                    getattr(st, key)[b] = d[f"{b}/{key}"]
        return st


def class_specificity(stats: ExcitationStats) -> list[dict[str, Any]]:
    """Per block: how class-specific and how saturated its excitations are (over ``stats.classes``).

    * ``class_distance``: mean over pairs of classes of the root-mean-square difference of their
      mean excitation profiles (the distance between the lines of a Fig. 6 panel);
    * ``class_specificity``: the share of the gates' variance over images that the class explains
      (between-class / total sum of squares, corrected for the share chance alone gives, i.e.
      epsilon squared; averaged over channels): about 0 when every class gets the same
      excitations, 1 when the class alone determines them;
    * ``mean_gate`` and ``saturated``: the mean gate and the fraction of gates >= 0.9 over all images.
    """
    rows = []
    n = stats.counts.astype(np.float64)[:, None]
    for b, path in zip(stats.blocks, stats.paths, strict=True):
        m, s = stats.mean[b].astype(np.float64), stats.std[b].astype(np.float64)
        k = len(stats.classes)
        pairs = [np.sqrt(np.mean((m[i] - m[j]) ** 2)) for i in range(k) for j in range(i + 1, k)]
        grand = (n * m).sum(0) / n.sum()
        between = (n * (m - grand) ** 2).sum(0)
        within = (n * s**2).sum(0)
        total = between + within
        # Bias-corrected share (epsilon squared): with N images in K classes, class labels that
        # explain nothing would still give between / total ~ (K - 1) / (N - 1) by chance.
        dof = max(float(n.sum()) - k, 1.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            eta2 = np.where(total > 0, (between - (k - 1) * within / dof) / total, np.nan)
        rows.append(
            {
                "block": b,
                "path": path,
                "channels": int(m.shape[1]),
                "mean_gate": float(stats.all_mean[b].mean()),
                "saturated": float(stats.all_high[b].mean()),
                "class_distance": float(np.mean(pairs)) if pairs else float("nan"),
                "class_specificity": float(np.nanmean(eta2)) if np.isfinite(eta2).any() else float("nan"),
            }
        )
    return rows


def summary_markdown(stats: ExcitationStats, rows: Sequence[dict[str, Any]]) -> str:
    """The summary table of :func:`class_specificity` with a note on how to read it."""
    named = any(r["block"] != r["path"] for r in rows)
    head = (
        "| block | "
        + ("module | " if named else "")
        + "channels | mean gate | gates >= 0.9 | class distance | class specificity |"
    )
    lines = [
        f"# Excitations of {stats.model}",
        "",
        "Classes: "
        + ", ".join(f"{c} ({int(n)} images)" for c, n in zip(stats.classes, stats.counts, strict=True))
        + ".",
        "",
        head,
        "|---|" + ("---|" if named else "") + "---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        mod = f"`{r['path']}` | " if named else ""
        lines.append(
            f"| {r['block']} | {mod}{r['channels']} | {r['mean_gate']:.3f} | {100 * r['saturated']:.1f}% | "
            f"{r['class_distance']:.4f} | {r['class_specificity']:.3f} |"
        )
    lines += [
        "",
        "class distance: mean over pairs of classes of the RMS difference of their mean excitation "
        "profiles. class specificity: share of the gates' variance over images explained by the class, "
        "corrected for chance (epsilon squared; ~0: class-agnostic, 1: determined by the class), averaged "
        "over channels. mean gate and gates >= 0.9 are over all images.",
        "",
        "The paper (Sec. 7.2, SE-ResNet-50 on ImageNet) finds early blocks class-agnostic, later blocks "
        "increasingly class-specific, and the last blocks (SE_5_2, SE_5_3) near saturation, most gates "
        "close to 1.",
        "",
    ]
    return "\n".join(lines)
