"""Learning-rate schedules as a factor of the base lr, evaluated at every optimiser step.

One picklable callable (:class:`LRFactor`) serves ``torch.optim.lr_scheduler.LambdaLR`` for every
recipe: the paper's step decay (ImageNet: /10 every 30 epochs), multi-step decay (ResNet-110/164,
WRN), cosine (Shake-Shake) and a one-cycle triangle for short runs, each with an optional warm-up
(linear, or constant as ResNet-110's 0.01 warm-up). Its state is plain numbers, so the scheduler's
``state_dict`` loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math

__all__ = ["LRFactor"]


class LRFactor:
    """lr / base_lr after ``step`` optimiser steps (``steps_per_epoch`` steps make one epoch)."""

    def __init__(
        self,
        schedule: str,
        epochs: int,
        steps_per_epoch: int,
        *,
        step_size: int = 30,
        milestones: list[int] | None = None,
        gamma: float = 0.1,
        warmup_epochs: float = 0.0,
        warmup: str = "linear",
        warmup_factor: float = 0.1,
        final_lr_factor: float = 0.0,
    ) -> None:
        self.schedule, self.epochs, self.steps_per_epoch = schedule, epochs, max(1, steps_per_epoch)
        self.step_size, self.milestones, self.gamma = step_size, list(milestones or []), gamma
        self.warmup_epochs, self.warmup, self.warmup_factor = warmup_epochs, warmup, warmup_factor
        self.final_lr_factor = final_lr_factor

    def __call__(self, step: int) -> float:
        t = step / self.steps_per_epoch  # epochs done, as a float
        if t < self.warmup_epochs:
            if self.warmup == "constant":
                return self.warmup_factor
            return self.warmup_factor + (1 - self.warmup_factor) * t / self.warmup_epochs
        done = int(t + 1e-9)
        if self.schedule == "step":
            return self.gamma ** (done // self.step_size)
        if self.schedule == "multistep":
            return self.gamma ** sum(done >= m for m in self.milestones)
        if self.schedule == "constant":
            return 1.0
        p = min(1.0, (t - self.warmup_epochs) / max(1e-9, self.epochs - self.warmup_epochs))
        lo = self.final_lr_factor
        if self.schedule == "cosine":
            return lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * p))
        return lo + (1 - lo) * (1 - p)  # onecycle: linear down after the (linear) warm-up
