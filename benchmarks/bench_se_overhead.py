"""Question 4: what SE costs at inference on CPU -- our se_resnet50 / our resnet50, beside the paper.

Paper (Sec. 6, "Cost"): one 224x224 image on CPU, ResNet-50 164 ms vs SE-ResNet-50 167 ms, a time
ratio of 1.018. Both our networks are built in the release layout (the paper's Caffe networks),
timed at batch 1 (the paper's setting), 8 and 16, in eval mode and after ``fuse_for_inference``
(BN folded, channels-last: "fused+CL").
Ratios here are times (> 1: SE is slower); target <= 1.03.

    python benchmarks/bench_se_overhead.py [--batch-sizes 1 8 16] [--repeats 9]
"""

from __future__ import annotations

import argparse

import torch

import senet
from timing import add_threads_flag, apply_threads, interleaved, machine_line, median_ratio, print_table

PAPER_MS = {"resnet50": 164.0, "se_resnet50": 167.0}


def inference_overhead(
    batch_sizes: list[int], repeats: int, warmup: int, layout: str = "release"
) -> list[tuple[int, str, float]]:
    """``(batch, "eval" | "fused+CL", se / plain time)`` per batch size, with the timing tables printed."""
    se = senet.create_model("se_resnet50", layout=layout).eval()
    plain = senet.create_model("resnet50", layout=layout).eval()
    plain.load_state_dict({k: v for k, v in se.state_dict().items() if ".se." not in k})
    models = {
        "se_resnet50": se,
        "resnet50": plain,
        "se_resnet50 fused+CL": senet.fuse_for_inference(se),
        "resnet50 fused+CL": senet.fuse_for_inference(plain),
    }
    rows = []
    for b in batch_sizes:
        x = torch.randn(b, 3, 224, 224)

        def run(m: torch.nn.Module, x: torch.Tensor = x):  # noqa: ANN202
            def f() -> torch.Tensor:
                with torch.inference_mode():
                    return m(x)

            return f

        times = interleaved({k: run(m) for k, m in models.items()}, repeats=repeats, warmup=warmup)
        print_table(f"SE inference overhead, batch {b}, 224x224 ({layout} layout)", times, b)
        for variant in ("", " fused+CL"):
            r = median_ratio(times, f"se_resnet50{variant}", f"resnet50{variant}")
            rows.append((b, variant.strip() or "eval", r))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 16])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--layout", default="release", choices=["release", "torchvision"])
    add_threads_flag(ap)
    args = ap.parse_args()
    apply_threads(args)
    torch.manual_seed(0)
    print(machine_line())
    rows = inference_overhead(args.batch_sizes, args.repeats, args.warmup, args.layout)
    paper = PAPER_MS["se_resnet50"] / PAPER_MS["resnet50"]
    print("\nse_resnet50 / resnet50 inference time (median of per-round ratios; target <= 1.03)")
    print(f"  {'paper, batch 1 (167 ms / 164 ms)':<40} {paper:.3f}")
    for b, variant, r in rows:
        print(f"  {f'ours, batch {b}, {variant}':<40} {r:.3f}")


if __name__ == "__main__":
    main()
