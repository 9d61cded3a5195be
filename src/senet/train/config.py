"""A run's settings: one typed :class:`Config`, built from a recipe file and overrides, validated once.

A recipe is a small YAML file in ``senet/recipes/`` naming the fields it sets (``base: NAME``
starts from another recipe). :func:`load_config` reads a recipe by name or path, applies
overrides, and checks every field's name, type and value, so that a mistake stops the run with a
one-line ``ValueError`` before any data is read or any model is built.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..data.sampling import SAMPLINGS
from ..preprocessing import CIFAR10_MEAN, CIFAR10_STD

__all__ = ["Config", "list_recipes", "load_config", "recipe_path"]

AMPS = ("none", "bf16", "fp16", "auto")
AUGMENTS = ("cifar", "imagenet", "release", "none")
DATASETS = ("auto", "folder", "cifar10", "cifar100")
SCHEDULES = ("step", "multistep", "cosine", "onecycle", "constant", "plateau")
WARMUPS = ("linear", "constant")
MAX_EPOCHS = 100_000  # more is a typo (1e12 would run for ever); the paper's longest schedule is ~400

# Fields a resumed run may change (everything else must match the checkpoint's config).
RESUMABLE_CHANGES = frozenset(
    {
        "epochs",
        "lr",
        "resume",
        "out",
        "data_dir",
        "workers",
        "threads",
        "cache_dir",
        "description",
        "log_interval",
        "strict_data",
    }
)


def _opt(default: Any, meaning: str) -> Any:
    """A :class:`Config` field and its one-line meaning (with the unit), shown by ``--help``."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"help": meaning})
    return field(default=default, metadata={"help": meaning})


@dataclass
class Config:
    """Every setting of a training run; the recipe files set a subset of these fields."""

    recipe: str = _opt("", "name of the recipe the run started from (set by --recipe)")
    description: str = _opt("", "one line saying what the run is for")
    # model
    model: str = _opt("se_resnet20", "registered network name (`senet list`)")
    model_kwargs: dict[str, Any] = _opt({}, "create_model keywords, e.g. '{reduction: 8}' (YAML mapping)")
    weights: str = _opt(
        "", "start from these weights (path or URL, any layout load_weights reads): fine-tuning"
    )
    # data
    data_dir: str = _opt("", "data folder: an ImageFolder tree (train/, val/ or test/) or torchvision CIFAR")
    dataset: str = _opt("auto", f"data set kind: {', '.join(DATASETS)} (auto: from the folder)")
    download: bool = _opt(False, "download torchvision CIFAR into data_dir when absent")
    augment: str = _opt("cifar", f"training augmentation: {', '.join(AUGMENTS)}")
    image_size: int = _opt(32, "training crop side, pixels")
    eval_crop: int = _opt(32, "evaluation centre-crop side, pixels")
    eval_resize: int = _opt(0, "evaluation short side before the crop, pixels (0: crop * 256/224)")
    scale_min: float = _opt(0.08, "smallest area fraction of the random-size crop (augment: imagenet)")
    cutout: int = _opt(0, "Cutout square side, pixels (0: off)")
    mean: list[float] = _opt(list(CIFAR10_MEAN), "per-channel R G B mean of [0, 1] pixels")
    std: list[float] = _opt(list(CIFAR10_STD), "per-channel R G B std of [0, 1] pixels")
    in_memory: bool = _opt(True, "decode every image once into memory (small images of one size)")
    cache_dir: str = _opt("~/.cache/senet", "where decoded in-memory data sets are cached ('' : no cache)")
    train_subset: int = _opt(0, "training images per class (0: all)")
    val_subset: int = _opt(0, "evaluation images per class (0: all)")
    workers: int = _opt(2, "image-decoding worker processes for streamed data")
    sampling: str = _opt(
        "uniform", "training order: uniform shuffle, or balanced (every class drawn equally often, Sec. 6.1)"
    )
    strict_data: bool = _opt(False, "refuse a data set with unreadable images (default: skip and list them)")
    # optimisation
    epochs: int = _opt(15, "training epochs (may grow on --resume)")
    batch_size: int = _opt(128, "images per optimiser step, over all processes")
    accum_steps: int = _opt(1, "micro-batches a step's batch is split into (gradient accumulation)")
    eval_batch_size: int = _opt(500, "images per evaluation forward pass")
    lr: float = _opt(0.1, "peak learning rate (per lr_base_batch images when that is set)")
    lr_base_batch: int = _opt(0, "batch size lr is given for: lr scales linearly with batch_size (0: off)")
    momentum: float = _opt(0.9, "SGD momentum")
    nesterov: bool = _opt(False, "Nesterov momentum")
    weight_decay: float = _opt(1e-4, "L2 weight decay")
    schedule: str = _opt("step", f"lr schedule: {', '.join(SCHEDULES)}")
    step_size: int = _opt(30, "epochs between two lr decays (schedule: step)")
    milestones: list[int] = _opt([], "epochs at which lr decays (schedule: multistep)")
    gamma: float = _opt(0.1, "lr decay factor (step / multistep / plateau)")
    plateau_patience: int = _opt(
        10, "epochs without a lower validation loss before the lr decays (schedule: plateau)"
    )
    warmup_epochs: float = _opt(0.0, "warm-up length, epochs (at most a fifth of the run is used)")
    warmup: str = _opt("linear", f"warm-up shape: {', '.join(WARMUPS)}")
    warmup_factor: float = _opt(0.1, "lr factor at the start of the warm-up (constant: throughout)")
    final_lr_factor: float = _opt(0.0, "lr factor at the end of a cosine / onecycle schedule")
    label_smoothing: float = _opt(0.0, "label smoothing of the cross-entropy loss")
    ema_decay: float = _opt(
        0.0, "exponential moving average of the weights, decay per step (0: off; e.g. 0.9998)"
    )
    freeze_bn_epochs: int = _opt(0, "last epochs with BN statistics and parameters frozen")
    freeze_params: list[str] = _opt([], "parameter-name patterns never trained, e.g. '*.se.*'")
    freeze_backbone_epochs: int = _opt(0, "first epochs training the classifier only (fine-tuning)")
    # runtime
    amp: str = _opt("none", f"mixed precision: {', '.join(AMPS)} (auto: bf16 where the device has it)")
    channels_last: bool = _opt(False, "NHWC memory format (faster convolutions on CPU and tensor cores)")
    compile: bool = _opt(False, "torch.compile the network")
    sync_bn: bool = _opt(False, "BN statistics over all processes (CUDA only)")
    seed: int = _opt(0, "random seed (initial weights, data order, augmentation)")
    threads: int = _opt(0, "CPU threads (0: torch's default)")
    log_interval: int = _opt(0, "training steps between progress lines without a terminal (0: ~10 an epoch)")
    out: str = _opt("", "run folder (default runs/<recipe or model>)")
    resume: bool = _opt(False, "continue the run in out from its last.pt")

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def fields(cls) -> dict[str, Any]:
        """Field name -> type annotation."""
        hints = typing.get_type_hints(cls)
        return {f.name: hints[f.name] for f in dataclasses.fields(cls)}

    @classmethod
    def meanings(cls) -> dict[str, str]:
        """Field name -> its one-line meaning (the help of ``senet train --field``)."""
        return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> Config:
        return Config.from_dict({**self.to_dict(), **changes})

    @classmethod
    def from_dict(
        cls, values: dict[str, Any], source: str = "config", origins: dict[str, str] | None = None
    ) -> Config:
        """Check names and types of ``values`` (one-line errors naming the field and where it was
        given: ``origins`` maps a field to its file or the command line, else ``source``), then build."""
        known = cls.fields()
        out: dict[str, Any] = {}
        for key, value in values.items():
            name = key.replace("-", "_")
            source = (origins or {}).get(name, source)
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
            ("sampling", SAMPLINGS),
            ("warmup", WARMUPS),
        ):
            need(
                getattr(self, name) in choices,
                f"{name}={getattr(self, name)!r}: expected one of {', '.join(choices)}",
            )
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            values = value if isinstance(value, (list, tuple)) else [value]
            need(
                all(math.isfinite(v) for v in values if isinstance(v, float)),
                f"{f.name}={value} must be a finite number",
            )
        need(self.epochs >= 1, f"epochs={self.epochs} must be >= 1")
        need(
            self.epochs <= MAX_EPOCHS,
            f"epochs={self.epochs} is more than {MAX_EPOCHS:,}: a typo? (the paper's longest run is ~400)",
        )
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
        need(self.plateau_patience >= 0, f"plateau_patience={self.plateau_patience} must be >= 0")
        need(0 <= self.ema_decay < 1, f"ema_decay={self.ema_decay} must be in [0, 1) (0: off)")
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
        need(
            0 <= self.freeze_backbone_epochs <= self.epochs,
            f"freeze_backbone_epochs={self.freeze_backbone_epochs} must be in [0, epochs]",
        )
        need(self.log_interval >= 0, f"log_interval={self.log_interval} must be >= 0 (0: ~10 lines an epoch)")
        need(bool(self.model), "model must name a registered model (`senet list`)")

    @property
    def scaled_lr(self) -> float:
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


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a mapping that gives one key twice (YAML keeps the last one
    silently: ``lr: 0.1`` then ``lr: 0.4`` further down would train at 0.4 unnoticed)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"field {key!r} is given twice (lines {seen[key]} and {key_node.start_mark.line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


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
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file (a recipe is YAML text: field: value lines)") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ValueError(f"{path}: not valid YAML{where}: {problem}") from None
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
    origins: dict[str, str] = {}  # field -> where it was given, for error messages
    if recipe:
        values.update(_read_recipe(recipe))
        origins.update(dict.fromkeys(values, f"recipe {recipe}"))
    if config:
        cfg_file = Path(config)
        if not cfg_file.is_file():
            raise FileNotFoundError(f"config file {cfg_file} does not exist")
        given = _read_recipe(cfg_file)
        values.update(given)
        origins.update(dict.fromkeys(given, f"config {config}"))
    if not recipe and not config:
        raise ValueError(
            "give a recipe (--recipe NAME, see `senet recipes`) or a config file (--config FILE)"
        )
    for key, value in (overrides or {}).items():
        values[key.replace("-", "_")] = value
        origins[key.replace("-", "_")] = "command line"
    src = f"recipe {recipe}" if recipe else f"config {config}"
    return Config.from_dict(values, source=src, origins=origins)
