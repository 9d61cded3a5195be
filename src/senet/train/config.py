"""A run's settings: one typed :class:`Config`, built from a recipe file and overrides, validated once.

A recipe is a small YAML file in ``senet/recipes/`` naming the fields it sets (``base: NAME``
starts from another recipe). :func:`load_config` reads a recipe by name or path, applies
overrides, and checks every field's name, type and value, so that a mistake stops the run with a
one-line ``ValueError`` before any data is read or any model is built.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Self

import yaml

from ..data import AUGMENTS, DATASETS, DataConfig, setting
from ..data.sampling import SAMPLINGS
from .schedule import SCHEDULE_ALIASES, SCHEDULES

__all__ = [
    "Config",
    "OptimConfig",
    "RuntimeConfig",
    "TypedConfig",
    "check_choices",
    "check_ranges",
    "list_recipes",
    "load_config",
    "read_recipe",
    "recipe_fields",
    "recipe_path",
    "typed_values",
]

AMPS = ("none", "bf16", "fp16", "auto")
WARMUPS = ("linear", "constant")
MAX_EPOCHS = 100_000  # more is a typo (1e12 would run for ever); the paper's longest schedule is ~400
CHOICES = dict(
    amp=AMPS, augment=AUGMENTS, dataset=DATASETS, schedule=SCHEDULES, sampling=SAMPLINGS, warmup=WARMUPS
)
# Old names of choices, still read (run folders and docs/results hold them): today's name is saved.
ALIASES = {"schedule": SCHEDULE_ALIASES}

# Fields a resumed run may change (everything else must match the checkpoint's config).
RESUMABLE_CHANGES = frozenset(
    "epochs lr resume out data_dir workers threads cache_dir description log_interval strict_data".split()
)
# The range each number must lie in, and "(0: ...)" what 0 means where it is special.
RANGES = {
    **dict.fromkeys(("epochs", "batch_size", "accum_steps", "eval_batch_size", "step_size"), ">= 1"),
    **dict.fromkeys(("image_size", "eval_crop"), ">= 1"),
    **dict.fromkeys(("weight_decay", "plateau_patience", "warmup_epochs", "workers", "threads"), ">= 0"),
    **dict.fromkeys(("train_subset", "val_subset"), ">= 0 (0: all)"),
    **dict.fromkeys(("momentum", "label_smoothing"), "in [0, 1)"),
    **dict.fromkeys(("gamma", "warmup_factor"), "in (0, 1]"),
    **dict.fromkeys(("final_lr_factor", "scale_min"), "in [0, 1]"),
    "lr": "> 0",
    "lr_base_batch": ">= 0 (0: no scaling)",
    "ema_decay": "in [0, 1) (0: off)",
    "cutout": ">= 0 (0: off)",
    "log_interval": ">= 0 (0: ~10 lines an epoch)",
}
_WITHIN = {
    ">= 1": lambda v: v >= 1,
    "> 0": lambda v: v > 0,
    ">= 0": lambda v: v >= 0,
    "in [0, 1)": lambda v: 0 <= v < 1,
    "in (0, 1]": lambda v: 0 < v <= 1,
    "in [0, 1]": lambda v: 0 <= v <= 1,
}

_opt = setting


def _need(ok: bool, msg: str) -> None:
    if not ok:
        raise ValueError(f"config: {msg}")


def check_choices(values: Mapping[str, Any], choices: Mapping[str, Sequence[str]]) -> None:
    """A one-line error for a field whose value is not one of its choices."""
    for name, allowed in choices.items():
        _need(values[name] in allowed, f"{name}={values[name]!r}: expected one of {', '.join(allowed)}")


def check_ranges(values: Mapping[str, Any], ranges: Mapping[str, str]) -> None:
    """A one-line error for a number outside its range (as ``RANGES`` gives it)."""
    for name, rule in ranges.items():
        _need(_WITHIN[rule.split(" (0:")[0]](values[name]), f"{name}={values[name]} must be {rule}")


class TypedConfig:
    """What the package's typed configs share (training :class:`Config`, detection's ``DetectConfig``):
    fields with one-line meanings (:func:`~senet.data.setting`), read from flat ``name: value``
    mappings by :func:`typed_values`, and value checks (a subclass's ``validate``) on construction."""

    help_cmd: ClassVar[str] = "senet train --help"  # where a misspelt field's error sends the reader

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def _flat_fields(cls) -> list[tuple[type, dataclasses.Field]]:
        """(declaring class, field) of every flat field."""
        return [(cls, f) for f in dataclasses.fields(cls)]

    @classmethod
    def fields(cls) -> dict[str, Any]:
        """Flat field name -> type annotation."""
        flat = cls._flat_fields()
        hints = {kind: typing.get_type_hints(kind) for kind in dict.fromkeys(k for k, _ in flat)}
        return {f.name: hints[kind][f.name] for kind, f in flat}

    @classmethod
    def meanings(cls) -> dict[str, str]:
        """Flat field name -> its one-line meaning (the help of ``senet train --field``)."""
        return {f.name: f.metadata.get("help", "") for _, f in cls._flat_fields()}

    def to_dict(self) -> dict[str, Any]:
        """The flat fields, as recipes and ``config.yaml`` hold them."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(
        cls, values: dict[str, Any], source: str = "config", origins: dict[str, str] | None = None
    ) -> Self:
        """Check the names and types of ``values`` (one-line errors naming the field and where it was
        given: ``origins`` maps a field to its file or the command line, else ``source``), then build."""
        return cls(**typed_values(cls.fields(), values, source, origins, help_cmd=cls.help_cmd))


@dataclass(frozen=True)
class OptimConfig:
    """How the weights are trained: epochs, batch, SGD, the lr schedule and its warm-up, the loss,
    the weight average and what is frozen when."""

    epochs: int = _opt(15, "training epochs (may grow on --resume)")
    batch_size: int = _opt(128, "images per optimiser step, over all processes")
    accum_steps: int = _opt(1, "micro-batches a step's batch is split into (gradient accumulation)")
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
    final_lr_factor: float = _opt(0.0, "lr factor at the end of a cosine / triangle schedule")
    label_smoothing: float = _opt(0.0, "label smoothing of the cross-entropy loss")
    ema_decay: float = _opt(
        0.0, "exponential moving average of the weights, decay per step (0: off; e.g. 0.9998)"
    )
    freeze_bn_epochs: int = _opt(0, "last epochs with BN statistics and parameters frozen")
    freeze_params: list[str] = _opt([], "parameter-name patterns never trained, e.g. '*.se.*'")
    freeze_backbone_epochs: int = _opt(0, "first epochs training the classifier only (fine-tuning)")

    @property
    def scaled_lr(self) -> float:
        """``lr`` after the linear scaling rule: ``lr * batch_size / lr_base_batch`` when set."""
        return self.lr * self.batch_size / self.lr_base_batch if self.lr_base_batch else self.lr


@dataclass(frozen=True)
class RuntimeConfig:
    """How the run is carried out: precision, memory format, compilation, processes, seed, threads,
    evaluation batches, progress lines and the run folder."""

    amp: str = _opt(
        "none", f"mixed precision of training: {', '.join(AMPS)} (auto: bf16 where the device has it)"
    )
    channels_last: bool = _opt(False, "NHWC memory format (faster convolutions on CPU and tensor cores)")
    compile: bool = _opt(False, "torch.compile the network")
    sync_bn: bool = _opt(False, "BN statistics over all processes (CUDA only)")
    seed: int = _opt(0, "random seed (initial weights, data order, augmentation)")
    threads: int = _opt(0, "CPU threads (0: torch's default)")
    eval_batch_size: int = _opt(500, "images per evaluation forward pass")
    log_interval: int = _opt(0, "training steps between progress lines without a terminal (0: ~10 an epoch)")
    out: str = _opt("", "run folder (default runs/<recipe or model>)")
    resume: bool = _opt(False, "continue the run in out from its last.pt")


#: The parts of a :class:`Config`; a recipe may give a part's fields flat or under its name.
PARTS = {"data": DataConfig, "optim": OptimConfig, "runtime": RuntimeConfig}


@dataclass(frozen=True)
class Config(TypedConfig):
    """Every setting of a training run: what is trained (the fields here) and three parts, ``data``
    (:class:`~senet.data.DataConfig`), ``optim`` (:class:`OptimConfig`) and ``runtime``
    (:class:`RuntimeConfig`); the recipe files set a subset of the fields.

    Field names are unique over the parts, so a flat name (as recipes, the command line and a run's
    ``config.yaml`` give it) names one field, and reads it: ``cfg.lr`` is ``cfg.optim.lr``.
    """

    recipe: str = _opt("", "name of the recipe the run started from (set by --recipe)")
    description: str = _opt("", "one line saying what the run is for")
    model: str = _opt("se_resnet20", "registered network name (`senet list`)")
    model_kwargs: dict[str, Any] = _opt({}, "create_model keywords, e.g. '{reduction: 8}' (YAML mapping)")
    weights: str = _opt(
        "", "start from these weights (path or URL, any layout load_weights reads): fine-tuning"
    )
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def __getattr__(self, name: str) -> Any:
        # reached only for names the Config lacks: a part's field (cfg.lr) or property (cfg.scaled_lr)
        for part, kind in PARTS.items():
            if part in self.__dict__ and (
                _PART_OF.get(name) == part or isinstance(getattr(kind, name, None), property)
            ):
                return getattr(self.__dict__[part], name)
        raise AttributeError(f"{type(self).__name__} has no field {name!r}")

    @classmethod
    def _flat_fields(cls) -> list[tuple[type, dataclasses.Field]]:
        """The top fields, then each part's."""
        top = [(cls, f) for f in dataclasses.fields(cls) if f.name not in PARTS]
        return top + [(kind, f) for kind in PARTS.values() for f in dataclasses.fields(kind)]

    def to_dict(self) -> dict[str, Any]:
        """The flat fields (as recipes and ``config.yaml`` hold them), the top ones then each part's."""
        d = dataclasses.asdict(self)
        return {k: v for k, v in d.items() if k not in PARTS} | {k: v for p in PARTS for k, v in d[p].items()}

    def to_yaml(self) -> str:
        """``config.yaml``: the flat fields, which today's and older readers load, grouped by part
        under a comment saying what the part holds."""
        d = dataclasses.asdict(self)
        text = yaml.safe_dump({k: v for k, v in d.items() if k not in PARTS}, sort_keys=False)
        for part, kind in PARTS.items():
            title = " ".join(str(kind.__doc__).split()).split(":")[0]
            text += f"# {part}: {title}\n" + yaml.safe_dump(d[part], sort_keys=False)
        return text

    def replace(self, **changes: Any) -> Config:
        """A copy with some flat fields changed (checked as :meth:`from_dict` checks them)."""
        return Config.from_dict({**self.to_dict(), **changes})

    @classmethod
    def from_dict(
        cls, values: dict[str, Any], source: str = "config", origins: dict[str, str] | None = None
    ) -> Config:
        """As :meth:`TypedConfig.from_dict`, the fields flat or a part's under its name (``data:
        {image_size: 32}``)."""
        grouped: dict[str | None, dict[str, Any]] = {None: {}, **{p: {} for p in PARTS}}
        flat = canonical(_flatten(values, source))
        for name, value in typed_values(cls.fields(), flat, source, origins, extra_names=list(PARTS)).items():
            grouped[_PART_OF[name]][name] = value
        return cls(**grouped.pop(None), **{p: PARTS[p](**v) for p, v in grouped.items()})

    def validate(self) -> None:
        """Value checks that types alone do not catch."""
        d, o = self.data, self.optim
        flat = self.to_dict()
        check_choices(flat, CHOICES)
        for name, value in flat.items():
            values = value if isinstance(value, (list, tuple)) else [value]
            _need(
                all(math.isfinite(v) for v in values if isinstance(v, float)),
                f"{name}={value} must be a finite number",
            )
        check_ranges(flat, RANGES)
        _need(
            o.epochs <= MAX_EPOCHS,
            f"epochs={o.epochs} is more than {MAX_EPOCHS:,}: a typo? (the paper's longest run is ~400)",
        )
        _need(o.batch_size % o.accum_steps == 0, f"batch_size={o.batch_size} not divisible by accum_steps")
        _need(all(m >= 1 for m in o.milestones), f"milestones={o.milestones} must be epochs >= 1")
        _need(len(d.mean) == 3 and len(d.std) == 3, "mean and std need 3 values (R, G, B)")
        _need(all(s > 0 for s in d.std), f"std={d.std} must be positive")
        _need(0 <= o.freeze_bn_epochs < o.epochs, f"freeze_bn_epochs={o.freeze_bn_epochs} must be < epochs")
        _need(
            all(isinstance(p, str) and p for p in o.freeze_params),
            f"freeze_params={o.freeze_params}: give parameter-name patterns such as '*.se.*'",
        )
        _need(
            0 <= o.freeze_backbone_epochs <= o.epochs,
            f"freeze_backbone_epochs={o.freeze_backbone_epochs} must be in [0, epochs]",
        )
        _need(bool(self.model), "model must name a registered model (`senet list`)")


_PART_OF: dict[str, str | None] = {
    f.name: {k: p for p, k in PARTS.items()}.get(kind) for kind, f in Config._flat_fields()
}


def canonical(values: Mapping[str, Any]) -> dict[str, Any]:
    """Flat config values with old names of choices replaced by today's (``schedule: onecycle`` is
    ``triangle``), so that an old run folder's config compares equal to today's."""
    return {k: ALIASES[k].get(v, v) if k in ALIASES and isinstance(v, str) else v for k, v in values.items()}


def _unknown(
    where: str, name: str, candidates: list[str], hint: str = "", help_cmd: str = "senet train --help"
) -> ValueError:
    close = difflib.get_close_matches(name.split(".")[-1], candidates, n=3, cutoff=0.6)
    hint = hint or (f"; did you mean {', '.join(close)}?" if close else f"; `{help_cmd}` lists the fields")
    return ValueError(f"{where}: unknown field {name!r}{hint}")


def typed_values(
    known: Mapping[str, Any],
    values: Mapping[str, Any],
    source: str = "config",
    origins: Mapping[str, str] | None = None,
    *,
    extra_names: list[str] | None = None,
    help_cmd: str = "senet train --help",
) -> dict[str, Any]:
    """``values`` (flat names, ``-`` read as ``_``) as the types ``known`` gives each field, losslessly
    converted; an unknown name or a wrong type is a one-line error naming the field and where it was
    given (``origins``: field -> file or command line, else ``source``), with a did-you-mean."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        where = (origins or {}).get(name, source)
        if name not in known:
            raise _unknown(where, name, [*known, *(extra_names or [])], help_cmd=help_cmd)
        out[name] = _coerce(name, value, known[name], where)
    return out


def _flatten(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    """``values`` with a part given as a mapping (``data: {image_size: 32}``) spread into its flat
    fields, names with ``_`` for ``-``; a field given twice, or under a part that does not hold it,
    is a one-line error."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        part = key.replace("-", "_")
        nested = part in PARTS and isinstance(value, Mapping)
        for k, v in value.items() if nested else [(key, value)]:
            name = str(k).replace("-", "_")
            if nested and _PART_OF.get(name) != part:
                owner = (
                    f"; {name} is a field of {_PART_OF[name] or 'the top level'}" if name in _PART_OF else ""
                )
                raise _unknown(source, f"{part}.{k}", [n for n, p in _PART_OF.items() if p == part], owner)
            if name in out:
                raise ValueError(f"{source}: field {name!r} is given twice")
            out[name] = v
    return out


def _coerce(name: str, value: Any, tp: Any, source: str) -> Any:
    """``value`` as type ``tp`` when that is lossless (int -> float, scalar -> str), else a ValueError."""
    origin = typing.get_origin(tp)
    tp_name = getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
    bad = ValueError(f"{source}: field {name!r} must be {tp_name}, got {value!r} ({type(value).__name__})")
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            with contextlib.suppress(ValueError):
                return _coerce(name, value, arg, source)
    elif tp is Any:
        return value
    elif origin is list:
        (item,) = typing.get_args(tp)
        if number:
            value = [value]
        if isinstance(value, str):
            value = value.replace(",", " ").split()
            if item is not str:
                value = [yaml.safe_load(v) for v in value]
        if isinstance(value, (list, tuple)):
            return [_coerce(name, v, item, source) for v in value]
    elif origin is dict:
        if value is None or isinstance(value, dict):
            return dict(value or {})
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if number and (isinstance(value, int) or value.is_integer()):
            return int(value)
    elif tp is float:
        if number or isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            with contextlib.suppress(ValueError):
                return float(value)
    elif tp is str:
        if value is None or number or isinstance(value, str):
            return "" if value is None else str(value)
    elif isinstance(value, tp):
        return value
    raise bad


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a mapping that gives one key twice (YAML keeps the last one
    silently: ``lr: 0.1`` then ``lr: 0.4`` further down would train at 0.4 unnoticed)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                msg = f"field {key!r} is given twice (lines {seen[key]} and {line})"
                raise yaml.constructor.ConstructorError(None, None, msg, key_node.start_mark)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


#: Recipe folders under ``senet/recipes`` ("": training's, "detect": detection's): what an error calls
#: their recipes, and where it says the names are listed.
_RECIPE_KINDS = {"": ("recipe", "`senet recipes` lists"), "detect": ("detection recipe", "Shipped")}


def _recipes_dir(folder: str = "") -> Path:
    return Path(str(resources.files("senet") / "recipes" / folder))


def list_recipes(folder: str = "") -> dict[str, str]:
    """Shipped recipe name (of the training recipes, or of a sub-folder's) -> its one-line description."""
    return {
        path.stem: str((yaml.safe_load(path.read_text()) or {}).get("description", "")).strip()
        for path in sorted(_recipes_dir(folder).glob("*.yaml"))
    }


def recipe_path(name_or_path: str | Path, folder: str = "") -> Path:
    """The file of a shipped recipe name (in sub-folder ``folder``), or an existing YAML path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise FileNotFoundError(f"config file {p} does not exist")
        return p
    path = _recipes_dir(folder) / f"{name_or_path}.yaml"
    if not path.is_file():
        names = list(list_recipes(folder))
        close = difflib.get_close_matches(str(name_or_path), names, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        what, listed = _RECIPE_KINDS[folder]
        raise ValueError(f"unknown {what} {str(name_or_path)!r}.{hint} {listed}: {', '.join(names)}")
    return path


def read_recipe(name_or_path: str | Path, folder: str = "", seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The flat fields of a recipe (a name in sub-folder ``folder`` of the recipes, or a YAML path),
    its ``base`` recipe's included; a shipped recipe's name is its ``recipe`` field."""
    path = recipe_path(name_or_path, folder)
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
    data = _flatten(data, str(path))
    if base:
        if str(base) in seen:
            raise ValueError(f"{path}: recipe bases form a cycle ({' -> '.join((*seen, str(base)))})")
        parent = read_recipe(str(base), folder, (*seen, str(base)))
        parent.pop("description", None)
        parent.pop("recipe", None)
        data = {**parent, **data}
    if path.parent == _recipes_dir(folder):
        data.setdefault("recipe", path.stem)
    return data


def recipe_fields(
    recipe: str | Path | None, config: str | Path | None, overrides: dict[str, Any] | None, folder: str = ""
) -> tuple[dict[str, Any], dict[str, str]]:
    """The flat fields of ``recipe`` (a name in sub-folder ``folder`` of the recipes, or a YAML path),
    then of ``config`` (a YAML file), then ``overrides``; and where each was given, for error messages."""
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for kind, given in (("recipe", recipe), ("config", config and Path(config))):
        read = read_recipe(given, folder) if given else {}
        values.update(read)
        origins.update(dict.fromkeys(read, f"{kind} {given}"))
    for name, value in _flatten(overrides or {}, "command line").items():
        values[name], origins[name] = value, "command line"
    return values, origins


def load_config(
    recipe: str | Path | None = None,
    config: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> Config:
    """Fields of ``recipe`` (a name or a YAML path), then of ``config`` (a YAML file), then ``overrides``."""
    if not recipe and not config:
        raise ValueError(
            "give a recipe (--recipe NAME, see `senet recipes`) or a config file (--config FILE)"
        )
    if config and not Path(config).is_file():
        raise FileNotFoundError(f"config file {config} does not exist")
    values, origins = recipe_fields(recipe, config, overrides)
    src = f"recipe {recipe}" if recipe else f"config {config}"
    return Config.from_dict(values, source=src, origins=origins)
