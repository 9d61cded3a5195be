"""Feature maps of a network's stages, for detection and dense prediction backbones.

Every network of the registry declares ``feature_info`` (a list, one
:class:`~senet.models.common.FeatureInfo` per stage in execution order: ``{"module": path,
"num_chs": channels, "reduction": stride, "stage": the family's stage number}``; entry 0 is the
stem), so each can be turned into a :class:`FeatureExtractor` with
``create_model(name, features_only=True)``. ``module`` is a child of the network or a dotted path
through ``nn.Sequential`` children (VGG's ``stage1.conv2``, BN-Inception's ``blocks.inception_3b``).
The extractor keeps the network's own modules and parameter names (so its state dict is the
network's without the classifier and the layers after the deepest stage asked for) and runs them
up to that stage.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .models.common import check_input

__all__ = ["FeatureExtractor"]


def _units(module: nn.Module, containers: set[str], prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The modules that run one after the other in ``module``, in order: its children, with the
    ``containers`` (paths of ``nn.Sequential`` children holding feature modules) opened up."""
    out: list[tuple[str, nn.Module]] = []
    for child_name, child in module.named_children():
        path = prefix + child_name
        if path in containers:
            out += _units(child, containers, path + ".")
        else:
            out.append((path, child))
    return out


class FeatureExtractor(nn.Module):
    """The feature maps of stages ``out_indices`` of ``model`` (a list, shallow to deep).

    Args:
        model: a network with ``feature_info`` whose children run in registration order.
        out_indices: stages to return (0 = stem; ResNets: 1-4 = conv2_x..conv5_x at strides
            4, 8, 16, 32). Default: every stage after the stem.
        frozen_stages: freeze the stem and stages 1..k (parameters fixed, BN in eval mode), as
            detection fine-tuning does; -1 freezes nothing.
        norm_eval: keep every BatchNorm in eval mode (running statistics fixed) even in training.

    ``feature_info``, ``channels``, ``strides`` and ``return_layers`` describe the returned maps.
    Containers on the way to a dotted feature module are rebuilt as plain ``nn.Sequential`` holding
    the same modules under the same names, cut after the deepest module asked for.
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
        # increasing and within 0..n-1: what is left after sorting the ones in range
        if not out_indices or list(out_indices) != sorted(set(out_indices) & set(range(n))):
            raise ValueError(
                f"out_indices={out_indices} must be increasing stage indices in 0..{n - 1} for {name}"
            )
        if not -1 <= frozen_stages < n:
            raise ValueError(f"frozen_stages={frozen_stages} must be in -1..{n - 1} for {name}")
        self.model_name = name
        self.in_chans = getattr(model, "in_chans", 3)
        self.min_input_size = getattr(model, "min_input_size", 1)
        self.out_indices = out_indices
        self.feature_info = [dict(info[i]) for i in out_indices]
        self.channels = [info[i]["num_chs"] for i in out_indices]
        self.strides = [info[i]["reduction"] for i in out_indices]
        self.return_layers = [info[i]["module"] for i in out_indices]
        self.preprocessing = getattr(model, "preprocessing", None)
        modules = [entry["module"] for entry in info]
        # every dotted prefix of a feature module's path: containers to open up
        containers = {m.rsplit(".", k)[0] for m in modules for k in range(1, m.count(".") + 1)}
        for path in sorted(containers | set(modules)):
            try:
                sub = model.get_submodule(path)
            except AttributeError:
                raise ValueError(f"{name}: feature module {path!r} is not a module of the network") from None
            if path in containers and type(sub).forward is not nn.Sequential.forward:
                raise ValueError(f"{name}: feature modules lie inside {path!r}, not an nn.Sequential")
        units = _units(model, containers)
        ends = []  # per feature_info entry: index of the last unit computing its module's output
        for m in modules:
            inside = [i for i, (path, _) in enumerate(units) if path == m or path.startswith(m + ".")]
            if not inside:
                raise ValueError(f"{name}: feature module {m!r} runs no module of the network")
            if ends and inside[-1] < ends[-1]:
                raise ValueError(f"{name}: feature_info is not in execution order at {m!r}")
            ends.append(inside[-1])
        kept = units[: ends[out_indices[-1]] + 1]
        for path, module in kept:
            *parents, leaf = path.split(".")
            parent: nn.Module = self
            for p in parents:
                if p not in parent._modules:
                    parent.add_module(p, nn.Sequential())
                parent = parent._modules[p]  # type: ignore[assignment]
            parent.add_module(leaf, module)
        self._units = [path for path, _ in kept]
        self._taps = [ends[i] for i in out_indices]
        self.frozen = self._units[: ends[frozen_stages] + 1] if frozen_stages >= 0 else []
        self.norm_eval = norm_eval
        for stage in self.frozen:
            self.get_submodule(stage).requires_grad_(False)
        self.train()

    def train(self, mode: bool = True) -> FeatureExtractor:
        super().train(mode)
        if mode:
            for stage in self.frozen:
                self.get_submodule(stage).eval()
            if self.norm_eval:
                for m in self.modules():
                    if isinstance(m, _BatchNorm):
                        m.eval()
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_input(x, self.in_chans, self.min_input_size, self.model_name)
        out: list[torch.Tensor] = []
        for i, path in enumerate(self._units):
            x = self.get_submodule(path)(x)
            while len(out) < len(self._taps) and self._taps[len(out)] == i:
                out.append(x)
        return out
