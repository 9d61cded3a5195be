"""Cost of a network measured from the network itself (never a table of constants), as in Sec. 6.

* :func:`profile`: parameters and multiply-adds, what the paper calls FLOPs ("GFLOPs" in Tables
  2-3 count multiply-adds of one 224x224 forward pass), counted by ``FlopCounterMode``:
  convolutions and matrix products (2 FLOPs per multiply-add), the layers the paper counts; not
  pooling, batch norm, activations or the SE scaling.
* :func:`measure`: inference latency and throughput (median of timed forward passes after
  warm-up, with min and max) and peak memory; :func:`measure_together` alternates the timed passes
  of several networks (an SE network and its plain twin) so that their ratio survives changes in
  the load of a shared machine.

Peak memory is what one inference forward pass allocates above what was allocated before it
(activations and workspaces; not the weights, see :attr:`Timing.param_bytes`, nor the input). On
CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``. On CPU, which has no
allocator statistics (and ``tracemalloc`` does not see torch's allocations): the maximum of the
running sum, in time order, of the ``[memory]`` events (every allocation and release of torch's
CPU allocator) that ``torch.profiler`` records with ``profile_memory=True``.
"""

from __future__ import annotations

import itertools
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..devices import pick_device
from ..se import SEBlock

__all__ = [
    "Profile",
    "Timing",
    "compare",
    "format_table",
    "measure",
    "measure_together",
    "overhead_pct",
    "peak_forward_memory",
    "pick_device",
    "profile",
    "with_twins",
]


@dataclass(frozen=True)
class Profile:
    """Cost of one network at one input size (batch 1)."""

    name: str
    input_size: tuple[int, int, int]
    params: int
    se_params: int
    macs: int

    @property
    def params_m(self) -> float:
        return self.params / 1e6

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "params_m": self.params_m, "gmacs": self.gmacs}


def count_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds of ``model(x)`` as counted by torch's FlopCounterMode (FLOPs / 2)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


def _resolve(
    model_or_name: nn.Module | str, input_size: tuple[int, int, int] | None, **create_kwargs: Any
) -> tuple[nn.Module, str, tuple[int, ...]]:
    """The network (a name is built with ``create_kwargs``), its name and its input size (C, H, W):
    ``input_size``, else the registry's native size for a name, else ``in_chans`` x 224 x 224."""
    from ..factory import create_model
    from ..models import model_info

    if isinstance(model_or_name, str):
        size = input_size or model_info(model_or_name).input_size
        return create_model(model_or_name, **create_kwargs), model_or_name, tuple(size)
    name = getattr(model_or_name, "model_name", type(model_or_name).__name__)
    return model_or_name, name, tuple(input_size or (getattr(model_or_name, "in_chans", 3), 224, 224))


def profile(
    model_or_name: nn.Module | str,
    input_size: tuple[int, int, int] | None = None,
    **create_kwargs: Any,
) -> Profile:
    """Parameters and multiply-adds of a network for one image of ``input_size`` (C, H, W).

    A name is built on the ``meta`` device (no memory, no arithmetic), so profiling even
    SENet-154 is instant; ``create_kwargs`` go to ``create_model``. ``input_size`` defaults to the
    network's native size from the registry (224x224 for ImageNet networks, 32x32 for CIFAR).
    """
    with torch.device("meta") if isinstance(model_or_name, str) else nullcontext():
        model, name, size = _resolve(model_or_name, input_size, **create_kwargs)
    params = sum(p.numel() for p in model.parameters())
    se_params = sum(p.numel() for m in model.modules() if isinstance(m, SEBlock) for p in m.parameters())
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        macs = count_macs(model, torch.zeros(1, *size, device=device))
    finally:
        model.train(was_training)
    return Profile(name, size, params, se_params, macs)


@dataclass(frozen=True)
class Timing:
    """Measured inference cost of one network at one input size and batch size."""

    name: str
    input_size: tuple[int, int, int]
    device: str
    batch_size: int
    threads: int
    warmup: int
    repeats: int
    median_ms: float
    min_ms: float
    max_ms: float
    peak_mem_bytes: int
    param_bytes: int  # parameters and buffers
    mem_method: str

    @property
    def images_per_s(self) -> float:
        """Throughput at the median latency."""
        return self.batch_size * 1000.0 / self.median_ms

    @property
    def peak_mem_mb(self) -> float:
        return self.peak_mem_bytes / 2**20

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "images_per_s": self.images_per_s, "peak_mem_mb": self.peak_mem_mb}


def overhead_pct(se_value: float | None, plain_value: float | None) -> float | None:
    """Relative cost of an SE network over its plain twin, in percent (``None`` if unknown)."""
    if se_value is None or not plain_value:
        return None
    return 100.0 * (se_value - plain_value) / plain_value


# Lines the profiler's native library (kineto) prints on stderr at every start and stop.
_KINETO_LINE = re.compile(r"^(USDT|STAGE|INFO|WARNING|ERROR):\d{4}-\d\d-\d\d [\d:.]+ \d+:\d+ \w+\.cpp:\d+\]")


@contextmanager
def _without_profiler_chatter() -> Iterator[None]:
    """Drop the profiler library's own log lines from stderr (file descriptor 2), keep the rest."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [
                line
                for line in tmp.read().decode(errors="replace").splitlines()
                if not _KINETO_LINE.match(line)
            ]
            if kept:
                print("\n".join(kept), file=sys.stderr)


def peak_forward_memory(model: nn.Module, x: torch.Tensor) -> tuple[int, str]:
    """Peak bytes allocated by ``model(x)`` (inference) above what was allocated before it, and the
    method used (see the module docstring)."""
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
        torch.cuda.reset_peak_memory_stats(x.device)
        base = torch.cuda.memory_allocated(x.device)
        with torch.inference_mode():
            model(x)
        torch.cuda.synchronize(x.device)
        return torch.cuda.max_memory_allocated(x.device) - base, "torch.cuda.max_memory_allocated"
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with _without_profiler_chatter():
        with (
            torch.inference_mode(),
            torch_profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof,
        ):
            model(x)
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        if e.device_type() == torch.profiler.DeviceType.CPU:
            live += e.nbytes()
            peak = max(peak, live)
    return peak, "torch.profiler memory events"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    model_or_name: nn.Module | str,
    input_size: tuple[int, int, int] | None = None,
    *,
    batch_size: int = 1,
    device: str | torch.device | None = None,
    warmup: int = 3,
    repeats: int = 10,
    **create_kwargs: Any,
) -> Timing:
    """Latency, throughput and peak memory of inference (``eval()``, ``torch.inference_mode``).

    The network (a name is built with ``create_kwargs``) runs ``warmup`` untimed forward passes on
    a random batch of ``batch_size`` images of ``input_size`` (C, H, W), then ``repeats`` timed
    ones (CUDA is synchronised around each); the latency is their median, with min and max. The
    peak memory comes from one more forward pass (:func:`peak_forward_memory`). CPU figures depend
    on the number of threads (``torch.set_num_threads``) and on what else runs on the machine.
    """
    (timing,) = measure_together(
        [model_or_name],
        input_size,
        batch_size=batch_size,
        device=device,
        warmup=warmup,
        repeats=repeats,
        **create_kwargs,
    )
    return timing


def measure_together(
    models: Sequence[nn.Module | str],
    input_size: tuple[int, int, int] | None = None,
    *,
    batch_size: int = 1,
    device: str | torch.device | None = None,
    warmup: int = 3,
    repeats: int = 10,
    **create_kwargs: Any,
) -> list[Timing]:
    """:func:`measure` for several networks whose timed passes alternate (round robin), so that a
    change in the machine's load slows them alike and the ratio of their latencies stays meaningful."""
    if batch_size < 1 or warmup < 0 or repeats < 1:
        raise ValueError(
            f"need batch_size >= 1, warmup >= 0, repeats >= 1; got {batch_size}, {warmup}, {repeats}"
        )
    dev = pick_device(device)
    resolved = [_resolve(m, input_size, **create_kwargs) for m in models]
    modes = [net.training for net, _, _ in resolved]
    nets = [net.to(dev).eval() for net, _, _ in resolved]
    times: list[list[float]] = [[] for _ in nets]
    peaks = []
    try:
        inputs = [torch.randn(batch_size, *size, device=dev) for _, _, size in resolved]
        with torch.inference_mode():
            for i in range(warmup + repeats):
                for k, (net, x) in enumerate(zip(nets, inputs, strict=True)):
                    _sync(dev)
                    t0 = time.perf_counter()
                    net(x)
                    _sync(dev)
                    if i >= warmup:
                        times[k].append((time.perf_counter() - t0) * 1000.0)
        peaks = [peak_forward_memory(net, x) for net, x in zip(nets, inputs, strict=True)]
    finally:
        for net, mode in zip(nets, modes, strict=True):
            net.train(mode)
    run = (str(dev), batch_size, torch.get_num_threads() if dev.type == "cpu" else 0, warmup, repeats)
    return [
        Timing(name, size, *run, statistics.median(t), min(t), max(t), int(peak), _nbytes(net), method)
        for net, (_, name, size), t, (peak, method) in zip(nets, resolved, times, peaks, strict=True)
    ]


def _nbytes(net: nn.Module) -> int:
    """Bytes of the parameters and buffers."""
    return sum(t.numel() * t.element_size() for t in itertools.chain(net.parameters(), net.buffers()))


def with_twins(names: Sequence[str]) -> list[str]:
    """``names`` with each network's twin (plain <-> SE) beside it, the plain one first, no repeats."""
    from ..models import model_info

    out: list[str] = []
    for name in names:
        info = model_info(name)
        pair = [name] if info.twin is None else ([info.twin, name] if info.se else [name, info.twin])
        out += [n for n in pair if n not in out]
    return out


def compare(
    names: Sequence[str],
    input_size: int | None = None,
    *,
    timed: bool = False,
    batch_size: int = 1,
    device: str | torch.device | None = None,
    warmup: int = 3,
    repeats: int = 10,
) -> list[dict[str, Any]]:
    """One row per network (twins added, see :func:`with_twins`): counts, measurements, the paper.

    ``input_size`` is the image side (default: each network's own). SE rows carry the relative
    overhead over their plain twin (``*_overhead_pct``), measured and, where the paper gives both
    figures, the paper's (Sec. 6: +~10% parameters, +0.26% GFLOPs, CPU 164 -> 167 ms for ResNet-50).
    """
    from ..models import model_info
    from ..paper import paper_figures

    rows: dict[str, dict[str, Any]] = {}
    for name in with_twins(names):
        info = model_info(name)
        size = (info.input_size[0], input_size, input_size) if input_size else info.input_size
        paper = paper_figures(name)
        row: dict[str, Any] = {
            **profile(name, size).as_dict(),
            "twin": info.twin,
            "is_se": info.se,
            "paper_params_m": paper.get("params_m"),
            "paper_gmacs": paper.get("gmacs"),
        }
        if timed:
            row["paper_cpu_ms"] = paper.get("cpu_ms") if size[1:] == (224, 224) and batch_size == 1 else None
        rows[name] = row
    if timed:
        groups: dict[tuple[str, ...], list[str]] = {}
        for name, row in rows.items():
            pair = tuple(sorted(n for n in (name, row["twin"]) if n in rows))
            groups.setdefault(pair, []).append(name)
        for members in groups.values():
            size = rows[members[0]]["input_size"]
            timings = measure_together(
                members, size, batch_size=batch_size, device=device, warmup=warmup, repeats=repeats
            )
            for name, t in zip(members, timings, strict=True):
                rows[name].update({k: v for k, v in t.as_dict().items() if k not in ("name", "input_size")})
    for row in rows.values():
        plain = rows.get(row["twin"]) if row["is_se"] else None
        if plain is None:
            continue
        for key, value in (("params", "params"), ("macs", "macs"), ("latency", "median_ms")):
            if value in row:
                row[f"{key}_overhead_pct"] = overhead_pct(row[value], plain[value])
        for key, value in (
            ("params", "paper_params_m"),
            ("macs", "paper_gmacs"),
            ("latency", "paper_cpu_ms"),
        ):
            row[f"paper_{key}_overhead_pct"] = overhead_pct(row.get(value), plain.get(value))
    return list(rows.values())


def _num(v: float | None, digits: int) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _pct(measured: float | None, paper: float | None) -> str:
    if measured is None:
        return ""
    digits = 3 if abs(measured) < 0.1 else 2
    return f"{measured:+.{digits}f}%" + (f" ({paper:+.2f}%)" if paper is not None else "")


def format_table(rows: Sequence[dict[str, Any]], markdown: bool = False) -> str:
    """The rows of :func:`compare` as an aligned text table or a Markdown table (for a README)."""
    timed = any("median_ms" in r for r in rows)
    header = ["model", "input", "params (M)", "paper", "SE +% (paper)", "GMACs", "paper", "SE +% (paper)"]
    if timed:
        header += ["batch", "latency ms", "min-max", "SE +% (paper)", "images/s", "peak MB", "paper ms"]
    table = []
    for r in rows:
        line = [
            r["name"],
            "x".join(str(s) for s in r["input_size"][1:]),
            f"{r['params_m']:.3f}",
            _num(r["paper_params_m"], 1),
            _pct(r.get("params_overhead_pct"), r.get("paper_params_overhead_pct")),
            f"{r['gmacs']:.3f}",
            _num(r["paper_gmacs"], 3 if (r["paper_gmacs"] or 1) < 1 else 2),
            _pct(r.get("macs_overhead_pct"), r.get("paper_macs_overhead_pct")),
        ]
        if timed:
            line += [
                str(r["batch_size"]),
                f"{r['median_ms']:.2f}",
                f"{r['min_ms']:.2f}-{r['max_ms']:.2f}",
                _pct(r.get("latency_overhead_pct"), r.get("paper_latency_overhead_pct")),
                f"{r['images_per_s']:.1f}",
                f"{r['peak_mem_mb']:.1f}",
                _num(r.get("paper_cpu_ms"), 0),
            ]
        table.append(line)
    if markdown:
        out = [
            "| " + " | ".join(header) + " |",
            "|" + "|".join("---" if i < 2 else "---:" for i in range(len(header))) + "|",
        ]
        out += ["| " + " | ".join(cell or " " for cell in line) + " |" for line in table]
    else:
        widths = [max(len(h), *(len(line[i]) for line in table)) for i, h in enumerate(header)]

        def fmt(cells: list[str]) -> str:
            return "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )

        out = [fmt(header), "-" * len(fmt(header))] + [fmt(line) for line in table]
    notes = [
        "GMACs = multiply-adds (the paper's 'GFLOPs'); paper figures: Tables 2-3 and Sec. 6-7 (TPAMI).",
        "SE +%: cost of the SE network over its plain twin, measured (the paper's in parentheses).",
    ]
    if timed:
        r0 = next(r for r in rows if "median_ms" in r)
        threads = f" ({r0['threads']} torch threads)" if r0["device"] == "cpu" else ""
        notes.append(
            f"Latency: median of {r0['repeats']} timed inference passes after {r0['warmup']} warm-up "
            f"passes on {r0['device']}{threads} (min-max beside it); images/s = batch / median latency. "
            "Peak MB: memory allocated during one forward pass above weights and input "
            f"({r0['mem_method']}). Paper ms: CPU inference of one 224x224 image (Sec. 6)."
        )
    sep = "\n\n" if markdown else "\n"
    return "\n".join(out) + sep + "\n".join(("- " if markdown else "") + n for n in notes)
