"""A Markdown report of training runs beside the paper's figures, read from the runs' own files.

A run folder is what ``senet train`` leaves (see :mod:`senet.train.engine`): ``config.yaml`` (the
resolved config), ``metrics.jsonl`` (one record per epoch: losses, top-1/top-5, seconds, images/s),
``last.pt`` / ``best.pt`` (model name, ``create_model`` keywords, class count) and ``curves.png``.
Every number of the report comes from these files: accuracy from the last epoch's record, time and
throughput summed over the epochs' records, parameters and multiply-adds from the network rebuilt
from the checkpoint's model name and keywords (on the ``meta`` device, no weights loaded). The
paper's figure beside a run is the one for the same network and data set (Tables 2-5, via
:mod:`senet.paper`): CIFAR-10 / CIFAR-100 by the run's class count, ImageNet for 1000 classes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from .profile import _num, profile

__all__ = ["RunSummary", "read_run", "report", "report_markdown"]


@dataclass(frozen=True)
class RunSummary:
    """What the report shows of one run."""

    path: str
    model: str
    recipe: str
    dataset: str
    data_dir: str
    epochs_done: int
    epochs: int
    top1_err: float
    top5_err: float
    best_top1_err: float
    paper_top1_err: float | None
    paper_top5_err: float | None
    params: int
    gmacs: float
    eval_size: int
    train_seconds: float
    eval_seconds: float
    images_per_s: float
    train_subset: int
    val_subset: int
    curves: str | None

    @property
    def finished(self) -> bool:
        return self.epochs_done >= self.epochs

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "finished": self.finished}


def _not_a_run(path: Path, why: str) -> ValueError:
    return ValueError(
        f"{path} is not a `senet train` run folder ({why}); give folders made by `senet train --out DIR`"
    )


def _dataset_key(dataset: str, num_classes: int) -> str:
    """``cifar10`` / ``cifar100`` / ``imagenet`` (the paper's tables), or the registry's data set name."""
    if dataset == "cifar" and num_classes in (10, 100):
        return f"cifar{num_classes}"
    if dataset == "imagenet" and num_classes == 1000:
        return "imagenet"
    return f"{dataset} ({num_classes} classes)"


def read_run(run_dir: str | Path) -> RunSummary:
    """The figures of one run folder; a folder that is not a run raises a one-line ``ValueError``."""
    from ..models import model_info
    from ..paper import paper_figures
    from ..train.runlog import read_metrics
    from ..weights import read_checkpoint

    path = Path(run_dir)
    if not path.exists():
        raise FileNotFoundError(f"run folder {path} does not exist")
    if not path.is_dir():
        raise _not_a_run(path, "not a folder")
    missing = [f for f in ("config.yaml", "metrics.jsonl") if not (path / f).is_file()]
    if missing:
        raise _not_a_run(path, f"no {' or '.join(missing)}")
    try:
        cfg = yaml.safe_load((path / "config.yaml").read_text()) or {}
    except yaml.YAMLError:
        raise _not_a_run(path, "config.yaml is not valid YAML") from None
    if not isinstance(cfg, dict) or "model" not in cfg or "epochs" not in cfg:
        raise _not_a_run(path, "config.yaml names no model and epochs")
    try:
        history = read_metrics(path / "metrics.jsonl")
    except ValueError:
        raise _not_a_run(path, "metrics.jsonl is not JSON lines") from None
    if not history:
        raise ValueError(f"{path} holds a run with no finished epoch yet (metrics.jsonl is empty)")
    ckpt_path = next((path / f for f in ("last.pt", "best.pt") if (path / f).is_file()), None)
    if ckpt_path is None:
        raise _not_a_run(path, "no last.pt or best.pt checkpoint")
    _, ckpt = read_checkpoint(ckpt_path)  # the metadata, in today's format whatever the file's age
    create_kwargs = dict(ckpt.get("create_kwargs") or {})
    if not ckpt.get("arch") or not create_kwargs.get("num_classes"):
        raise _not_a_run(path, f"{ckpt_path.name} is not a `senet train` checkpoint")
    name, num_classes = ckpt["arch"], int(create_kwargs.pop("num_classes"))
    info = model_info(name)
    eval_size = int(cfg.get("eval_crop") or info.input_size[1])
    # built with the SE options and other keywords of the run
    prof = profile(name, (info.input_size[0], eval_size, eval_size), num_classes=num_classes, **create_kwargs)
    dataset = _dataset_key(str(ckpt.get("dataset", info.dataset)), num_classes)
    paper = paper_figures(name)
    if dataset == "imagenet":
        p1, p5 = paper.get("imagenet_err", (None, None))
    else:
        p1, p5 = paper.get(f"{dataset}_err"), None
    last = history[-1]
    train_s = sum(float(h.get("seconds", 0.0)) for h in history)
    images = sum(float(h.get("images_per_s", 0.0)) * float(h.get("seconds", 0.0)) for h in history)
    curves = path / "curves.png"
    return RunSummary(
        path=str(path),
        model=name,
        recipe=str(cfg.get("recipe") or "-"),
        dataset=dataset,
        data_dir=str(cfg.get("data_dir", "")),
        epochs_done=int(last["epoch"]),
        epochs=int(cfg["epochs"]),
        top1_err=100.0 - float(last["val_top1"]),
        top5_err=100.0 - float(last["val_top5"]),
        best_top1_err=100.0 - max(float(h["val_top1"]) for h in history),
        paper_top1_err=p1,
        paper_top5_err=p5,
        params=prof.params,
        gmacs=prof.gmacs,
        eval_size=eval_size,
        train_seconds=train_s,
        eval_seconds=sum(float(h.get("eval_seconds", 0.0)) for h in history),
        images_per_s=images / train_s if train_s > 0 else math.nan,
        train_subset=int(cfg.get("train_subset") or 0),
        val_subset=int(cfg.get("val_subset") or 0),
        curves=str(curves) if curves.is_file() else None,
    )


def _duration(seconds: float) -> str:
    m = int(round(seconds / 60))
    return f"{m // 60}h{m % 60:02d}" if m >= 60 else (f"{m} min" if m else f"{seconds:.0f} s")


def report_markdown(runs: Sequence[RunSummary], out: str | Path | None = None) -> str:
    """The Markdown table of ``runs``; curve links are relative to the folder of ``out`` (or the cwd)."""
    base = Path(out).resolve().parent if out else Path.cwd()
    lines = [
        "# Training runs beside the paper",
        "",
        "| run | model | recipe | data | epochs | top-1 err % (best) | top-5 err % | paper top-1 err % | "
        "params (M) | GFLOPs | train time | images/s | curves |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    notes: list[str] = []
    for i, r in enumerate(runs, 1):
        epochs = f"{r.epochs_done}" if r.finished else f"{r.epochs_done} of {r.epochs}"
        data = r.dataset + (" (subset)" if r.train_subset or r.val_subset else "")
        paper = _num(r.paper_top1_err, 2) + (
            f" / {r.paper_top5_err:.2f}" if r.paper_top5_err is not None else ""
        )
        link = f"[curves]({os.path.relpath(r.curves, base)})" if r.curves else "-"
        lines.append(
            f"| {i}: `{os.path.relpath(r.path, base)}` | {r.model} | {r.recipe} | {data} | {epochs} | "
            f"{r.top1_err:.2f} ({r.best_top1_err:.2f}) | {r.top5_err:.2f} | {paper} | {r.params / 1e6:.3f} | "
            f"{r.gmacs:.3f} | {_duration(r.train_seconds)} | {r.images_per_s:.0f} | {link} |"
        )
        if not r.finished:
            notes.append(
                f"run {i} stopped after {r.epochs_done} of {r.epochs} epochs: not comparable with the paper."
            )
        if r.train_subset or r.val_subset:
            parts = [
                f"{n} {s} images per class"
                for n, s in ((r.train_subset, "training"), (r.val_subset, "test"))
                if n
            ]
            notes.append(f"run {i} used a subset: {', '.join(parts)}.")
        if "jpeg" in r.data_dir.lower():
            notes.append(
                f"run {i} used a JPEG copy of the data ({r.data_dir}): accuracies run a little below "
                "published ones."
            )
    lines += [
        "",
        "Errors are the last epoch's on the evaluation split (the best epoch's in parentheses); the "
        "paper's are from Tables 2-5 for the same network and data set (ImageNet: top-1 / top-5, single "
        "224 crop). GFLOPs = multiply-adds of one image at the evaluation size. Train time excludes "
        "evaluation; images/s is training throughput.",
    ]
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def report(run_dirs: Sequence[str | Path], out: str | Path | None = None) -> str:
    """Read every run folder (refusing folders that are not runs) and return, or write, the report."""
    if not run_dirs:
        raise ValueError("give at least one run folder (made by `senet train --out DIR`)")
    runs = [read_run(d) for d in run_dirs]
    text = report_markdown(runs, out)
    if out:
        try:
            Path(out).write_text(text)
        except OSError as e:
            raise ValueError(f"cannot write {out}: {e.strerror or e}") from None
    return text
