"""Issue 11: the training speed that makes a paired SE-vs-plain study affordable, in one run.

Every case is an SGD step (forward + backward + update, momentum 0.9, weight decay) on a fixed batch,
cases interleaved round by round (timing.py), SE weights shared with the plain twin where names match.

1. Main job (``cifar10-quick``: se_resnet20, batch 128): the step as the recipe ran it before issue 11
   (NCHW, SE as the generic chain mean / mul / add / ReLU -- forced here by a forward hook on every SE
   block, which takes that path) against the step as it runs now (channels-last from the recipe, the
   fused SE unit ``SEBlock.scale_add_relu``). Printed: the speed-up (target >= 1.6).
2. SE training-step overhead, SE / plain time: se_resnet56 / resnet56 at batch 128 (32x32) and
   se_resnet50 / resnet50 at batch 16 (224x224), float32, and bf16 autocast with ``--bf16`` or where
   the CPU computes bf16 natively (target <= 1.10).
3. SE inference overhead, se_resnet50 / resnet50 at batch 1, 8, 16, eval and fused (bench_se_overhead;
   target <= 1.03; the paper's CPU figure: 1.018).
4. The data pipeline alone (in memory; ``--streamed`` adds the JPEG-streaming one): it must deliver far
   more images/s than the model consumes.

    python benchmarks/bench_cifar.py [--repeats 5] [--threads N] [--bf16] [--no-r50] [--no-inference]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn

import senet
from bench_se_overhead import inference_overhead
from senet.train.engine import native_bf16
from timing import add_threads_flag, apply_threads, interleaved, machine_line, median_ratio, print_table

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10-jpeg"


def step_fn(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, bf16: bool = False, channels_last: bool = False
) -> Callable[[], None]:
    """One SGD step of ``model`` on ``(x, y)`` as the training engine runs it."""
    model.train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4, nesterov=True)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
        with ctx:
            loss = loss_fn(model(x).float(), y)
        loss.backward()
        opt.step()

    return step


def twins(name: str, **kwargs) -> tuple[nn.Module, nn.Module]:
    """The SE network and its plain twin with the same weights in every shared layer."""
    se = senet.create_model(name, **kwargs)
    plain = senet.create_model(senet.model_info(name).twin, **kwargs)
    plain.load_state_dict({k: v for k, v in se.state_dict().items() if k in plain.state_dict()})
    return se, plain


def generic_se(model: nn.Module) -> nn.Module:
    """Make every SE block take the generic chain (the path before issue 11): a forward hook does."""
    for m in model.modules():
        if isinstance(m, senet.SEBlock):
            m.register_forward_hook(lambda *a: None)
    return model


def main_job_speedup(repeats: int, warmup: int) -> float:
    b = 128
    x, y = torch.randn(b, 3, 32, 32), torch.randint(0, 10, (b,))
    se = senet.create_model("se_resnet20", num_classes=10)
    before = generic_se(senet.create_model("se_resnet20", num_classes=10))
    before.load_state_dict(se.state_dict())
    cases = {
        "se_resnet20 before (NCHW, generic SE)": step_fn(before, x, y),
        "se_resnet20 now (recipe: channels-last, fused SE)": step_fn(se, x, y, channels_last=True),
    }
    times = interleaved(cases, repeats=repeats, warmup=warmup)
    print_table(f"1. main job training step (cifar10-quick, batch {b})", times, b)
    speedup = median_ratio(times, *cases)
    print(f"  main-job speed-up now / before: {speedup:.3f}x  (target >= 1.6)")
    return speedup


def training_overhead(name: str, batch: int, size: int, bf16: bool, repeats: int, warmup: int) -> float:
    se, plain = twins(name, num_classes=10)
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 10, (batch,))
    label = "bf16 autocast" if bf16 else "float32"
    cases = {
        f"{name} ({label}, CL)": step_fn(se, x, y, bf16=bf16, channels_last=True),
        f"{plain_name(name)} ({label}, CL)": step_fn(plain, x, y, bf16=bf16, channels_last=True),
    }
    times = interleaved(cases, repeats=repeats, warmup=warmup)
    print_table(f"2. SE training-step overhead: batch {batch}, {size}x{size}, {label}", times, batch)
    r = median_ratio(times, *cases)
    print(f"  {name} / {plain_name(name)} step time: {r:.3f}  (target <= 1.10)")
    return r


def plain_name(name: str) -> str:
    return senet.model_info(name).twin or name


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
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="also time bf16 autocast where it is not native")
    ap.add_argument("--no-r50", action="store_true", help="skip se_resnet50 / resnet50 at 224 (slowest part)")
    ap.add_argument("--no-inference", action="store_true", help="skip the inference overhead (section 3)")
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--batches", type=int, default=20, help="batches per pipeline measurement")
    ap.add_argument("--streamed", action="store_true", help="also time the streamed JPEG pipeline")
    add_threads_flag(ap)
    args = ap.parse_args()
    apply_threads(args)
    torch.manual_seed(0)
    print(machine_line())
    native = native_bf16(torch.device("cpu"))
    print(f"bf16: {'native on this CPU' if native else 'not native on this CPU (emulated)'}")
    summary = [("main-job speed-up (>= 1.6)", main_job_speedup(args.repeats, args.warmup))]
    precisions = [False] + ([True] if args.bf16 or native else [])
    for bf16 in precisions:
        r = training_overhead("se_resnet56", 128, 32, bf16, args.repeats, args.warmup)
        summary.append((f"train se_resnet56/resnet56 {'bf16' if bf16 else 'fp32'} (<= 1.10)", r))
        if not args.no_r50:
            r = training_overhead("se_resnet50", 16, 224, bf16, args.repeats, args.warmup)
            summary.append((f"train se_resnet50/resnet50 {'bf16' if bf16 else 'fp32'} (<= 1.10)", r))
    if not args.no_inference:
        for b, variant, r in inference_overhead([1, 8, 16], args.repeats, args.warmup, "release"):
            summary.append((f"inference se_resnet50/resnet50 batch {b} {variant} (<= 1.03)", r))
    print("\nsummary")
    for label, value in summary:
        print(f"  {label:<58} {value:.3f}")

    if not (args.data_dir / "train").is_dir():
        print(f"\ndata pipeline: skipped ({args.data_dir} not found; pass --data-dir)")
        return
    print(f"\n4. CIFAR-10 data pipeline alone ({args.data_dir}), batch 128")
    rates = {"in memory": pipeline_images_per_s(args.data_dir, 128, args.batches, True)}
    if args.streamed:
        rates["streamed JPEG"] = pipeline_images_per_s(args.data_dir, 128, args.batches, False)
    for k, r in rates.items():
        print(f"  {k:<16} {r:>10.0f} images/s")


if __name__ == "__main__":
    main()
