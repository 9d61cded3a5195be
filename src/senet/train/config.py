"""A run's settings: one typed :class:`Config`, built from a recipe file and overrides, validated once.

A recipe is a small YAML file in ``senet/recipes/`` naming the fields it sets (``base: NAME``
starts from another recipe). :func:`load_config` reads a recipe by name or path, applies
overrides, and checks every field's name, type and value, so that a mistake stops the run with a
one-line ``ValueError`` before any data is read or any model is built.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Config", "list_recipes", "load_config", "recipe_path"]

AMPS = ("none", "bf16", "fp16", "auto")
AUGMENTS = ("cifar", "imagenet", "none")
DATASETS = ("auto", "folder", "cifar10", "cifar100")
SCHEDULES = ("step", "multistep", "cosine", "onecycle", "constant")
WARMUPS = ("linear", "constant")

# Fields a resumed run may change (everything else must match the checkpoint's config).
RESUMABLE_CHANGES = frozenset(
    {"epochs", "resume", "out", "data_dir", "workers", "threads", "cache_dir", "description"}
)


@dataclass
class Config:
    """Every setting of a training run; the recipe files set a subset of these fields."""

    recipe: str = ""
    description: str = ""
    # model
    model: str = "se_resnet20"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    # data
    data_dir: str = ""
    dataset: str = "auto"
    download: bool = False
    augment: str = "cifar"
    image_size: int = 32
    eval_crop: int = 32
    eval_resize: int = 0
    scale_min: float = 0.08
    cutout: int = 0
    mean: list[float] = field(default_factory=lambda: [0.4914, 0.4822, 0.4465])
    std: list[float] = field(default_factory=lambda: [0.2470, 0.2435, 0.2616])
    in_memory: bool = True
    cache_dir: str = "~/.cache/senet"
    train_subset: int = 0
    val_subset: int = 0
    workers: int = 2
    # optimisation
    epochs: int = 15
    batch_size: int = 128
    accum_steps: int = 1
    eval_batch_size: int = 500
    lr: float = 0.1
    lr_base_batch: int = 0
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    schedule: str = "step"
    step_size: int = 30
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    warmup: str = "linear"
    warmup_factor: float = 0.1
    final_lr_factor: float = 0.0
    label_smoothing: float = 0.0
    freeze_bn_epochs: int = 0
    freeze_params: list[str] = field(default_factory=list)
    # runtime
    amp: str = "none"
    channels_last: bool = False
    compile: bool = False
    sync_bn: bool = False
    seed: int = 0
    threads: int = 0
    out: str = ""
    resume: bool = False

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def fields(cls) -> dict[str, Any]:
        """Field name -> type annotation."""
        hints = typing.get_type_hints(cls)
        return {f.name: hints[f.name] for f in dataclasses.fields(cls)}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> Config:
        return Config.from_dict({**self.to_dict(), **changes})

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> Config:
        """Check names and types of ``values`` (one-line errors naming the field), then build."""
        known = cls.fields()
        out: dict[str, Any] = {}
        for key, value in values.items():
            name = key.replace("-", "_")
            if name not in known:
                close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
                hint = (
                    f"; did you mean {', '.join(close)}?"
                    if close
                    else "; `senet train --help` lists the fields"
                )
                raise ValueError(f"{source}: unknown field {key!r}{hint}")
            out[name] = _coerce(name, value, known[name], source)
        return cls(**out)

    def validate(self) -> None:
        """Value checks that types alone do not catch."""

        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(f"config: {msg}")

        for name, choices in (
            ("amp", AMPS),
            ("augment", AUGMENTS),
            ("dataset", DATASETS),
            ("schedule", SCHEDULES),
            ("warmup", WARMUPS),
        ):
            need(
                getattr(self, name) in choices,
                f"{name}={getattr(self, name)!r}: expected one of {', '.join(choices)}",
            )
        need(self.epochs >= 1, f"epochs={self.epochs} must be >= 1")
        need(self.batch_size >= 1, f"batch_size={self.batch_size} must be >= 1")
        need(self.accum_steps >= 1, f"accum_steps={self.accum_steps} must be >= 1")
        need(
            self.batch_size % self.accum_steps == 0,
            f"batch_size={self.batch_size} not divisible by accum_steps",
        )
        need(self.eval_batch_size >= 1, f"eval_batch_size={self.eval_batch_size} must be >= 1")
        need(self.lr > 0, f"lr={self.lr} must be > 0")
        need(self.lr_base_batch >= 0, f"lr_base_batch={self.lr_base_batch} must be >= 0 (0: no scaling)")
        need(0 <= self.momentum < 1, f"momentum={self.momentum} must be in [0, 1)")
        need(self.weight_decay >= 0, f"weight_decay={self.weight_decay} must be >= 0")
        need(0 <= self.label_smoothing < 1, f"label_smoothing={self.label_smoothing} must be in [0, 1)")
        need(0 < self.gamma <= 1, f"gamma={self.gamma} must be in (0, 1]")
        need(self.step_size >= 1, f"step_size={self.step_size} must be >= 1")
        need(all(m >= 1 for m in self.milestones), f"milestones={self.milestones} must be epochs >= 1")
        need(self.warmup_epochs >= 0, f"warmup_epochs={self.warmup_epochs} must be >= 0")
        need(0 < self.warmup_factor <= 1, f"warmup_factor={self.warmup_factor} must be in (0, 1]")
        need(0 <= self.final_lr_factor <= 1, f"final_lr_factor={self.final_lr_factor} must be in [0, 1]")
        need(0 <= self.scale_min <= 1, f"scale_min={self.scale_min} must be in [0, 1]")
        need(self.cutout >= 0, f"cutout={self.cutout} must be >= 0 (0: off)")
        need(self.image_size >= 1 and self.eval_crop >= 1, "image_size and eval_crop must be >= 1")
        need(len(self.mean) == 3 and len(self.std) == 3, "mean and std need 3 values (R, G, B)")
        need(all(s > 0 for s in self.std), f"std={self.std} must be positive")
        need(self.workers >= 0 and self.threads >= 0, "workers and threads must be >= 0")
        need(
            self.train_subset >= 0 and self.val_subset >= 0, "train_subset / val_subset must be >= 0 (0: all)"
        )
        need(
            0 <= self.freeze_bn_epochs < self.epochs,
            f"freeze_bn_epochs={self.freeze_bn_epochs} must be < epochs",
        )
        need(
            all(isinstance(p, str) and p for p in self.freeze_params),
            f"freeze_params={self.freeze_params}: give parameter-name patterns such as '*.se.*'",
        )
        need(bool(self.model), "model must name a registered model (`senet list`)")

    @property
    def base_lr(self) -> float:
        """``lr`` after the linear scaling rule: ``lr * batch_size / lr_base_batch`` when set."""
        return self.lr * self.batch_size / self.lr_base_batch if self.lr_base_batch else self.lr


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(name: str, value: Any, tp: Any, source: str) -> Any:
    """``value`` as type ``tp`` when that is lossless (int -> float, scalar -> str), else a ValueError."""
    origin = typing.get_origin(tp)
    bad = ValueError(
        f"{source}: field {name!r} must be {_type_name(tp)}, got {value!r} ({type(value).__name__})"
    )
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(name, value, arg, source)
            except ValueError:
                continue
        raise bad
    if tp is Any:
        return value
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split()]
            if item is not str:
                value = [yaml.safe_load(v) for v in value]
        if not isinstance(value, (list, tuple)):
            raise bad
        return [_coerce(name, v, item, source) for v in value]
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise bad
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if tp is str:
        if value is None:
            return ""
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad
    if isinstance(value, tp):
        return value
    raise bad


def _recipes_dir() -> Path:
    return Path(str(resources.files("senet") / "recipes"))


def list_recipes() -> dict[str, str]:
    """Shipped recipe name -> its one-line description."""
    out = {}
    for path in sorted(_recipes_dir().glob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        out[path.stem] = str(data.get("description", "")).strip()
    return out


def recipe_path(name_or_path: str | Path) -> Path:
    """The file of a shipped recipe name, or an existing YAML path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise FileNotFoundError(f"config file {p} does not exist")
        return p
    path = _recipes_dir() / f"{name_or_path}.yaml"
    if not path.is_file():
        names = list(list_recipes())
        close = difflib.get_close_matches(str(name_or_path), names, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown recipe {str(name_or_path)!r}.{hint} `senet recipes` lists: {', '.join(names)}"
        )
    return path


def _read_recipe(name_or_path: str | Path, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    path = recipe_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a recipe is a mapping of field: value")
    base = data.pop("base", None)
    if base:
        if str(base) in seen:
            raise ValueError(f"{path}: recipe bases form a cycle ({' -> '.join((*seen, str(base)))})")
        parent = _read_recipe(str(base), (*seen, str(base)))
        parent.pop("description", None)
        parent.pop("recipe", None)
        data = {**parent, **data}
    if path.parent == _recipes_dir():
        data.setdefault("recipe", path.stem)
    return data


def load_config(
    recipe: str | Path | None = None,
    config: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> Config:
    """Fields of ``recipe`` (a name or a YAML path), then of ``config`` (a YAML file), then ``overrides``."""
    values: dict[str, Any] = {}
    if recipe:
        values.update(_read_recipe(recipe))
    if config:
        cfg_file = Path(config)
        if not cfg_file.is_file():
            raise FileNotFoundError(f"config file {cfg_file} does not exist")
        values.update(_read_recipe(cfg_file))
    if not recipe and not config:
        raise ValueError(
            "give a recipe (--recipe NAME, see `senet recipes`) or a config file (--config FILE)"
        )
    for key, value in (overrides or {}).items():
        values[key.replace("-", "_")] = value
    src = f"recipe {recipe}" if recipe else f"config {config}"
    return Config.from_dict(values, source=src)
