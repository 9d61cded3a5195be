"""Checkpoints that survive a kill at any moment and load with ``torch.load(weights_only=True)``.

:func:`save_checkpoint` writes to a temporary file in the same folder, flushes it to disk and
renames it over the target (``os.replace`` is atomic on POSIX and Windows): a reader sees the old
file or the new one, never half of one. The content is plain tensors, numbers, strings, lists and
dicts, so loading never runs pickled code.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..factory import load_model
from ..weights import atomic_save, load_file, read_checkpoint

__all__ = ["capture_rng", "load_checkpoint", "load_trained", "restore_rng", "save_checkpoint", "unwrap"]


def unwrap(model: nn.Module) -> nn.Module:
    """The plain network inside DDP and ``torch.compile`` wrappers (its keys carry no prefixes)."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


save_checkpoint = atomic_save  # write atomically: temporary file, fsync, rename
load_checkpoint = load_file  # read safely: torch.load(weights_only=True), one clear error


def load_trained(
    checkpoint: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """The network of a ``senet train`` checkpoint with its weights, in eval mode, and the
    checkpoint in today's format (``arch``, ``create_kwargs``, ``config``, ``classes``, ...)."""
    ckpt = load_checkpoint(checkpoint)
    if "config" not in ckpt or "model" not in ckpt:
        raise ValueError(f"{checkpoint} is not a `senet train` checkpoint (no 'config'/'model' entry)")
    state, meta = read_checkpoint(ckpt)
    return load_model(ckpt).to(device).eval(), {"model": state, **meta}


def capture_rng() -> dict[str, Any]:
    """Random states of torch (CPU and CUDA) and Python's ``random``."""
    version, internal, gauss = random.getstate()
    python = [version, *internal, -1 if gauss is None else gauss]
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": python}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Set the random states :func:`capture_rng` recorded."""
    torch.set_rng_state(state["torch"])
    if "python" in state:
        v = state["python"]
        random.setstate((v[0], tuple(v[1:-1]), None if v[-1] == -1 else v[-1]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
