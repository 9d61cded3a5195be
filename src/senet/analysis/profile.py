"""Parameter and multiply-add counts, measured from the network itself (never a table of constants).

Multiply-adds are what the paper calls FLOPs ("GFLOPs" in Tables 2-3 count multiply-adds of one
224x224 forward pass). They are counted with ``torch.utils.flop_counter.FlopCounterMode``, which
counts convolutions and matrix products (2 FLOPs per multiply-add), i.e. the layers the paper's
figures count; pooling, batch norm, activations and the SE scaling are not included.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..se import SEBlock

__all__ = ["Profile", "profile"]


@dataclass(frozen=True)
class Profile:
    """Cost of one network at one input size (batch 1)."""

    name: str
    input_size: tuple[int, int, int]
    params: int
    se_params: int
    macs: int

    @property
    def params_m(self) -> float:
        return self.params / 1e6

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "params_m": self.params_m, "gmacs": self.gmacs}


def count_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds of ``model(x)`` as counted by torch's FlopCounterMode (FLOPs / 2)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


def profile(
    model_or_name: nn.Module | str,
    input_size: tuple[int, int, int] | None = None,
    **create_kwargs: Any,
) -> Profile:
    """Parameters and multiply-adds of a network for one image of ``input_size`` (C, H, W).

    A name is built on the ``meta`` device (no memory, no arithmetic), so profiling even
    SENet-154 is instant; ``create_kwargs`` go to ``create_model``. ``input_size`` defaults to the
    network's native size from the registry (224x224 for ImageNet networks, 32x32 for CIFAR).
    """
    from ..models import create_model, model_info

    if isinstance(model_or_name, str):
        name = model_or_name
        if input_size is None:
            input_size = model_info(name).input_size
        with torch.device("meta"):
            model = create_model(name, **create_kwargs)
    else:
        model = model_or_name
        name = getattr(model, "model_name", type(model).__name__)
        if input_size is None:
            in_chans = getattr(model, "in_chans", 3)
            input_size = (in_chans, 224, 224)
    params = sum(p.numel() for p in model.parameters())
    se_params = sum(p.numel() for m in model.modules() if isinstance(m, SEBlock) for p in m.parameters())
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        macs = count_macs(model, torch.zeros(1, *input_size, device=device))
    finally:
        model.train(was_training)
    return Profile(name, tuple(input_size), params, se_params, macs)
