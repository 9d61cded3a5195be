"""One registry of model names: name -> builder, with the metadata the rest of the package needs.

A builder is registered once for a plain network and its SE twin::

    @register_model("resnet50", "se_resnet50")
    def resnet50(**kwargs) -> ResNet:
        return ResNet(Bottleneck, (3, 4, 6, 3), **kwargs)

The name that starts with ``se_`` (or is listed in ``se_names``) gets SE blocks by default; the
other is the plain twin. ``create_model`` routes SE knobs (``reduction``, ``squeeze``, ...) into an
:class:`~senet.se.SEConfig`, checks every other keyword against the network's signature, and turns
mistakes into messages that name the fix.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..preprocessing import default_preprocessing
from ..se import SEConfig

__all__ = ["ModelInfo", "create_model", "list_models", "model_info", "register_model"]


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


def _accepted_keywords(info: ModelInfo) -> set[str] | None:
    cls = info.network_class
    if cls is None:
        return None
    params = inspect.signature(cls.__init__).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD} - {
        "self"
    }


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    weights: str | Path | Mapping[str, Any] | None = None,
    features_only: bool = False,
    out_indices: tuple[int, ...] | None = None,
    frozen_stages: int = -1,
    norm_eval: bool = False,
    **overrides: Any,
) -> nn.Module:
    """Build a registered network.

    Args:
        name: a name from :func:`list_models`.
        num_classes: classifier width; ``None`` keeps the checkpoint's (when ``weights`` records
            it) or the network's default (1000 for ImageNet networks, 10 for CIFAR networks). A
            width other than the checkpoint's re-initialises only the classifier, with a notice.
        weights: a checkpoint path, an ``http(s)://`` / ``file://`` URL (downloaded once into
            ``~/.cache/senet``; ``#sha256=<hex>`` verifies it) or a state dict, in any layout
            :func:`senet.load_weights` reads. Nothing is ever downloaded unless asked for.
        features_only: return a :class:`~senet.features.FeatureExtractor` giving the feature
            maps of the stages in ``out_indices`` (``frozen_stages`` and ``norm_eval`` as
            detection training expects) instead of the classifier.
        **overrides: SE knobs (``se=True/False``, ``reduction``, ``squeeze``, ``excitation``,
            ``bias``, ``divisor``, ``init``, ``integration``, ``position``, ``stages``) and any
            keyword of the network class (e.g. ``layout="torchvision"``, ``drop_rate``, ``in_chans``).
    """
    info = model_info(name)
    for key, value in (
        ("num_classes", num_classes),
        *((k, overrides[k]) for k in ("in_chans",) if k in overrides),
    ):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            hint = " (for features without a classifier: features_only=True)" if key == "num_classes" else ""
            raise ValueError(f"create_model({name!r}): {key}={value!r} must be a whole number >= 1{hint}")
    se_keys = set(SEConfig.fields())
    se_kw = {k: overrides.pop(k) for k in list(overrides) if k in se_keys}
    se = overrides.pop("se", info.se)
    if isinstance(se, Mapping):
        se_kw = {**se, **se_kw}
        se = True
    if isinstance(se, SEConfig):
        se_cfg: SEConfig | None = se.replace(**se_kw) if se_kw else se
    elif se:
        se_cfg = SEConfig(**se_kw)
    else:
        if se_kw:
            twin = f" (use {info.twin!r} or se=True)" if info.twin else ""
            raise ValueError(f"{name} has no SE blocks, so SE options {sorted(se_kw)} do not apply{twin}")
        se_cfg = None
    accepted = _accepted_keywords(info)
    if accepted is not None:
        unknown = sorted(set(overrides) - accepted)
        if unknown:
            extra = {
                "se",
                "num_classes",
                "weights",
                "features_only",
                "out_indices",
                "frozen_stages",
                "norm_eval",
            }
            options = ", ".join(sorted(accepted | se_keys | extra))
            raise ValueError(f"{name} does not take {', '.join(unknown)}. Options: {options}")
    checkpoint = None
    if weights is not None:
        from ..weights import read_checkpoint

        sd, meta = read_checkpoint(weights)
        checkpoint = {"model": sd, **meta}
        ckpt_classes = (meta.get("create_kwargs") or {}).get("num_classes")
    reset_classifier = num_classes is not None
    if num_classes is None:
        num_classes = ckpt_classes if checkpoint is not None and ckpt_classes else info.num_classes
    model = info.builder(se=se_cfg, num_classes=num_classes, **overrides)
    model.model_name = name  # type: ignore[assignment]
    model.create_kwargs = {  # type: ignore[assignment]
        "num_classes": num_classes,
        "se": se_cfg.as_dict() if se_cfg is not None else False,
        **overrides,
    }
    in_chans = overrides.get("in_chans", info.input_size[0])
    model.preprocessing = default_preprocessing(info.dataset, (in_chans, *info.input_size[1:]))  # type: ignore[assignment]
    if checkpoint is not None:
        from ..weights import load_weights

        load_weights(model, checkpoint, reset_classifier=reset_classifier)
    if features_only:
        from ..features import FeatureExtractor

        return FeatureExtractor(model, out_indices, frozen_stages=frozen_stages, norm_eval=norm_eval)
    if out_indices is not None or frozen_stages != -1 or norm_eval:
        raise ValueError("out_indices, frozen_stages and norm_eval apply with features_only=True only")
    return model
