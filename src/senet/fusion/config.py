"""A detection run's settings: one typed :class:`DetectConfig` from a recipe in ``recipes/detect/``.

Defaults are FRN's (HuCaoFighting/FRN ``train_dsec.py``, ``retinanet/dataloader.py``; docs/detection.md):
ResNet-50 streams, RetinaNet, a 5-bin voxel grid, DSEC frames at 480 x 640, Adam 1e-4 with
ReduceLROnPlateau(patience 3) on the training loss, 60 epochs of batch 1 with 2-step accumulation,
gradient norm clipped at 0.1, frozen BN, RGB blanked with probability 0.15.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data import setting as _opt
from ..train.config import TypedConfig, check_choices, check_ranges, list_recipes, recipe_fields
from .detector import HEADS
from .events import MODALITIES, REPRESENTATIONS, check_modalities
from .modules import FUSIONS

__all__ = ["DetectConfig", "list_detect_recipes", "load_detect_config"]

DATASETS = ("dsec", "ddd17")
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("plateau", "cosine", "constant")
CHOICES = dict(head=HEADS, fusion=FUSIONS, dataset=DATASETS, representation=REPRESENTATIONS)
CHOICES.update(optimizer=OPTIMIZERS, schedule=SCHEDULES)
RANGES = {
    **dict.fromkeys("bins window_us min_size max_size epochs batch_size accum_steps".split(), ">= 1"),
    **dict.fromkeys(("lr", "tau_us"), "> 0"),
    "rgb_blank_prob": "in [0, 1)",
    **dict.fromkeys("clip_grad_norm weight_decay train_limit val_limit workers threads".split(), ">= 0"),
}


@dataclass
class DetectConfig(TypedConfig):
    """Every field of a ``senet detect train`` run (``senet detect train --help`` shows each meaning)."""

    recipe: str = _opt("", "name of the recipe the run started from (set by --recipe)")
    description: str = _opt("", "one line saying what the run is for")
    # model
    backbone: str = _opt("resnet50", "registered network of each stream (any family with feature_info)")
    head: str = _opt("retinanet", f"detection head: {', '.join(HEADS)}")
    modalities: list[str] = _opt(list(MODALITIES), "input streams: rgb, events or both (fused per stage)")
    fusion: str = _opt("se", f"fusion of the two streams at each stage: {', '.join(FUSIONS)}")
    fusion_kwargs: dict[str, Any] = _opt({}, "SE knobs of the se fusion, e.g. '{reduction: 8}'")
    weights_backbone: str = _opt("", "ImageNet weights of both streams (path or URL; '' trains from scratch)")
    norm_eval: bool = _opt(True, "BatchNorm statistics frozen in training (FRN's freeze_bn)")
    rgb_blank_prob: float = _opt(0.15, "probability a training frame's RGB input is zeroed (FRN: 0.15)")
    # data
    dataset: str = _opt("dsec", f"data layout: {', '.join(DATASETS)}")
    data_dir: str = _opt("", "data folder (DSEC-Det root with train/ test/, or a PKU-DDD17-Car folder)")
    train_split: str = _opt("train", "split trained on")
    val_split: str = _opt("test", "split evaluated every epoch")
    classes: dict[str, str] = _opt({}, "data class -> our class, e.g. '{bus: large_vehicle}' ({}: all)")
    representation: str = _opt("voxel", f"event representation: {', '.join(REPRESENTATIONS)}")
    bins: int = _opt(5, "time bins of the voxel grid (FRN: 5)")
    tau_us: float = _opt(50_000.0, "decay of the time surface, microseconds")
    window_us: int = _opt(50_000, "events before a frame that make its event input, microseconds")
    min_size: int = _opt(480, "shorter image side after resizing, pixels (DSEC 480, DDD17 260)")
    max_size: int = _opt(640, "longest image side after resizing, pixels (DSEC 640, DDD17 346)")
    train_limit: int = _opt(0, "train on the first N frames only (0: all)")
    val_limit: int = _opt(0, "evaluate on the first N frames only (0: all)")
    # optimisation
    epochs: int = _opt(60, "training epochs")
    batch_size: int = _opt(1, "frames per forward pass")
    accum_steps: int = _opt(2, "forward passes per optimiser step (FRN: 2)")
    optimizer: str = _opt("adam", f"optimiser: {', '.join(OPTIMIZERS)}")
    lr: float = _opt(1e-4, "learning rate")
    momentum: float = _opt(0.9, "SGD momentum")
    weight_decay: float = _opt(0.0, "L2 weight decay")
    clip_grad_norm: float = _opt(0.1, "gradient-norm clipping (0: off; FRN: 0.1)")
    schedule: str = _opt("plateau", f"lr schedule: {', '.join(SCHEDULES)} (plateau: on the training loss)")
    plateau_patience: int = _opt(3, "epochs without a lower training loss before lr drops 10x")
    # runtime
    seed: int = _opt(0, "random seed (initial weights, data order, RGB blanking)")
    device: str = _opt("auto", "cpu, cuda or auto (CUDA when present)")
    threads: int = _opt(0, "CPU threads (0: torch's default)")
    workers: int = _opt(2, "data-loading worker processes")
    log_interval: int = _opt(0, "training steps between progress lines (0: ~5 an epoch)")
    out: str = _opt("", "run folder (default runs/detect-<recipe>)")
    resume: bool = _opt(False, "continue the run in out from its last.pt")

    help_cmd = "senet detect train --help"

    @property
    def streams(self) -> str:
        """What the detector sees, for messages: ``rgb``, ``events`` or ``rgb+events (se fusion)``."""
        both = len(self.modalities) > 1
        return "+".join(self.modalities) + (f" ({self.fusion} fusion)" if both else "")

    def validate(self) -> None:
        check_choices(vars(self), CHOICES)
        check_modalities(self.modalities)
        check_ranges(vars(self), RANGES)
        if self.fusion_kwargs and self.fusion != "se":
            raise ValueError(f"config: fusion_kwargs are SE knobs; fusion={self.fusion!r} takes none")


def list_detect_recipes() -> dict[str, str]:
    """Shipped detection recipe name -> its one-line description."""
    return list_recipes("detect")


def load_detect_config(
    recipe: str | Path | None = None,
    config: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> DetectConfig:
    """Fields of ``recipe`` (a ``recipes/detect`` name or a YAML path), then ``config``, ``overrides``."""
    values, origins = recipe_fields(recipe, config, overrides, "detect")
    return DetectConfig.from_dict(values, source=f"recipe {recipe}" if recipe else "config", origins=origins)
