"""Question 1: CPU inference throughput, ours vs timm / torchvision, same weights, same input.

Pairs (ours built in the torchvision layout, which is the function timm's and torchvision's
networks compute): se_resnet50 vs timm seresnet50, se_resnext50_32x4d vs timm seresnext50_32x4d,
resnet50 vs torchvision resnet50. The peer's freshly initialised weights are loaded into ours with
``senet.load_weights`` and the logits are checked to agree before timing.

Each pair is timed at each batch size in NCHW and channels-last, plus ours after
``senet.fuse_for_inference`` (BN folded, channels-last, convolution weights prepacked for oneDNN)
and after ``fuse_for_inference(..., prepack=False)``. Ratios are throughput ours / peer.

    python benchmarks/bench_inference.py [--batch-sizes 1 16] [--repeats 7] [--pairs se_resnet50 ...]
"""

from __future__ import annotations

import argparse

import timm
import torch
import torchvision

import senet
from timing import add_threads_flag, apply_threads, interleaved, machine_line, print_ratios, print_table

PAIRS = {
    "se_resnet50": ("timm seresnet50", lambda: timm.create_model("seresnet50")),
    "se_resnext50_32x4d": ("timm seresnext50_32x4d", lambda: timm.create_model("seresnext50_32x4d")),
    "resnet50": ("torchvision resnet50", lambda: torchvision.models.resnet50()),
}


def build_pair(name: str) -> tuple[torch.nn.Module, torch.nn.Module, str]:
    peer_label, make_peer = PAIRS[name]
    peer = make_peer().eval()
    ours = senet.create_model(name, layout="torchvision").eval()
    senet.load_weights(ours, peer.state_dict())
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        diff = (ours(x) - peer(x)).abs().max().item()
    if diff > 1e-4:
        raise SystemExit(f"{name} and {peer_label} disagree (max abs diff {diff:.2e}): not the same function")
    return ours, peer, peer_label


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--repeats", type=int, default=7, help="interleaved rounds per case (median)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    add_threads_flag(ap)
    args = ap.parse_args()
    apply_threads(args)
    torch.manual_seed(0)
    print(machine_line())
    summary: list[str] = []
    for name in args.pairs:
        ours, peer, peer_label = build_pair(name)
        fused_cl = senet.fuse_for_inference(ours, channels_last=True)
        fused_unpacked = senet.fuse_for_inference(ours, channels_last=True, prepack=False)
        ours_cl = senet.create_model(name, layout="torchvision").eval()
        ours_cl.load_state_dict(ours.state_dict())
        ours_cl.to(memory_format=torch.channels_last)
        peer_cl = PAIRS[name][1]().eval()
        peer_cl.load_state_dict(peer.state_dict())
        peer_cl.to(memory_format=torch.channels_last)
        for b in args.batch_sizes:
            x = torch.randn(b, 3, 224, 224)
            xcl = x.contiguous(memory_format=torch.channels_last)

            def run(m: torch.nn.Module, inp: torch.Tensor):  # noqa: ANN202
                def f() -> torch.Tensor:
                    with torch.inference_mode():
                        return m(inp)

                return f

            cases = {
                f"ours {name}": run(ours, x),
                peer_label: run(peer, x),
                f"ours {name} channels-last": run(ours_cl, xcl),
                f"{peer_label} channels-last": run(peer_cl, xcl),
                f"ours {name} fused + CL, not prepacked": run(fused_unpacked, xcl),
                f"ours {name} fused + channels-last": run(fused_cl, xcl),
            }
            keys = list(cases)
            times = interleaved(cases, repeats=args.repeats, warmup=args.warmup)
            print_table(f"{name} vs {peer_label}, batch {b}, 224x224, eval, inference_mode", times, b)
            pairs = [
                (f"ours / {peer_label} (NCHW)", keys[0], keys[1]),
                (f"ours / {peer_label} (channels-last)", keys[2], keys[3]),
                (
                    f"ours best (fused + channels-last) / {peer_label} best",
                    keys[5],
                    _best(times, keys[1], keys[3]),
                ),
                ("ours channels-last / ours NCHW", keys[2], keys[0]),
                ("ours fused + CL, not prepacked / ours unfused NCHW", keys[4], keys[0]),
                ("ours fused + channels-last / ours unfused NCHW (target >= 1.15)", keys[5], keys[0]),
                ("prepacked / not prepacked (both fused + channels-last)", keys[5], keys[4]),
            ]
            print("  throughput ratios (median of per-round ratios):")
            print_ratios(times, pairs)
            from timing import median_ratio

            summary.append(
                f"  {name:<20} b={b:<3} ours/peer NCHW {1 / median_ratio(times, keys[0], keys[1]):.3f}x  "
                f"channels-last {1 / median_ratio(times, keys[2], keys[3]):.3f}x  "
                f"fused+CL / unfused {1 / median_ratio(times, keys[5], keys[0]):.3f}x"
            )
    print("\nsummary (throughput ratios, > 1: ours faster)")
    print("\n".join(summary))


def _best(times: dict[str, list[float]], a: str, b: str) -> str:
    import statistics

    return a if statistics.median(times[a]) <= statistics.median(times[b]) else b


if __name__ == "__main__":
    main()
