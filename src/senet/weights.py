"""Load weights saved by other implementations into our networks (and refuse what does not fit).

``load_weights(model, source)`` reads a path or a state dict, recognises its key layout, renames
the keys to ours and loads them only if every tensor finds its place with the right shape;
otherwise it raises :class:`WeightsMismatchError` listing what is missing, unexpected or of
another shape — a model is never half loaded.

Layouts read (the key style also tells which *computation layout* the weights were trained in):

* ``senet`` (``stem.conv1.weight``, ``layer1.0.se.fc1``): network layout as saved;
* ``cadene`` (``layer0.conv1.weight``, ``se_module.fc1``, ``last_linear.weight``; Cadene
  pretrainedmodels, timm ``legacy_*``): network layout ``release``;
* ``timm`` (``conv1.weight``, ``layer1.0.se.fc1``, ``fc.weight``; timm ``seresnet*``,
  torchvision): network layout ``torchvision``.

Weights of one computation layout loaded into a network built in the other would load without
complaint and compute another function (stride on the 1x1 vs the 3x3 convolution, ceil-mode vs
padded max-pool), so that case is refused with the fix (``create_model(name, layout=...)``).
Checkpoints written by :func:`save_weights` (and by ``senet train``) carry the layout, the
architecture and the preprocessing, so the check also holds for our own files.

Sources may also be URLs (``http(s)://``, ``file://``), downloaded once into a cache
(``$SENET_CACHE`` or ``~/.cache/senet``) and read from there afterwards, offline; a
``#sha256=<hex>`` suffix (or ``sha256=``) verifies the file. Nothing is downloaded unless asked.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import tempfile
import urllib.request
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .preprocessing import Preprocessing

__all__ = [
    "LoadReport",
    "WeightsMismatchError",
    "atomic_save",
    "detect_layout",
    "fetch",
    "remove_stale_temporaries",
    "load_file",
    "load_weights",
    "read_checkpoint",
    "read_state_dict",
    "save_weights",
]

# layout -> ordered (pattern, replacement) rules that turn its keys into ours.
KEY_RULES: dict[str, list[tuple[str, str]]] = {
    "senet": [],
    "cadene": [(r"^layer0\.", "stem."), (r"\.se_module\.", ".se."), (r"^last_linear\.", "fc.")],
    "timm": [(r"^conv1\.", "stem.conv1."), (r"^bn1\.", "stem.bn1."), (r"^classif\.", "fc.")],
}
# The network layout (see senet.models.resnet) that a key layout implies, where it implies one.
IMPLIED_LAYOUT = {"cadene": "release", "timm": "torchvision"}

_WRAPPER_KEYS = ("state_dict", "model", "model_state", "model_state_dict", "module")


class WeightsMismatchError(ValueError):
    """A checkpoint does not fit the model (keys missing / unexpected / of another shape)."""


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_weights` did: the layout it recognised and how many tensors it loaded."""

    layout: str
    loaded: int
    metadata: dict[str, Any]


def _is_url(source: Any) -> bool:
    return isinstance(source, str) and re.match(r"^(https?|file)://", source) is not None


def cache_dir() -> Path:
    """Where downloaded weights are kept: ``$SENET_CACHE`` or ``~/.cache/senet``."""
    return Path(os.environ.get("SENET_CACHE", Path.home() / ".cache" / "senet"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(url: str, sha256: str | None = None) -> Path:
    """Download ``url`` once into the cache and return the local path (offline afterwards).

    ``sha256`` (or a ``#sha256=<hex>`` suffix of the URL) is checked on download and on every
    later use of the cached file; a mismatch removes nothing the user owns and raises.
    """
    url, _, frag = url.partition("#")
    if frag.startswith("sha256="):
        sha256 = sha256 or frag[len("sha256=") :]
    name = Path(urllib.request.url2pathname(url.rsplit("/", 1)[-1])).name or "weights.pt"
    target = cache_dir() / "weights" / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{name}"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".download-")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
                shutil.copyfileobj(resp, out)
            if sha256 and _sha256(Path(tmp)) != sha256.lower():
                raise ValueError(f"download of {url} does not match sha256 {sha256}: refusing it")
            os.replace(tmp, target)
        except OSError as e:
            raise ValueError(f"cannot download weights from {url}: {e}") from e
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    elif sha256 and _sha256(target) != sha256.lower():
        raise ValueError(
            f"cached weights {target} do not match sha256 {sha256}: delete the file to download again"
        )
    return target


def load_file(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` (no code in the file runs) with one clear error for a
    missing, truncated, corrupted or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, pickle garbage, foreign format: one clear message
        detail = str(e).split(". ")[0].splitlines()[0] if str(e) else ""
        raise ValueError(
            f"cannot read checkpoint {str(path)!r}: it is truncated, corrupted or not a PyTorch "
            f"checkpoint ({type(e).__name__}: {detail})"
        ) from e


def read_checkpoint(source: str | Path | Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A flat ``{name: tensor}`` and the checkpoint's metadata, from a path (read by :func:`load_file`:
    no code in it runs), URL or dict. Wrappers such as ``{"state_dict": ...}`` / ``{"model": ...}``
    and the ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) prefixes are removed; the wrapper's
    other entries (``arch``, ``layout``, ``preprocessing``, ...) are returned as metadata."""
    if _is_url(source):
        source = fetch(str(source))
    what = f"{str(source)!r}" if isinstance(source, (str, Path)) else "the checkpoint"
    obj: Any = load_file(source) if isinstance(source, (str, Path)) else source
    meta: dict[str, Any] = {}
    while isinstance(obj, Mapping) and not _is_tensor_dict(obj):
        key = next((k for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if key is None:
            raise ValueError(f"{what} holds no state dict (no tensors, no 'state_dict'/'model' entry)")
        meta.update({k: v for k, v in obj.items() if k != key and not isinstance(v, torch.Tensor)})
        obj = obj[key]
    if not isinstance(obj, Mapping):
        raise ValueError(
            f"{what} is not a senet checkpoint or state dict: it holds a {type(obj).__name__} "
            "(expected a {name: tensor} mapping, alone or under 'state_dict' / 'model')"
        )
    out = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in obj.items()}
    return out, _upgrade(meta)


CHECKPOINT_FORMAT = 2  # the ``format`` entry of the checkpoints senet writes


def _upgrade(meta: dict[str, Any]) -> dict[str, Any]:
    """Metadata of any senet checkpoint in today's form (format 2): the architecture as ``arch`` +
    ``create_kwargs``. ``senet train`` checkpoints before format 2 recorded it (also) as
    ``model_name`` + ``model_kwargs`` + ``num_classes``; those entries are read and dropped."""
    meta = dict(meta)
    if not isinstance(meta.get("model_name"), str):
        return meta
    name = meta.pop("model_name")
    kwargs = meta.pop("model_kwargs", None)
    num_classes = meta.pop("num_classes", None)
    if not meta.get("arch"):
        meta["arch"] = name
        create = dict(kwargs) if isinstance(kwargs, Mapping) else {}
        if num_classes is not None:
            create["num_classes"] = int(num_classes)
        meta["create_kwargs"] = create
    return meta


def read_state_dict(source: str | Path | Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The flat state dict of :func:`read_checkpoint`, without metadata."""
    return read_checkpoint(source)[0]


def _is_tensor_dict(obj: Mapping) -> bool:
    return len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def _rename(key: str, layout: str) -> str:
    for pat, rep in KEY_RULES[layout]:
        key = re.sub(pat, rep, key)
    return key


def detect_layout(state_dict: Mapping[str, Any], model: nn.Module) -> str:
    """The key layout whose renaming fits ``model``'s parameter names best."""
    target = set(model.state_dict())

    def score(layout: str) -> int:
        return len({_rename(k, layout) for k in state_dict} & target)

    return max(KEY_RULES, key=score)  # ties keep the first, "senet"


def mismatch_message(title: str, groups: Sequence[tuple[str, list[str], int]], hint: str) -> str:
    """``title``, a line per non-empty group (label, count, its first ``limit`` items) and ``hint``."""
    lines = [title]
    for label, items, limit in groups:
        if items:
            more = f" ... (+{len(items) - limit} more)" if len(items) > limit else ""
            lines.append(f"  {label} ({len(items)}): {', '.join(items[:limit])}{more}")
    return "\n".join([*lines, hint])


def _adapt_first_conv(w: torch.Tensor, in_chans: int) -> torch.Tensor:
    """RGB kernels for ``in_chans`` inputs: summed for one channel, repeated (and rescaled) for more."""
    if in_chans == 1:
        return w.sum(dim=1, keepdim=True)
    reps = -(-in_chans // w.shape[1])
    return w.repeat(1, reps, 1, 1)[:, :in_chans] * (w.shape[1] / in_chans)


def _classifier_keys(model: nn.Module) -> set[str]:
    fc = getattr(model, "fc", None)
    if not isinstance(fc, nn.Module):
        return set()
    prefix = next((n for n, m in model.named_modules() if m is fc), "fc")
    return {f"{prefix}.{k}" for k in fc.state_dict()}


def load_weights(
    model: nn.Module, source: str | Path | Mapping[str, Any], *, reset_classifier: bool = False
) -> LoadReport:
    """Load ``source`` (a path, URL or state dict in any layout above) into ``model``, all or nothing.

    * A first convolution trained on RGB is adapted when the model was built with another
      ``in_chans`` (kernels summed for 1 channel, repeated for more).
    * With ``reset_classifier=True`` a classifier of another width is left at its fresh
      initialisation, with a one-line notice (fine-tuning to a new class count).
    * Preprocessing recorded in the checkpoint is attached to the model (``model.preprocessing``).
    """
    sd, meta = read_checkpoint(source)
    layout = detect_layout(sd, model)
    mapped = {_rename(k, layout): v for k, v in sd.items()}
    own = model.state_dict()
    in_chans = getattr(model, "in_chans", 3)
    for k, v in list(mapped.items()):
        rgb_kernel = v.dim() == 4 and v.shape[1] == 3 != in_chans
        if rgb_kernel and k in own and own[k].shape == (v.shape[0], in_chans, *v.shape[2:]):
            mapped[k] = _adapt_first_conv(v, in_chans)
    name = getattr(model, "model_name", type(model).__name__)
    resettable = _classifier_keys(model) if reset_classifier else set()
    skipped = sorted(k for k in resettable if k in mapped and mapped[k].shape != own[k].shape)
    for k in skipped:
        del mapped[k]
    missing = [
        k for k in own if k not in mapped and k not in skipped and not k.endswith("num_batches_tracked")
    ]
    unexpected = [k for k in mapped if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(mapped[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in mapped and mapped[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        hint = "  Is it the checkpoint of another architecture or of other options (SE reduction, ...)?"
        if any(k in _classifier_keys(model) for k in (s.split(":")[0] for s in shapes)):
            hint += (
                " For another class count pass num_classes=N to create_model to re-initialise the classifier."
            )
        groups = [
            ("missing in checkpoint", missing, 10),
            ("unexpected in checkpoint", unexpected, 10),
            ("shape mismatch", shapes, 5),
        ]
        title = f"checkpoint (read as {layout!r} layout) does not fit {name}:"
        raise WeightsMismatchError(mismatch_message(title, groups, hint))
    implied = meta.get("layout") or IMPLIED_LAYOUT.get(layout)
    built = getattr(model, "layout", None)
    if implied and built and implied != built:
        raise WeightsMismatchError(
            f"these weights were trained in the {implied!r} layout, but {name} was built with "
            f"layout={built!r}: they would load and compute another function (stride placement, "
            f"max-pool mode). Build the model with create_model(..., layout={implied!r})."
        )
    model.load_state_dict(mapped, strict=False)
    if skipped:
        warnings.warn(
            f"{name}: classifier ({', '.join(skipped)}) re-initialised for {own[skipped[0]].shape[0]} "
            "classes; every other weight loaded from the checkpoint",
            stacklevel=2,
        )
    if isinstance(meta.get("preprocessing"), Mapping):
        model.preprocessing = Preprocessing.from_dict(dict(meta["preprocessing"]))
    classes = meta.get("classes")
    fc = getattr(model, "fc", None)
    if not skipped and isinstance(classes, (list, tuple)) and isinstance(fc, nn.Linear):
        if len(classes) == fc.out_features:
            model.class_names = [str(c) for c in classes]
    return LoadReport(layout, len(mapped), meta)


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename: a crash at any moment
    leaves either the previous file or the new one, never a truncated one. A failed write (a full
    disk, a quota) raises ``OSError`` naming the file; the previous file stays and the temporary
    file is removed. The file gets the permissions of any new file (umask), not mkstemp's 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        kept = "the previous file is unchanged" if path.exists() else "nothing was written"
        raise OSError(f"could not write {path}: {error_summary(e)} (disk full or over quota?); {kept}") from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


@functools.cache
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def error_summary(e: BaseException) -> str:
    """The innermost cause of an error, in one line (torch wraps the OSError of a full disk)."""
    while e.__cause__ is not None or e.__context__ is not None:
        e = e.__cause__ or e.__context__
    text = str(e).strip().splitlines()
    return text[-1] if text else type(e).__name__


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files (``.NAME.*.tmp``) that killed :func:`atomic_save` calls left."""
    removed = []
    for tmp in Path(folder).glob(".*.tmp"):
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
    return removed


def checkpoint_metadata(model: nn.Module) -> dict[str, Any]:
    """What a checkpoint records beside the tensors so that it can be rebuilt and used correctly."""
    meta: dict[str, Any] = {"format": CHECKPOINT_FORMAT}
    for key, attr in (("arch", "model_name"), ("create_kwargs", "create_kwargs"), ("layout", "layout")):
        if getattr(model, attr, None) is not None:
            meta[key] = getattr(model, attr)
    if isinstance(getattr(model, "preprocessing", None), Preprocessing):
        meta["preprocessing"] = model.preprocessing.as_dict()
    if getattr(model, "class_names", None):
        meta["classes"] = list(model.class_names)
    return meta


def save_weights(model: nn.Module, path: str | Path, **extra: Any) -> Path:
    """Save ``model``'s weights with their metadata (architecture, options, layout, preprocessing)."""
    model = getattr(model, "module", model)  # DDP
    return atomic_save({"model": model.state_dict(), **checkpoint_metadata(model), **extra}, path)
