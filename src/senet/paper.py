"""The paper's own figures, for printing beside measured ones (never used as results).

Sources: ``shared/paper/SENET.md`` — TPAMI version of Hu et al.: Table 2 (ImageNet, GFLOPs =
multiply-adds at 224x224), Table 3 (mobile networks), Tables 4-5 (CIFAR error %), the official
release's parameter counts, and the SENet-154 results of Table 8.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PAPER", "paper_figures"]

# name -> figures; imagenet_err = (top-1, top-5) single-crop error %, cifar10_err / cifar100_err in %;
# cpu_ms = CPU inference time of one 224x224 image (Sec. 6, hardware not stated).
PAPER: dict[str, dict[str, Any]] = {
    "resnet50": {"gmacs": 3.86, "params_m": 25.6, "imagenet_err": (24.80, 7.48), "cpu_ms": 164},
    "se_resnet50": {"gmacs": 3.87, "params_m": 28.1, "imagenet_err": (23.29, 6.62), "cpu_ms": 167},
    "resnet101": {"gmacs": 7.58, "imagenet_err": (23.17, 6.52)},
    "se_resnet101": {"gmacs": 7.60, "params_m": 49.3, "imagenet_err": (22.38, 6.07)},
    "resnet152": {"gmacs": 11.30, "imagenet_err": (22.42, 6.34)},
    "se_resnet152": {"gmacs": 11.32, "params_m": 66.8, "imagenet_err": (21.57, 5.73)},
    "resnext50_32x4d": {"gmacs": 4.24, "imagenet_err": (22.11, 5.90)},
    "se_resnext50_32x4d": {"gmacs": 4.25, "params_m": 27.6, "imagenet_err": (21.10, 5.49)},
    "resnext101_32x4d": {"gmacs": 7.99, "imagenet_err": (21.18, 5.57)},
    "se_resnext101_32x4d": {"gmacs": 8.00, "params_m": 49.0, "imagenet_err": (20.70, 5.01)},
    "senet154": {"params_m": 115.1, "imagenet_err": (18.68, 4.47)},
    "vgg16": {"gmacs": 15.47, "imagenet_err": (27.02, 8.81)},
    "se_vgg16": {"gmacs": 15.48, "imagenet_err": (25.22, 7.70)},
    "bn_inception": {"gmacs": 2.03, "imagenet_err": (25.38, 7.89)},
    "se_bn_inception": {"gmacs": 2.04, "imagenet_err": (24.23, 7.14)},
    "inception_resnet_v2": {"gmacs": 11.75, "imagenet_err": (20.37, 5.21)},
    "se_inception_resnet_v2": {"gmacs": 11.76, "imagenet_err": (19.80, 4.79)},
    "mobilenet": {"gmacs": 0.569, "params_m": 4.2, "imagenet_err": (28.4, 9.4)},
    "se_mobilenet": {"gmacs": 0.572, "params_m": 4.7, "imagenet_err": (25.3, 7.7)},
    "shufflenet": {"gmacs": 0.140, "params_m": 1.8, "imagenet_err": (32.6, 12.5)},
    "se_shufflenet": {"gmacs": 0.142, "params_m": 2.4, "imagenet_err": (31.0, 11.1)},
    "resnet110": {"cifar10_err": 6.37, "cifar100_err": 26.88},
    "se_resnet110": {"cifar10_err": 5.21, "cifar100_err": 23.85},
    "resnet164": {"cifar10_err": 5.46, "cifar100_err": 24.33},
    "se_resnet164": {"cifar10_err": 4.39, "cifar100_err": 21.31},
    "wrn16_8": {"cifar10_err": 4.27, "cifar100_err": 20.43},
    "se_wrn16_8": {"cifar10_err": 3.88, "cifar100_err": 19.14},
    "shake_shake26_2x96d": {"cifar10_err": 2.56},
    "se_shake_shake26_2x96d": {"cifar10_err": 2.12},
    "shake_even29_2x4x64d": {"cifar100_err": 15.85},
    "se_shake_even29_2x4x64d": {"cifar100_err": 15.41},
}


def paper_figures(name: str) -> dict[str, Any]:
    """The paper's figures for a registered name (empty where the paper gives none)."""
    return dict(PAPER.get(name, {}))
