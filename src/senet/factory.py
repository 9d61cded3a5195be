"""Networks by name: build a registered network (:func:`create_model`), or the network of a set of
weights (:func:`load_model`).

The factory stands above the registry (:mod:`senet.models.registry`: names and what is known of
them), the weights readers (:mod:`senet.weights`: state dicts of every layout, checkpoints) and the
feature extractor (:mod:`senet.features`), and uses all three: ``create_model`` routes SE knobs
(``reduction``, ``squeeze``, ...) into an :class:`~senet.se.SEConfig`, checks every other keyword
against the network's signature, sets the preprocessing, loads weights and wraps the network for
``features_only``; mistakes become messages that name the fix. (As timm's _registry / _factory /
_builder split.)
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from .features import FeatureExtractor
from .models.registry import ModelInfo, model_info
from .preprocessing import default_preprocessing
from .se import SEConfig
from .weights import IMPLIED_LAYOUT, detect_layout, load_weights, read_checkpoint

__all__ = ["create_model", "load_model"]


def _se_config(name: str, info: ModelInfo, overrides: dict[str, Any]) -> SEConfig | None:
    """The SE configuration ``overrides`` ask for (their SE knobs are taken out of them)."""
    se_kw = {k: overrides.pop(k) for k in SEConfig.fields() if k in overrides}
    se = overrides.pop("se", info.se)
    if isinstance(se, Mapping):
        se, se_kw = True, {**se, **se_kw}
    if isinstance(se, SEConfig):
        return se.replace(**se_kw) if se_kw else se
    if se:
        return SEConfig(**se_kw)
    if se_kw:
        twin = f" (use {info.twin!r} or se=True)" if info.twin else ""
        raise ValueError(f"{name} has no SE blocks, so SE options {sorted(se_kw)} do not apply{twin}")
    return None


def _check_keywords(name: str, info: ModelInfo, overrides: dict[str, Any]) -> None:
    """Refuse keywords the network class does not take (unless it takes ``**kwargs``), listing the options."""
    if info.network_class is None:
        return
    params = inspect.signature(info.network_class.__init__).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    accepted = {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)} - {"self"}
    unknown = sorted(set(overrides) - accepted)
    if unknown:
        extra = {"se", *inspect.signature(create_model).parameters} - {"name", "overrides"}
        options = ", ".join(sorted(accepted | set(SEConfig.fields()) | extra))
        raise ValueError(f"{name} does not take {', '.join(unknown)}. Options: {options}")


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
    for key, value in (("num_classes", num_classes), ("in_chans", overrides.get("in_chans"))):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            hint = " (for features without a classifier: features_only=True)" if key == "num_classes" else ""
            raise ValueError(f"create_model({name!r}): {key}={value!r} must be a whole number >= 1{hint}")
    se_cfg = _se_config(name, info, overrides)
    _check_keywords(name, info, overrides)
    sd, meta = read_checkpoint(weights) if weights is not None else ({}, {})
    reset_classifier = num_classes is not None
    if num_classes is None:  # the checkpoint's width, else the network's default
        num_classes = (meta.get("create_kwargs") or {}).get("num_classes") or info.num_classes
    model = info.builder(se=se_cfg, num_classes=num_classes, **overrides)
    model.model_name = name  # type: ignore[assignment]
    se = se_cfg.as_dict() if se_cfg is not None else False
    model.create_kwargs = {"num_classes": num_classes, "se": se, **overrides}  # type: ignore[assignment]
    in_chans = overrides.get("in_chans", info.input_size[0])
    model.preprocessing = default_preprocessing(info.dataset, (in_chans, *info.input_size[1:]))  # type: ignore[assignment]
    if weights is not None:
        load_weights(model, {"model": sd, **meta}, reset_classifier=reset_classifier)
        # RGB weights adapted to another in_chans: the statistics they carry are adapted alike
        model.preprocessing = model.preprocessing.for_channels(in_chans)  # type: ignore[assignment]
    if features_only:
        return FeatureExtractor(model, out_indices, frozen_stages=frozen_stages, norm_eval=norm_eval)
    if out_indices is not None or frozen_stages != -1 or norm_eval:
        raise ValueError("out_indices, frozen_stages and norm_eval apply with features_only=True only")
    return model


def load_model(
    source: str | Path | Mapping[str, Any], name: str | None = None, **overrides: Any
) -> nn.Module:
    """The network of a set of weights, with the weights loaded (every command builds models here).

    Checkpoints of ``senet train``, :func:`save_weights` and ``senet convert`` record their
    architecture, so ``name`` may be omitted. Weights of other implementations (Cadene, timm,
    torchvision, a converted Caffe model) need the registered ``name``; the network is then built in
    the computation layout the weights imply (``release`` for Cadene keys, ``torchvision`` for timm
    and torchvision keys) unless ``layout=`` is given. ``overrides`` go to ``create_model``.
    """
    sd, meta = read_checkpoint(source)
    arch = meta.get("arch")
    if name is None and not arch:
        raise ValueError(
            "the checkpoint does not record its architecture (no 'arch' entry): name the network, "
            "e.g. load_model(path, 'se_resnet50') or `--model se_resnet50 --weights PATH`"
        )
    if name is not None and arch and name != arch:
        raise ValueError(f"the checkpoint holds a {arch}, not a {name}: drop the model name or fix it")
    checkpoint = {"model": sd, **meta}
    if arch:
        return create_model(arch, weights=checkpoint, **{**(meta.get("create_kwargs") or {}), **overrides})
    assert name is not None
    if "num_classes" not in overrides:  # the classifier's width, whatever the layout calls it
        heads = [v for k, v in sd.items() if re.search(r"(^|\.)(fc|last_linear|classif)\.weight$", k)]
        if len(heads) == 1 and heads[0].dim() == 2:
            overrides = {**overrides, "num_classes": heads[0].shape[0]}
    if "layout" not in overrides and not meta.get("layout"):
        probe = create_model(name, **overrides)
        implied = IMPLIED_LAYOUT.get(detect_layout(sd, probe))
        if implied and getattr(probe, "layout", implied) != implied:
            overrides = {**overrides, "layout": implied}
    return create_model(name, weights=checkpoint, **overrides)
