"""Feature maps of a network's stages, for detection and dense prediction backbones.

Every network that declares ``feature_info`` (a list, one entry per stage in execution order:
``{"module": child name, "num_chs": channels, "reduction": stride}``; entry 0 is the stem) can be
turned into a :class:`FeatureExtractor` with ``create_model(name, features_only=True)``. The
extractor keeps the network's own modules and parameter names (so its state dict is the
network's without the classifier) and runs them up to the last stage asked for.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .models.common import check_input

__all__ = ["FeatureExtractor"]


class FeatureExtractor(nn.Module):
    """The feature maps of stages ``out_indices`` of ``model`` (a list, shallow to deep).

    Args:
        model: a network with ``feature_info`` whose children run in registration order.
        out_indices: stages to return (0 = stem; ResNets: 1-4 = conv2_x..conv5_x at strides
            4, 8, 16, 32). Default: every stage after the stem.
        frozen_stages: freeze the stem and stages 1..k (parameters fixed, BN in eval mode), as
            detection fine-tuning does; -1 freezes nothing.
        norm_eval: keep every BatchNorm in eval mode (running statistics fixed) even in training.
    """

    def __init__(
        self,
        model: nn.Module,
        out_indices: Sequence[int] | None = None,
        *,
        frozen_stages: int = -1,
        norm_eval: bool = False,
    ) -> None:
        super().__init__()
        name = getattr(model, "model_name", type(model).__name__)
        info = getattr(model, "feature_info", None)
        if not info:
            raise ValueError(f"{name} does not declare feature_info, so features_only is not available")
        n = len(info)
        out_indices = tuple(range(1, n)) if out_indices is None else tuple(out_indices)
        if (
            not out_indices
            or any(not 0 <= i < n for i in out_indices)
            or sorted(set(out_indices)) != list(out_indices)
        ):
            raise ValueError(
                f"out_indices={out_indices} must be increasing stage indices in 0..{n - 1} for {name}"
            )
        if not -1 <= frozen_stages < n:
            raise ValueError(f"frozen_stages={frozen_stages} must be in -1..{n - 1} for {name}")
        self.model_name = name
        self.in_chans = getattr(model, "in_chans", 3)
        self.min_input_size = getattr(model, "min_input_size", 1)
        self.out_indices = out_indices
        self.channels = [info[i]["num_chs"] for i in out_indices]
        self.strides = [info[i]["reduction"] for i in out_indices]
        self.return_layers = [info[i]["module"] for i in out_indices]
        self.preprocessing = getattr(model, "preprocessing", None)
        stage_modules = [entry["module"] for entry in info]
        last = self.return_layers[-1]
        for child_name, child in model.named_children():
            self.add_module(child_name, child)
            if child_name == last:
                break
        else:
            raise ValueError(f"{name}: feature module {last!r} is not a child of the network")
        self.frozen = stage_modules[: frozen_stages + 1]
        self.norm_eval = norm_eval
        for stage in self.frozen:
            for p in getattr(self, stage).parameters():
                p.requires_grad_(False)
        self.train()

    def train(self, mode: bool = True) -> FeatureExtractor:
        super().train(mode)
        if mode:
            for stage in self.frozen:
                getattr(self, stage).eval()
            if self.norm_eval:
                for m in self.modules():
                    if isinstance(m, _BatchNorm):
                        m.eval()
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_input(x, self.in_chans, self.min_input_size, self.model_name)
        out = []
        for child_name, child in self.named_children():
            x = child(x)
            if child_name in self.return_layers:
                out.append(x)
        return out
