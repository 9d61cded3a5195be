"""One registry of model names: name -> builder, with the metadata the rest of the package needs.

A builder is registered once for a plain network and its SE twin, with :func:`register_model` as a
decorator or, for a network class and fixed arguments, :func:`register_network`::

    register_network(("resnet50", "se_resnet50"), ResNet, Bottleneck, (3, 4, 6, 3))

The name that starts with ``se_`` (or is listed in ``se_names``) gets SE blocks by default; the
other is the plain twin. Building a network by name (SE knobs, keyword checks, weights, feature
maps) is :func:`senet.factory.create_model`'s work, above this module and :mod:`senet.weights`.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

__all__ = ["ModelInfo", "list_models", "model_info", "register_model", "register_network"]


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows of a name."""

    name: str
    builder: Callable[..., nn.Module]
    se: bool
    input_size: tuple[int, int, int]
    num_classes: int
    dataset: str
    twin: str | None

    @property
    def network_class(self) -> type[nn.Module] | None:
        hints = typing.get_type_hints(self.builder)
        cls = hints.get("return")
        return cls if inspect.isclass(cls) else None


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    *names: str,
    se_names: tuple[str, ...] = (),
    input_size: tuple[int, int, int] = (3, 224, 224),
    num_classes: int = 1000,
    dataset: str = "imagenet",
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder under one or more names (a plain network and its SE twin)."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        plain = [n for n in names if not (n.startswith("se_") or n in se_names)]
        with_se = [n for n in names if n.startswith("se_") or n in se_names]
        for n in names:
            if n in _REGISTRY:
                raise ValueError(f"model name {n!r} registered twice")
            is_se = n in with_se
            twin = (plain if is_se else with_se) or [None]
            _REGISTRY[n] = ModelInfo(n, fn, is_se, input_size, num_classes, dataset, twin[0])
        return fn

    return deco


def register_network(
    names: tuple[str, ...],
    cls: type[nn.Module],
    *args: Any,
    defaults: dict[str, Any] | None = None,
    info: dict[str, Any] | None = None,
    **fixed: Any,
) -> None:
    """Register the builder ``cls(*args, **fixed, **defaults, **kwargs)`` under ``names`` (``info``: the
    keywords of :func:`register_model`); ``kwargs`` may override ``defaults``, not ``fixed``."""

    def builder(**kwargs: Any) -> nn.Module:
        return cls(*args, **fixed, **{**(defaults or {}), **kwargs})

    builder.__annotations__["return"] = cls  # ModelInfo.network_class
    builder.__module__ = cls.__module__
    builder.__name__ = builder.__qualname__ = names[0]
    register_model(*names, **(info or {}))(builder)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern`` (e.g. ``"se_*"``), sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def model_info(name: str) -> ModelInfo:
    """The registry entry of ``name``; unknown names fail with close matches."""
    if not isinstance(name, str):
        raise TypeError(f"a model name must be a string such as 'se_resnet50', got {name!r} (`senet list`)")
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(f"Unknown model {name!r}.{hint} `senet list` shows all {len(_REGISTRY)} models.")
    return _REGISTRY[name]
