"""cifar10-quick on the real CIFAR-10 (JPEG copy): SE-ResNet-20 against ResNet-20, accuracy and time.

    python benchmarks/train_cifar.py                       # probe speed, then train both models
    python benchmarks/train_cifar.py --probe-only          # images/s and projected epoch time only
    python benchmarks/train_cifar.py --epochs 3 --models se_resnet20

Prints, per model, the training throughput of the first few hundred steps, the projected and
measured epoch time, and the final and best test top-1. Target of issue 4: SE-ResNet-20 >= 88%
test top-1 within 15 epochs on a 2-core CPU. Report as "CIFAR-10 (JPEG copy)".
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from torch import nn

import senet
from senet.data import build_data
from senet.train import evaluate, load_config, train

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("SENET_DATASETS", REPO.parent / "shared" / "datasets")) / "cifar10-jpeg"


def probe(cfg, steps: int) -> float:
    """Training images/s of ``cfg.model`` over ``steps`` real augmented batches (after 3 warm-up steps)."""
    data = build_data(cfg.data_dir, batch_size=cfg.batch_size, cache_dir=cfg.cache_dir, seed=cfg.seed)
    model = senet.create_model(cfg.model, num_classes=len(data.classes), **cfg.model_kwargs)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=cfg.weight_decay)
    crit = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    model.train()
    n, t0 = 0, 0.0
    for i, (x, y) in enumerate(data.train):
        if i == 3:
            t0, n = time.perf_counter(), 0
        loss = crit(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += len(y)
        if i == steps + 2:
            break
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=str(DEFAULT_DATA))
    ap.add_argument("--models", nargs="+", default=["se_resnet20", "resnet20"])
    ap.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    ap.add_argument("--out", default="runs/bench")
    ap.add_argument("--probe-steps", type=int, default=100)
    ap.add_argument("--probe-only", action="store_true")
    args = ap.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    rows = []
    for name in args.models:
        over = {"data_dir": args.data_dir, "model": name, "out": f"{args.out}/{name}"}
        if args.epochs:
            over["epochs"] = args.epochs
        cfg = load_config("cifar10-quick", overrides=over)
        ips = probe(cfg, args.probe_steps)
        epoch_min = 50_000 / ips / 60
        print(
            f"{name}: {ips:.0f} training images/s over {args.probe_steps} steps of {cfg.batch_size} "
            f"-> ~{epoch_min:.1f} min per epoch, ~{epoch_min * cfg.epochs:.0f} min for {cfg.epochs} epochs",
            flush=True,
        )
        if args.probe_only:
            continue
        if Path(cfg.out, "last.pt").exists():
            cfg = cfg.replace(resume=True)
        r = train(cfg)
        secs = sum(h["seconds"] for h in r.history)
        flip = evaluate(Path(cfg.out, "last.pt"), cfg.data_dir, flip=True)["top1"]
        rows.append(
            (
                name,
                r.final["val_top1"],
                r.best_top1,
                flip,
                secs / 60,
                secs / 60 / max(1, len(r.history)),
                cfg.epochs,
            )
        )
    if rows:
        print(
            f"\n{'model':<14} {'test top-1':>10} {'best':>7} {'+flip':>7} {'train min':>10} "
            f"{'min/epoch':>10} {'epochs':>7}"
        )
        for name, top1, best, flip, mins, per_epoch, ep in rows:
            print(
                f"{name:<14} {top1:>9.2f}% {best:>6.2f}% {flip:>6.2f}% {mins:>10.1f} "
                f"{per_epoch:>10.2f} {ep:>7}"
            )
        print(
            "CIFAR-10 (JPEG copy), 10,000 test images; top-1 of the last epoch on a single 32x32 view "
            "(the target's figure); +flip: the last epoch's model averaged over each image and its mirror."
        )


if __name__ == "__main__":
    main()
