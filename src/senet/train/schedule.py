"""Learning-rate schedules as a factor of the base lr, evaluated at every optimiser step.

One picklable callable (:class:`LRFactor`) serves ``torch.optim.lr_scheduler.LambdaLR`` for every
recipe: the paper's step decay (ImageNet: /10 every 30 epochs), multi-step decay (ResNet-110/164,
WRN), cosine (Shake-Shake), a triangle for short runs (linear warm-up, then linear decay to
``final_lr_factor``; ``onecycle``, its former name, is still read) and "divide by 10 when the
validation loss plateaus" (Table 3's mobile networks, the ablation recipe: :class:`PlateauDecay`,
torch's ``ReduceLROnPlateau`` deciding, the factor holding the result), each with an optional warm-up
(linear, or constant as ResNet-110's 0.01 warm-up). Its state is plain numbers, so the scheduler's
``state_dict`` loads with ``torch.load(weights_only=True)``.

The warm-up is capped at a fifth of the run, so a shortened recipe (``--epochs 3`` of a recipe with a
3-epoch warm-up) still anneals instead of ending at its peak lr.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau

__all__ = ["MAX_WARMUP_FRACTION", "SCHEDULES", "LRFactor", "PlateauDecay", "restore_scheduler"]

MAX_WARMUP_FRACTION = 0.2
SCHEDULES = ("step", "multistep", "cosine", "triangle", "constant", "plateau")
SCHEDULE_ALIASES = {"onecycle": "triangle"}  # old name -> today's (run folders before the rename)


class LRFactor:
    """lr / scaled_lr after ``step`` optimiser steps (``steps_per_epoch`` steps make one epoch)."""

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
        schedule = SCHEDULE_ALIASES.get(schedule, schedule)
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule={schedule!r}: expected one of {', '.join(SCHEDULES)}")
        self.schedule, self.epochs, self.steps_per_epoch = schedule, epochs, max(1, steps_per_epoch)
        self.step_size, self.milestones, self.gamma = step_size, list(milestones or []), gamma
        self.warmup_epochs = min(warmup_epochs, MAX_WARMUP_FRACTION * epochs)
        self.warmup, self.warmup_factor = warmup, warmup_factor
        self.final_lr_factor = final_lr_factor
        self.scale = 1.0  # the decays PlateauDecay made so far (schedule: plateau)

    @classmethod
    def from_config(cls, optim: Any, steps_per_epoch: int) -> LRFactor:
        """The schedule of a training config's ``optim`` part (or of a whole config: its flat fields):
        every argument but ``steps_per_epoch`` is a field of the same name."""
        names = [n for n in inspect.signature(cls).parameters if n != "steps_per_epoch"]
        return cls(steps_per_epoch=steps_per_epoch, **{n: getattr(optim, n) for n in names})

    def __call__(self, step: int) -> float:
        return self.scale * self._shape(step)

    def _shape(self, step: int) -> float:
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
        if self.schedule in ("constant", "plateau"):
            return 1.0
        p = min(1.0, (t - self.warmup_epochs) / max(1e-9, self.epochs - self.warmup_epochs))
        lo = self.final_lr_factor
        if self.schedule == "cosine":
            return lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * p))
        return lo + (1 - lo) * (1 - p)  # triangle: linear down after the (linear) warm-up


def restore_scheduler(scheduler: LambdaLR, state: dict[str, Any]) -> None:
    """Load a checkpoint's scheduler position (its step count) but keep the schedule and base lr
    built for this run: a resumed run may be given more epochs (the saved schedule, of the old
    length, would train them at the end-of-run lr) or a lower lr (after a divergence). The
    optimiser's lr is set to the current schedule's value at the saved step."""
    base_lrs = list(scheduler.base_lrs)
    scheduler.load_state_dict({**state, "lr_lambdas": [None] * len(scheduler.lr_lambdas)})
    scheduler.base_lrs = base_lrs
    lrs = [base * fn(scheduler.last_epoch) for base, fn in zip(base_lrs, scheduler.lr_lambdas, strict=True)]
    for group, base, lr in zip(scheduler.optimizer.param_groups, base_lrs, lrs, strict=True):
        group["initial_lr"], group["lr"] = base, lr
    scheduler._last_lr = lrs


class PlateauDecay:
    """``schedule: plateau``: the lr times ``gamma`` after ``patience`` epochs without a lower
    validation loss (torch's ``ReduceLROnPlateau`` decides; paper Table 3 and Sec. 7's recipe).

    The decision is kept in ``factor.scale``, so the per-step :class:`LRFactor` (and its warm-up)
    stays the one source of the lr. Its state goes into the checkpoint (:meth:`state_dict`).
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, factor: LRFactor, gamma: float, patience: int
    ) -> None:
        self.factor = factor
        # eps=0: every decision applies
        # eps=0: a decay however small applies
        self.plateau = ReduceLROnPlateau(optimizer, factor=gamma, patience=patience, eps=0.0)

    def step(self, val_loss: float) -> bool:
        """Record an epoch's validation loss; True when the lr was decayed."""
        group = self.plateau.optimizer.param_groups[0]
        before = group["lr"]
        self.plateau.step(val_loss)
        if group["lr"] < before:
            self.factor.scale *= group["lr"] / before
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"plateau": self.plateau.state_dict(), "scale": self.factor.scale}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore before :func:`restore_scheduler`, which sets the lr from the factor."""
        self.plateau.load_state_dict(state["plateau"])
        self.factor.scale = float(state["scale"])
