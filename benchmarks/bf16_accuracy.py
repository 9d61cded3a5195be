"""bf16 autocast inference on CPU: what it does to accuracy and logits, on real CIFAR-10 test images.

A CIFAR network is trained briefly with ``senet.train`` (or given with ``--checkpoint``), then the
same test images are classified in float32 and under ``torch.autocast("cpu", torch.bfloat16)``,
unfused and after ``senet.fuse_for_inference``. Printed: top-1 of each, how many predictions
change, and the logit deviation from float32 (max and mean absolute, relative to the logits' size).

Then the speed of bf16 autocast against float32 on ``--speed-model`` (default se_resnet50, fused and
channels-last, batch 16, 224x224); bf16 pays off only where the CPU has bf16 instructions
(AVX512-BF16 / AMX).

    python benchmarks/bf16_accuracy.py [--epochs 4] [--train-per-class 500] [--test-per-class 50]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import senet
from timing import add_threads_flag, apply_threads, interleaved, machine_line, median_ratio, print_table

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10-jpeg"


def trained_model(args: argparse.Namespace) -> torch.nn.Module:
    from senet.train import load_config, train

    if args.checkpoint:
        return senet.load_model(args.checkpoint).eval()
    out = Path(tempfile.mkdtemp(prefix="bf16-"))
    cfg = load_config(
        "cifar-resnet110",
        overrides={
            "model": args.model,
            "data_dir": str(args.data_dir),
            "train_subset": args.train_per_class,
            "val_subset": args.test_per_class,
            "epochs": args.epochs,
            "schedule": "cosine",
            "warmup_epochs": 0,
            "out": str(out / "run"),
            **({"threads": args.threads} if args.threads else {}),
        },
    )
    t0 = time.perf_counter()
    result = train(cfg)
    took = time.perf_counter() - t0
    print(f"trained {args.model} for {args.epochs} epochs in {took:.0f} s -> {result.out}")
    return result.model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--model", default="se_resnet20")
    ap.add_argument("--checkpoint", default=None, help="a `senet train` checkpoint instead of training")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--train-per-class", type=int, default=500)
    ap.add_argument("--test-per-class", type=int, default=50)
    ap.add_argument("--speed-model", default="se_resnet50", help="'' skips the speed comparison")
    ap.add_argument("--repeats", type=int, default=5)
    add_threads_flag(ap)
    args = ap.parse_args()
    apply_threads(args)
    print(machine_line())
    torch.manual_seed(0)
    model = trained_model(args).cpu()
    from senet.data import build_data

    data = build_data(args.data_dir, augment="cifar", val_subset=args.test_per_class, train=False)
    xs, ys = zip(*data.val, strict=True)
    x, y = torch.cat(xs), torch.cat(ys)
    fused = senet.fuse_for_inference(model)
    with torch.no_grad():
        ref = model(x)
        rows = {"float32": ref, "float32 fused": fused(x)}
        with torch.autocast("cpu", dtype=torch.bfloat16):
            rows["bf16 autocast"] = model(x).float()
            rows["bf16 autocast fused"] = fused(x).float()
    scale = ref.abs().max().item()
    print(f"\n{len(y)} CIFAR-10 test images, {args.model}; float32 logits up to {scale:.2f} in size")
    print(f"  {'variant':<22} {'top-1 %':>8} {'changed':>8} {'max |dlogit|':>13} {'mean |dlogit|':>14}")
    for k, logits in rows.items():
        top1 = (logits.argmax(1) == y).float().mean().item() * 100
        changed = (logits.argmax(1) != ref.argmax(1)).sum().item()
        d = (logits - ref).abs()
        print(f"  {k:<22} {top1:>8.2f} {changed:>8d} {d.max().item():>13.4f} {d.mean().item():>14.5f}")
    if args.speed_model:
        speed(args.speed_model, args.repeats)


def speed(name: str, repeats: int) -> None:
    net = senet.fuse_for_inference(senet.create_model(name))
    x = torch.randn(16, 3, 224, 224).contiguous(memory_format=torch.channels_last)

    def fp32() -> None:
        with torch.inference_mode():
            net(x)

    def bf16() -> None:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            net(x)

    times = interleaved({"float32": fp32, "bf16 autocast": bf16}, repeats=repeats)
    print_table(f"{name} fused + channels-last, batch 16, 224x224", times, 16)
    print(f"  bf16 / float32 throughput: {1 / median_ratio(times, 'bf16 autocast', 'float32'):.3f}x")


if __name__ == "__main__":
    main()
