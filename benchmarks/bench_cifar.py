"""Question 3: CIFAR training images/s of se_resnet20 and resnet20, and the data pipeline alone.

Model: SGD steps (forward + backward + update) on a fixed batch of 32x32 images, se_resnet20 and
resnet20 interleaved, the SE network's weights shared with the plain one where the names match.
Data: the CIFAR recipes' pipeline from ``senet.data.build_data`` on the real CIFAR-10 copy (JPEG
folder decoded once into memory; pad-and-crop, flip and normalise done per batch), iterated without
a model. The pipeline must deliver far more images/s than the model consumes, or training waits
on it.

    python benchmarks/bench_cifar.py [--batch-size 128] [--repeats 7] [--data-dir DIR] [--streamed]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

import senet
from bench_train_step import step_fn
from timing import add_threads_flag, apply_threads, interleaved, machine_line, median_ratio, print_table

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10-jpeg"


def pipeline_images_per_s(data_dir: Path, batch_size: int, batches: int, in_memory: bool) -> float:
    from senet.data import build_data

    t0 = time.perf_counter()
    data = build_data(data_dir, augment="cifar", batch_size=batch_size, in_memory=in_memory, workers=2)
    kind = "in memory" if in_memory else "streamed JPEG, 2 workers"
    print(f"  build_data ({kind}): {time.perf_counter() - t0:.1f} s")
    loader = data.train
    loader.set_epoch(0)
    rates = []
    it = iter(loader)
    next(it)  # first batch: workers start, epoch permutation and augmentation draws
    for _ in range(3):
        t0 = time.perf_counter()
        n = 0
        for _, (x, _) in zip(range(batches), it, strict=False):
            n += x.shape[0]
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--batches", type=int, default=20, help="batches per pipeline measurement")
    ap.add_argument("--streamed", action="store_true", help="also time the streamed JPEG pipeline")
    add_threads_flag(ap)
    args = ap.parse_args()
    apply_threads(args)
    torch.manual_seed(0)
    print(machine_line())
    b = args.batch_size
    se = senet.create_model("se_resnet20")
    plain = senet.create_model("resnet20")
    plain.load_state_dict({k: v for k, v in se.state_dict().items() if ".se." not in k})
    x = torch.randn(b, 3, 32, 32)
    y = torch.randint(0, 10, (b,))
    times = interleaved(
        {"se_resnet20": step_fn(se, x, y), "resnet20": step_fn(plain, x, y)},
        repeats=args.repeats,
        warmup=args.warmup,
    )
    print_table(f"CIFAR training step, batch {b}, 32x32", times, b)
    model_rate = {k: b / statistics.median(v) for k, v in times.items()}
    print(f"  se_resnet20 / resnet20 step time: {median_ratio(times, 'se_resnet20', 'resnet20'):.3f}")

    if not (args.data_dir / "train").is_dir():
        print(f"\ndata pipeline: skipped ({args.data_dir} not found; pass --data-dir)")
        return
    print(f"\nCIFAR-10 data pipeline alone ({args.data_dir}), batch {b}")
    rates = {"in memory": pipeline_images_per_s(args.data_dir, b, args.batches, True)}
    if args.streamed:
        rates["streamed JPEG"] = pipeline_images_per_s(args.data_dir, b, args.batches, False)
    for k, r in rates.items():
        print(
            f"  {k:<16} {r:>10.0f} images/s = {r / model_rate['resnet20']:.1f}x what resnet20 trains on, "
            f"{r / model_rate['se_resnet20']:.1f}x se_resnet20"
        )


if __name__ == "__main__":
    main()
