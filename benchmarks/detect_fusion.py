"""The fusion comparison of issue 17 on the simulated RGB + event set: RGB only, events only, add,
concat and SE fusion, one run each (docs/detection.md prints the table this writes).

    python benchmarks/detect_fusion.py [--out ../studies/detect] [--epochs 6] [--seeds 0 1]

Makes the simulated DSEC-Det set first (``senet detect simulate``: real CIFAR-10 objects moving over a
background, ESIM events, exact boxes, a fraction of RGB frames degraded) unless it is there. Each row is
a ``senet detect train`` run of the ``sim-se-fusion`` recipe with one field changed; a finished run is
skipped and an interrupted one resumed, so the command can be repeated after a stop. The runs use one
thread each under ``nice``. The CAFR paper's figures for DSEC / PKU-DDD17-Car are printed beside ours:
we cannot reproduce those here (the real sets are tens of GB and not reachable from this machine).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROWS = {  # name -> config fields changed from the sim-se-fusion recipe
    "RGB only": {"modalities": "rgb"},
    "events only": {"modalities": "events"},
    "add fusion": {"fusion": "add"},
    "concat fusion": {"fusion": "concat"},
    "SE fusion": {"fusion": "se"},
}
# CAFR / FRN (arXiv 2407.12582, Tables; README of HuCaoFighting/FRN): COCO mAP on DSEC and mAP50 on DDD17.
PAPER = {
    "RGB only": ("", "82.7"),
    "events only": ("", "46.5"),
    "FPN-fusion (concat)": ("24.4", "81.9"),
    "SE fusion (SENet)": ("26.2", "81.6"),
}


def _run(cmd: list[str], log: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    with open(log, "a") as f:
        done = subprocess.run(["nice", "-n", "19", *cmd], stdout=f, stderr=subprocess.STDOUT, env=env)
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed (exit {done.returncode}); see {log}")


def _finished(run: Path, epochs: int) -> bool:
    metrics = run / "metrics.jsonl"
    lines = metrics.read_text().splitlines() if metrics.is_file() else []
    return len(lines) >= epochs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT.parent / "studies" / "detect")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (one run per row each)")
    ap.add_argument("--sequences", type=int, default=12, help="simulated training sequences (test: a third)")
    ap.add_argument(
        "--cifar",
        type=Path,
        default=Path(os.environ.get("SENET_DATASETS", ROOT.parent / "shared" / "datasets")) / "cifar10-jpeg",
    )
    args = ap.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = out / "sim-dsec"
    senet = [sys.executable, "-m", "senet", "detect"]
    if not (data / "test").is_dir():
        sizes = f"--sequences {args.sequences} --height 64 --width 80 --seed 0".split()
        _run(
            [*senet, "simulate", "--out", str(data), "--cifar", str(args.cifar), *sizes], out / "simulate.log"
        )
    results: dict[str, list[dict]] = {}
    for seed in args.seeds:
        for name, fields in ROWS.items():
            run = out / name.lower().replace(" ", "-") / f"seed{seed}"
            if not _finished(run, args.epochs):
                flags = [x for k, v in fields.items() for x in (f"--{k}", v)]
                resume = ["--resume"] if (run / "last.pt").is_file() else []
                fixed = f"--epochs {args.epochs} --seed {seed} --threads 1".split()
                cmd = [
                    *senet,
                    "train",
                    "--recipe",
                    "sim-se-fusion",
                    "--data-dir",
                    str(data),
                    "--out",
                    str(run),
                ]
                _run([*cmd, *fixed, *flags, *resume], out / "runs.log")
            last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
            results.setdefault(name, []).append(last)
            print(
                f"{name} seed {seed}: mAP {100 * last['val_mAP']:.1f}  mAP50 {100 * last['val_mAP50']:.1f}",
                flush=True,
            )
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(
        f"\n| fusion (simulated set; mean of seeds {args.seeds}) | mAP | mAP50 | mAP50 per seed | s / epoch |"
    )
    print("|---|---:|---:|---|---:|")
    for name, runs in results.items():
        mean = {k: sum(100 * r[k] for r in runs) / len(runs) for k in ("val_mAP", "val_mAP50")}
        seeds = " / ".join(f"{100 * r['val_mAP50']:.1f}" for r in runs)
        secs = sum(r["seconds"] for r in runs) / len(runs)
        print(f"| {name} | {mean['val_mAP']:.1f} | {mean['val_mAP50']:.1f} | {seeds} | {secs:.0f} |")
    print("\n| CAFR paper (not reproduced here) | DSEC mAP | PKU-DDD17-Car mAP50 (test all) |")
    print("|---|---:|---:|")
    for name, (dsec, ddd) in PAPER.items():
        print(f"| {name} | {dsec or '-'} | {ddd} |")


if __name__ == "__main__":
    main()
