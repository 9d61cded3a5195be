"""Timing that holds on a shared machine: warm-up, then rounds in which every case runs once.

Each round runs all cases back to back (the order reversed every other round), so a burst of
load from other processes hits ours and the peer alike. Reported: the median time per case and,
for each comparison, the median over rounds of the per-round time ratio (more robust than the
ratio of medians when the load drifts during the run).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch


def add_threads_flag(ap: argparse.ArgumentParser) -> None:
    """``--threads N``: torch.set_num_threads(N); default: torch's own choice (all cores)."""
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="intra-op threads (default: torch's). On a machine shared with other jobs, 1 thread gives "
        "far steadier figures: a multi-threaded op waits for its slowest thread at every barrier",
    )


def apply_threads(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)


def machine_line() -> str:
    """One line saying where the figures come from."""
    cpu = platform.processor() or platform.machine()
    load = " ".join(f"{v:.1f}" for v in _loadavg())
    return f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu}, load average {load}"


def _loadavg() -> tuple[float, ...]:
    try:
        import os

        return os.getloadavg()
    except OSError:
        return ()


def interleaved(
    cases: dict[str, Callable[[], object]], *, repeats: int, warmup: int = 2
) -> dict[str, list[float]]:
    """Seconds per call of every case, ``repeats`` rounds after ``warmup`` calls of each."""
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in cases}
    order = list(cases)
    for r in range(repeats):
        for k in order if r % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            cases[k]()
            times[k].append(time.perf_counter() - t0)
    return times


def median_ratio(times: dict[str, list[float]], num: str, den: str) -> float:
    """Median over rounds of ``time[num] / time[den]`` (> 1: ``num`` is slower)."""
    return statistics.median(a / b for a, b in zip(times[num], times[den], strict=True))


def print_table(title: str, times: dict[str, list[float]], images: int) -> None:
    """Median ms per call and images/s of every case."""
    print(f"\n{title}")
    print(f"  {'case':<44} {'median ms':>10} {'images/s':>9}  (min..max ms)")
    for k, v in times.items():
        med = statistics.median(v)
        print(f"  {k:<44} {med * 1e3:>10.1f} {images / med:>9.1f}  ({min(v) * 1e3:.0f}..{max(v) * 1e3:.0f})")


def print_ratios(times: dict[str, list[float]], pairs: list[tuple[str, str, str]]) -> None:
    """``(label, ours, reference)``: throughput ratio ours / reference (>= 1.00: ours at least as fast)."""
    for label, ours, ref in pairs:
        print(f"  {label:<60} {1 / median_ratio(times, ours, ref):.3f}x")
