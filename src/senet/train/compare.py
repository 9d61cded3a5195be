"""A paired SE-vs-plain experiment: an SE network and its plain twin trained over several seeds.

``compare(...)`` (``senet compare``) trains ``OUT/<model>/seed<k>/`` for the SE network and its
plain twin (``model_info(name).twin``) for seeds ``0..K-1``. Every run is an ordinary ``senet
train`` run folder, so ``senet eval`` / ``report`` / ``excite`` work on it. The pairs are paired:
for one seed both networks see the same data order and augmentation (they follow from
``(seed, epoch)``, :func:`senet.data.epoch_generator`), and every layer they share starts from the
same weights (SE parameters are drawn from a stream of their own, :func:`senet.se.se_random_stream`).
So the paired difference ``SE - plain`` measures what the SE blocks change, and its spread over seeds
gives a t-interval (:func:`paired_summary`).

Re-running the same command skips finished runs and resumes an interrupted one from its last
checkpoint; a lock file refuses a second command on the same OUT while one runs.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .checkpoint import load_checkpoint
from .config import RESUMABLE_CHANGES, Config, canonical, load_config
from .distributed import pick_device
from .engine import resolve_amp, train
from .locks import exclusive, is_locked
from .runlog import read_metrics, save_figure

__all__ = ["RunSpec", "compare", "paired_summary", "plan_runs", "t_quantile_975", "write_summary"]

# Fields that may differ between the runs of one experiment (or between invocations of it).
_FREE = (RESUMABLE_CHANGES - {"lr"}) | {"model", "seed", "recipe"}

# Two-sided 95% quantiles of Student's t, t(0.975; df), for df = 1..30.
_T975 = (
    12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004, 2.262157, 2.228139,
    2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905, 2.109816, 2.100922, 2.093024, 2.085963,
    2.079614, 2.073873, 2.068658, 2.063899, 2.059539, 2.055529, 2.051831, 2.048407, 2.045230, 2.042272,
)  # fmt: skip


def t_quantile_975(df: int) -> float:
    """t(0.975; df), the factor of a two-sided 95% confidence interval from ``df + 1`` samples.

    Exact (6 digits) for df <= 30; above, the Cornish-Fisher expansion around the normal quantile
    (error < 1e-4 from df = 31 on).
    """
    if df < 1:
        raise ValueError(f"a t-interval needs at least 2 samples (df >= 1), got df={df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass(frozen=True)
class RunSpec:
    """One run of the experiment: a network, a seed and its folder."""

    model: str
    seed: int
    out: Path
    config: Config


def _twin(model: str) -> tuple[str, str]:
    """``(SE network, plain twin)`` for a model name, or a ValueError naming the fix."""
    from ..models import model_info

    info = model_info(model)
    if info.twin is None:
        raise ValueError(
            f"{model} has no registered twin to compare with (`senet list` shows the pairs, e.g. "
            "se_resnet56 / resnet56)"
        )
    return (model, info.twin) if info.se else (info.twin, model)


def plan_runs(
    recipe: str | None,
    model: str,
    seeds: int,
    out: str | Path,
    overrides: dict[str, Any] | None = None,
    config: str | Path | None = None,
) -> list[RunSpec]:
    """The runs of the experiment, seed by seed, the SE network before its twin."""
    if seeds < 1:
        raise ValueError(f"--seeds {seeds}: give at least 1 (3 or more for an interval)")
    se_name, plain_name = _twin(model)
    out = Path(out).expanduser()
    base = {k: v for k, v in (overrides or {}).items() if k not in ("model", "seed", "out", "resume")}
    se_cfg = load_config(recipe, config, {**base, "model": se_name})
    device = pick_device()
    plain_fields = _plain_fields(se_cfg, plain_name)
    runs = []
    for seed in range(seeds):
        for name in (se_name, plain_name):
            folder = out / name / f"seed{seed}"
            fields = {**base, **(plain_fields if name == plain_name else {})}
            cfg = load_config(recipe, config, {**fields, "model": name, "seed": seed, "out": str(folder)})
            cfg = cfg.replace(amp=resolve_amp(cfg.runtime.amp, device))  # as the run records it
            runs.append(RunSpec(name, seed, folder, cfg))
    return runs


def _plain_fields(se_cfg: Config, plain_name: str) -> dict[str, Any]:
    """The plain twin's run takes the SE run's fields less what concerns SE blocks only: SE knobs in
    ``model_kwargs`` (``init``, ``reduction``, ...) and ``freeze_params`` patterns that match SE
    parameters alone (e.g. ``*.se.*``)."""
    import torch

    from ..factory import create_model
    from ..se import SEConfig

    kwargs = {k: v for k, v in se_cfg.model_kwargs.items() if k not in SEConfig.fields()}
    with torch.device("meta"):
        names = [n for n, _ in create_model(plain_name, **kwargs).named_parameters()]
    freeze = [p for p in se_cfg.optim.freeze_params if any(fnmatch.fnmatchcase(n, p) for n in names)]
    return {"model_kwargs": kwargs, "freeze_params": freeze}


def _check_same_experiment(run: RunSpec) -> None:
    """Refuse a run folder that holds a run of another experiment (other recipe, model or field)."""
    saved_path = run.out / "config.yaml"
    if not saved_path.is_file():
        return
    saved = canonical(yaml.safe_load(saved_path.read_text()) or {})  # old names read as today's
    want = run.config.to_dict()
    wrong = [k for k in want if k in saved and k not in _FREE and saved[k] != want[k]]
    if saved.get("model") != run.model or saved.get("seed") != run.seed:
        wrong = ["model/seed", *wrong]
    if wrong:
        shown = ", ".join(f"{k} ({saved.get(k)!r} there, {want.get(k)!r} here)" for k in wrong[:3])
        raise ValueError(
            f"{run.out} holds a run of another experiment (differs in {shown}): "
            "choose another --out, or repeat that experiment's settings"
        )


def run_state(run: RunSpec) -> tuple[str, int]:
    """``("done" | "running" | "partial" | "new", epochs recorded)`` for a planned run."""
    history = read_metrics(run.out / "metrics.jsonl")
    epochs = max((h["epoch"] for h in history), default=0)
    if epochs >= run.config.optim.epochs and not _checkpoint_behind(run.out / "last.pt", epochs):
        return "done", epochs
    if is_locked(run.out / ".train.lock"):  # held by the engine while a process trains there
        return "running", epochs
    if (run.out / "last.pt").is_file():
        return "partial", epochs
    return "new", epochs


def _checkpoint_behind(path: Path, epochs: int) -> bool:
    """Whether ``path`` holds an earlier epoch than the metrics (a kill between the metrics line and
    the checkpoint: the run must resume to write it). Runs copied without checkpoints are complete."""
    if not path.is_file():
        return False
    return int(load_checkpoint(path).get("epoch", 0)) < epochs


def _experiment_lock(out: Path) -> AbstractContextManager[None]:
    """Hold ``OUT/.compare.lock``; a second command on the same OUT is refused, not interleaved."""
    out.mkdir(parents=True, exist_ok=True)
    busy = f"{out} is in use by another `senet compare` ({{holder}}); wait for it or choose another --out"
    return exclusive(out / ".compare.lock", busy)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the child gets SIGTERM when the compare process dies (kill -9 included)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _launch(run: RunSpec, resume: bool, threads: int) -> subprocess.Popen:
    """``python -m senet train --config FILE`` for one run, its output appended to ``train.log``."""
    run.out.mkdir(parents=True, exist_ok=True)
    cfg = run.config.replace(resume=resume, threads=run.config.runtime.threads or threads)
    cfg_file = run.out / "compare-config.yaml"
    cfg_file.write_text(cfg.to_yaml())
    return subprocess.Popen(
        [sys.executable, "-m", "senet", "train", "--config", str(cfg_file)],
        stdout=open(run.out / "train.log", "a"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "OMP_NUM_THREADS": str(cfg.runtime.threads)},
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )


def compare(runs: Sequence[RunSpec], out: str | Path, *, jobs: int = 1, echo: bool = True) -> dict[str, Any]:
    """Train every unfinished run of ``runs`` (``jobs`` at a time), then write and return the summary.

    With ``jobs=1`` the runs train in this process, one after the other; with more, each run is a
    ``senet train`` child process (its output in ``<run>/train.log``) with ``cores // jobs`` threads.
    """
    out = Path(out).expanduser()
    if jobs < 1:
        raise ValueError(f"--jobs {jobs}: give at least 1")
    for run in runs:
        _check_same_experiment(run)
    say = print if echo else (lambda *a, **k: None)
    with _experiment_lock(out):
        todo = []
        for run in runs:
            state, epochs = run_state(run)
            if state == "done":
                say(f"{run.model} seed {run.seed}: finished ({epochs} epochs), skipped")
            else:
                todo.append((run, state in ("partial", "running")))
        if jobs == 1:
            for run, resume in todo:
                say(f"{run.model} seed {run.seed}: {'resuming' if resume else 'training'} -> {run.out}")
                train(run.config.replace(resume=resume))
        else:
            _run_parallel(todo, jobs, say)
        return write_summary(out, runs)


def _run_parallel(todo: list[tuple[RunSpec, bool]], jobs: int, say: Any) -> None:
    threads = max(1, (os.cpu_count() or 1) // jobs)
    running: list[tuple[RunSpec, subprocess.Popen]] = []
    failed: list[str] = []
    pending = list(todo)
    try:
        while pending or running:
            while pending and len(running) < jobs:
                run, resume = pending.pop(0)
                say(f"{run.model} seed {run.seed}: {'resuming' if resume else 'training'} -> {run.out}")
                running.append((run, _launch(run, resume, threads)))
            run, proc = running.pop(_wait_any(running))
            if proc.returncode != 0:
                failed.append(f"{run.out} (exit {proc.returncode}; see its train.log)")
    finally:
        for _, proc in running:
            proc.terminate()
        for _, proc in running:
            proc.wait()
    if failed:
        raise RunsFailed("runs failed: " + "; ".join(failed))


class RunsFailed(RuntimeError):
    """Some runs of ``senet compare --jobs N`` exited with an error (each named with its log)."""


def _wait_any(running: list[tuple[RunSpec, subprocess.Popen]]) -> int:
    while True:
        for i, (_, proc) in enumerate(running):
            if proc.poll() is not None:
                return i
        time.sleep(1.0)


def paired_summary(se: Sequence[float], plain: Sequence[float]) -> dict[str, Any]:
    """Mean and sample std of both, and the paired difference ``se - plain`` with its 95% t-interval.

    The interval is ``mean(d) +- t(0.975; n-1) * std(d) / sqrt(n)`` over the n paired differences
    (``None`` with fewer than two pairs).
    """
    if len(se) != len(plain):
        raise ValueError(f"paired summary needs as many SE as plain figures ({len(se)} vs {len(plain)})")
    n = len(se)
    diffs = [a - b for a, b in zip(se, plain, strict=True)]

    def stats(v: Sequence[float]) -> dict[str, float | None]:
        return {
            "mean": statistics.fmean(v) if v else None,
            "std": statistics.stdev(v) if len(v) > 1 else None,
        }

    d = stats(diffs)
    ci = None
    if n > 1:
        half = t_quantile_975(n - 1) * d["std"] / math.sqrt(n)
        ci = [d["mean"] - half, d["mean"] + half]
    return {"n": n, "se": stats(se), "plain": stats(plain), "diff": {**d, "values": diffs, "ci95": ci}}


def _run_figures(run: RunSpec) -> dict[str, Any]:
    history = read_metrics(run.out / "metrics.jsonl")
    state, epochs = run_state(run)
    final = next((h for h in history if h["epoch"] == run.config.optim.epochs), None)
    return {
        "model": run.model,
        "seed": run.seed,
        "state": state,
        "epochs": epochs,
        "top1": final["val_top1"] if final else None,
        "top5": final["val_top5"] if final else None,
        "train_seconds": sum(h["seconds"] for h in history),
        "images_per_s": statistics.median(h["images_per_s"] for h in history) if history else None,
        "curve": [(h["epoch"], h["val_top1"]) for h in history],
    }


def write_summary(out: str | Path, runs: Sequence[RunSpec]) -> dict[str, Any]:
    """Per-seed figures, mean +- std, the paired difference with its interval, the cost, the curves.

    Written to ``OUT/compare.json``, ``OUT/compare.md`` and ``OUT/compare.png``; only seeds whose
    two runs both finished enter the statistics.
    """
    out = Path(out).expanduser()
    figs = [_run_figures(r) for r in runs]
    se_name, plain_name = runs[0].model, runs[1].model
    by = {(f["model"], f["seed"]): f for f in figs}
    pairs = {s: (by[(se_name, s)], by[(plain_name, s)]) for s in sorted({r.seed for r in runs})}
    pairs = {s: (a, b) for s, (a, b) in pairs.items() if a["top1"] is not None and b["top1"] is not None}
    stats = paired_summary([a["top1"] for a, _ in pairs.values()], [b["top1"] for _, b in pairs.values()])
    ratios = [a["train_seconds"] / b["train_seconds"] for a, b in pairs.values()]
    cfg = runs[0].config
    summary = {
        "se_model": se_name,
        "plain_model": plain_name,
        "recipe": cfg.recipe,
        "epochs": cfg.optim.epochs,
        "config": {k: v for k, v in cfg.to_dict().items() if k not in _FREE},
        "paired_seeds": list(pairs),
        "top1": stats,
        "time_ratio": {"per_seed": ratios, "median": statistics.median(ratios) if ratios else None},
        "runs": figs,
    }
    (out / "compare.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "compare.md").write_text(summary_markdown(summary))
    if any(f["curve"] for f in figs):
        plot_compare(summary, out / "compare.png")
    return summary


def _pm(s: dict[str, Any]) -> str:
    if s["mean"] is None:
        return "-"
    return f"{s['mean']:.2f}" + (f" +- {s['std']:.2f}" if s["std"] is not None else "")


def summary_markdown(summary: dict[str, Any]) -> str:
    """The summary as Markdown: per-seed table, means, paired difference, cost."""
    se, plain = summary["se_model"], summary["plain_model"]
    by = {(f["model"], f["seed"]): f for f in summary["runs"]}
    seeds = sorted({f["seed"] for f in summary["runs"]})

    def cell(f: dict[str, Any]) -> str:
        if f["top1"] is not None:
            return f"{f['top1']:.2f}"
        return f"({f['state']}, epoch {f['epochs']}/{summary['epochs']})"

    lines = [
        f"# {se} vs {plain}: paired comparison ({summary['recipe'] or 'config'}, {summary['epochs']} epochs)",
        "",
        f"| seed | {se} top-1 | {plain} top-1 | difference | time {se} / {plain} |",
        "|---|---|---|---|---|",
    ]
    for s in seeds:
        a, b = by[(se, s)], by[(plain, s)]
        both = a["top1"] is not None and b["top1"] is not None
        diff = f"{a['top1'] - b['top1']:+.2f}" if both else "-"
        ratio = f"{a['train_seconds'] / b['train_seconds']:.3f}" if both else "-"
        lines.append(f"| {s} | {cell(a)} | {cell(b)} | {diff} | {ratio} |")
    st = summary["top1"]
    lines += ["", f"Paired seeds: {st['n']}."]
    if st["n"]:
        lines.append(f"Top-1 (%), mean +- std: {se} {_pm(st['se'])}, {plain} {_pm(st['plain'])}.")
        d = st["diff"]
        text = f"Paired difference {se} - {plain}: {_pm(d)} points"
        if d["ci95"] is not None:
            lo, hi = d["ci95"]
            verdict = (
                "the interval includes 0: no difference shown at this sample size"
                if lo <= 0 <= hi
                else ("SE better" if lo > 0 else "SE worse") + " (the interval excludes 0)"
            )
            text += f", 95% t-interval [{lo:+.2f}, {hi:+.2f}] ({verdict})"
        lines.append(text + ".")
        tr = summary["time_ratio"]
        lines.append(f"Training time {se} / {plain} (same runs): median {tr['median']:.3f}.")
    return "\n".join(lines) + "\n"


def plot_compare(summary: dict[str, Any], path: str | Path) -> None:
    """Validation top-1 per epoch: mean line and min-max band over seeds, one colour per network."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for model, colour in ((summary["se_model"], "tab:red"), (summary["plain_model"], "tab:blue")):
        per_epoch: dict[int, list[float]] = {}
        for f in summary["runs"]:
            if f["model"] == model:
                for epoch, top1 in f["curve"]:
                    per_epoch.setdefault(epoch, []).append(top1)
        if not per_epoch:
            continue
        ep = sorted(per_epoch)
        mean = [statistics.fmean(per_epoch[e]) for e in ep]
        ax.plot(ep, mean, "o-", color=colour, label=f"{model} (mean of {max(map(len, per_epoch.values()))})")
        ax.fill_between(
            ep, [min(per_epoch[e]) for e in ep], [max(per_epoch[e]) for e in ep], color=colour, alpha=0.2
        )
    ax.set(
        xlabel="epoch",
        ylabel="validation top-1 (%)",
        title="SE vs plain: validation top-1 (band: min-max over seeds)",
    )
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)
