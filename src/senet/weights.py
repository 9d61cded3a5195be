"""Load weights saved by other implementations into our networks (and refuse what does not fit).

``load_weights(model, source)`` reads a path or a state dict, recognises its key layout, renames
the keys to ours and loads them only if every tensor finds its place with the right shape;
otherwise it raises :class:`WeightsMismatchError` listing what is missing, unexpected or of
another shape — a model is never half loaded.

Layouts read (the key style also tells which *computation layout* the weights were trained in):

=============  ==========================================  ====================
layout         example keys                                network layout
=============  ==========================================  ====================
``senet``      ``stem.conv1.weight``, ``layer1.0.se.fc1``  as saved
``cadene``     ``layer0.conv1.weight``, ``se_module.fc1``,  ``release`` (Cadene
               ``last_linear.weight``                      pretrainedmodels,
                                                           timm ``legacy_*``)
``timm``       ``conv1.weight``, ``layer1.0.se.fc1``,       ``torchvision``
               ``fc.weight``                                (timm ``seresnet*``,
                                                           torchvision)
=============  ==========================================  ====================

Weights of one computation layout loaded into a network built in the other would load without
complaint and compute another function (stride on the 1x1 vs the 3x3 convolution, ceil-mode vs
padded max-pool), so that case is refused with the fix (``create_model(name, layout=...)``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["WeightsMismatchError", "detect_layout", "load_weights", "read_state_dict"]

# layout -> ordered (pattern, replacement) rules that turn its keys into ours.
KEY_RULES: dict[str, list[tuple[str, str]]] = {
    "senet": [],
    "cadene": [(r"^layer0\.", "stem."), (r"\.se_module\.", ".se."), (r"^last_linear\.", "fc.")],
    "timm": [(r"^conv1\.", "stem.conv1."), (r"^bn1\.", "stem.bn1.")],
}
# The network layout (see senet.models.resnet) that a key layout implies, where it implies one.
IMPLIED_LAYOUT = {"cadene": "release", "timm": "torchvision"}

_WRAPPER_KEYS = ("state_dict", "model", "model_state", "model_state_dict", "module")
_PREFIXES = ("module.", "_orig_mod.")


class WeightsMismatchError(ValueError):
    """A checkpoint does not fit the model (keys missing / unexpected / of another shape)."""


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_weights` did: the layout it recognised and how many tensors it loaded."""

    layout: str
    loaded: int


def read_state_dict(source: str | Path | Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """A flat ``{name: tensor}`` from a path or a (possibly wrapped) checkpoint dict.

    Files are read with ``torch.load(weights_only=True)``: no code in a checkpoint is run.
    Wrappers such as ``{"state_dict": ...}`` / ``{"model": ...}`` and the ``module.`` (DDP) and
    ``_orig_mod.`` (torch.compile) prefixes are removed.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
        try:
            obj: Any = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated zip, pickle garbage, foreign format: one clear message
            raise ValueError(
                f"cannot read checkpoint {str(path)!r}: it is truncated, corrupted or not a PyTorch "
                f"checkpoint ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
            ) from e
    else:
        obj = source
    while isinstance(obj, Mapping) and not _is_tensor_dict(obj):
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            raise ValueError("the checkpoint holds no state dict (no tensors, no 'state_dict'/'model' entry)")
        obj = inner
    if not isinstance(obj, Mapping):
        raise ValueError(f"expected a state dict, got {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        for p in _PREFIXES:
            if k.startswith(p):
                k = k[len(p) :]
        out[k] = v
    return out


def _is_tensor_dict(obj: Mapping) -> bool:
    return len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def _rename(keys: list[str], rules: list[tuple[str, str]]) -> dict[str, str]:
    out = {}
    for k in keys:
        new = k
        for pat, rep in rules:
            new = re.sub(pat, rep, new)
        out[k] = new
    return out


def detect_layout(state_dict: Mapping[str, Any], model: nn.Module) -> str:
    """The key layout whose renaming fits ``model``'s parameter names best."""
    target = set(model.state_dict())
    keys = list(state_dict)

    def score(layout: str) -> int:
        return len(set(_rename(keys, KEY_RULES[layout]).values()) & target)

    return max(KEY_RULES, key=score)  # ties keep the first, "senet"


def _fmt(items: list[str], limit: int = 10) -> str:
    more = f" ... (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def load_weights(model: nn.Module, source: str | Path | Mapping[str, Any]) -> LoadReport:
    """Load ``source`` (a path or state dict in any layout above) into ``model``, all or nothing."""
    sd = read_state_dict(source)
    layout = detect_layout(sd, model)
    renamed = _rename(list(sd), KEY_RULES[layout])
    mapped = {renamed[k]: v for k, v in sd.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in mapped and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in mapped if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(mapped[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in mapped and mapped[k].shape != own[k].shape
    ]
    name = getattr(model, "model_name", type(model).__name__)
    if missing or unexpected or shapes:
        lines = [f"checkpoint (read as {layout!r} layout) does not fit {name}:"]
        if missing:
            lines.append(f"  missing in checkpoint ({len(missing)}): {_fmt(missing)}")
        if unexpected:
            lines.append(f"  unexpected in checkpoint ({len(unexpected)}): {_fmt(unexpected)}")
        if shapes:
            lines.append(f"  shape mismatch ({len(shapes)}): {_fmt(shapes, 5)}")
        lines.append(
            "  Is it the checkpoint of another architecture or of other options (num_classes, SE reduction)?"
        )
        raise WeightsMismatchError("\n".join(lines))
    implied = IMPLIED_LAYOUT.get(layout)
    built = getattr(model, "layout", None)
    if implied and built and implied != built:
        raise WeightsMismatchError(
            f"these are {layout!r}-style weights, trained in the {implied!r} layout, but {name} was built "
            f"with layout={built!r}: they would load and compute another function (stride placement, "
            f"max-pool mode). Build the model with create_model(..., layout={implied!r})."
        )
    model.load_state_dict(mapped, strict=False)
    return LoadReport(layout, len(mapped))
