"""One training loop for one process or many, and the evaluation of a checkpoint.

:func:`train` takes a validated :class:`~senet.train.config.Config` and leaves a run folder:
``config.yaml`` (the resolved config: ``--config run/config.yaml`` repeats the run),
``metrics.jsonl``, ``last.pt`` / ``best.pt``, TensorBoard ``events/`` and ``curves.png``.
Under ``torchrun`` the same loop runs in every process with DistributedDataParallel; only rank 0
writes. Checkpoints are written at the end of every epoch with the random states, and every
epoch's data order and augmentation follow from ``(seed, epoch)``, so ``--resume`` after a kill
continues exactly where an uninterrupted run would be.
"""

from __future__ import annotations

import fnmatch
import itertools
import json
import math
import random
import signal
import sys
import time
import warnings
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from ..data import Data, DataConfig, build_data
from ..factory import create_model, load_model
from ..models import model_info
from ..preprocessing import Preprocessing
from ..weights import checkpoint_metadata, read_checkpoint, remove_stale_temporaries
from .checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint, unwrap
from .config import RESUMABLE_CHANGES, Config, OptimConfig, canonical
from .distributed import Dist, all_reduce_sum, broadcast_buffers, pick_device, setup, teardown
from .interrupt import TrainingInterrupted, stop_requests
from .locks import exclusive
from .runlog import RunLog, check_run_folder
from .schedule import LRFactor, PlateauDecay, restore_scheduler

__all__ = ["RunResult", "TrainingDiverged", "evaluate", "native_bf16", "resolve_amp", "train", "trained_data"]


SYNC_STEPS = 25  # training steps between two reads of the loss by the host


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


@dataclass
class RunResult:
    """What a finished run reports (the run folder holds the rest)."""

    out: Path
    epochs: int
    best_top1: float
    final: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    model: nn.Module | None = field(default=None, repr=False)


def _config_differences(saved: dict[str, Any], cfg: Config) -> list[str]:
    now, saved = cfg.to_dict(), canonical(saved)  # an old run's `schedule: onecycle` is today's triangle
    return sorted(k for k in now if k not in RESUMABLE_CHANGES and k in saved and saved[k] != now[k])


def _class_difference(saved: list[str], now: list[str], data_dir: Any) -> str:
    """One line naming how the class list of a checkpoint differs from the data's."""
    only_saved = [c for c in saved if c not in now]
    only_now = [c for c in now if c not in saved]
    if only_saved or only_now:
        what = f"classes only in the checkpoint: {only_saved[:5]}, only in {data_dir}: {only_now[:5]}"
    else:
        what = "the same class names in another order"
    return f"the checkpoint was trained on {len(saved)} classes, {data_dir} has {len(now)} ({what})"


def _report_data(data: Any, out: Path) -> None:
    """Tell the data's notices and skipped files; list the skipped ones in ``skipped_images.txt``.

    Files that fail to decode only when a streaming worker reads them are appended to the same
    list by the workers (see :class:`senet.data.FolderDataset`).
    """
    listing = out / "skipped_images.txt"  # path<TAB>reason per line
    for loader in (data.train, data.val):
        ds = getattr(getattr(loader, "loader", None), "dataset", None)
        if hasattr(ds, "skip_log"):
            ds.skip_log = str(listing)
    _tell_data("train", data.notices, data.skipped[:10])
    if not data.skipped:
        return
    more = f" ({len(data.skipped) - 10} more not shown)" if len(data.skipped) > 10 else ""
    print(
        f"senet train: skipped {len(data.skipped)} unreadable image file(s){more}, listed in {listing} "
        "(--strict-data refuses such data instead)",
        flush=True,
    )
    listing.write_text("".join(f"{p}\t{r}\n" for p, r in data.skipped))


def _warmup_note(o: OptimConfig, factor: LRFactor) -> str:
    if not factor.warmup_epochs:
        return ""
    note = f", {factor.warmup_epochs:g}-epoch {o.warmup} warm-up"
    if factor.warmup_epochs < o.warmup_epochs:
        note += f": {o.warmup_epochs:g} capped at a fifth of the run"
    return note


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively: CUDA with bf16 support; a CPU with AVX512-BF16
    or AMX tiles (detected, not assumed). Elsewhere bf16 is emulated: on an AVX2 CPU a ResNet-56
    training step in bf16 autocast took 17x the float32 time (docs/performance.md)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return False


def resolve_amp(amp: str, device: torch.device) -> str:
    """``amp: auto`` -> ``bf16`` where ``device`` computes it natively, else ``none``; others as given."""
    if amp != "auto":
        return amp
    return "bf16" if native_bf16(device) else "none"


def _autocast(amp: str, device: torch.device) -> Any:
    if amp == "none":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


@torch.no_grad()
def _run_eval(
    model: nn.Module, loader: Any, d: Dist, channels_last: bool = False, flip: bool = False
) -> dict[str, float]:
    """Summed loss and top-1/top-5 over ``loader``; ``flip`` averages the class probabilities of
    each image and its mirror image (test-time augmentation; the loss is then of the average).
    Always in float32, whatever ``amp`` the training step used: a run's validation figures then equal
    ``senet eval``'s of its checkpoint, and do not depend on the arithmetic of the machine."""
    model.eval()
    loss_sum = top1 = top5 = n = 0.0
    crit = nn.CrossEntropyLoss(reduction="sum")
    for x, y in loader:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        logits = model(x)
        if flip:
            probs = (logits.softmax(1) + model(x.flip(3)).softmax(1)) / 2
            logits = probs.clamp_min(1e-12).log()  # log of the mean: its argmax and loss
        loss_sum += float(crit(logits, y))
        hits = logits.topk(min(5, logits.shape[1]), dim=1).indices.eq(y.view(-1, 1))
        top1, top5, n = top1 + int(hits[:, :1].sum()), top5 + int(hits.sum()), n + len(y)
    loss_sum, top1, top5, n = all_reduce_sum([loss_sum, top1, top5, n], d)
    n = max(n, 1)
    return {"loss": loss_sum / n, "top1": 100 * top1 / n, "top5": 100 * top5 / n, "images": int(n)}


def _build_model(cfg: Config, num_classes: int, d: Dist) -> nn.Module:
    """``cfg.model`` for ``num_classes`` classes, from ``cfg.weights`` when given (fine-tuning): any
    weights load_model reads; a classifier of another width starts fresh, with one notice line."""
    if not cfg.weights:
        return create_model(cfg.model, num_classes=num_classes, **cfg.model_kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_model(cfg.weights, cfg.model, num_classes=num_classes, **cfg.model_kwargs)
    if d.is_main:
        print(f"senet train: {cfg.model} starts from the weights {cfg.weights}", flush=True)
        for w in caught:
            print(f"senet train: notice: {w.message}", flush=True)
        prep, data = getattr(model, "preprocessing", None), cfg.data
        if isinstance(prep, Preprocessing) and (
            [round(v, 4) for v in prep.mean] != [round(v, 4) for v in data.mean]
            or [round(v, 4) for v in prep.std] != [round(v, 4) for v in data.std]
        ):
            print(
                f"senet train: notice: the weights were trained on inputs normalised with mean "
                f"{list(prep.mean)} std {list(prep.std)}; this run uses {data.mean} / {data.std} "
                "(pass --mean/--std to match them)",
                flush=True,
            )
    return model


def _classifier_params(model: nn.Module) -> set[int]:
    """ids of the classifier's parameters (``model.fc``, every family's last layer)."""
    fc = getattr(model, "fc", None)
    if not isinstance(fc, nn.Module):
        raise ValueError(f"{type(model).__name__} has no 'fc' classifier: freeze_backbone_epochs needs one")
    return {id(p) for p in fc.parameters()}


def _freeze(model: nn.Module, patterns: list[str]) -> None:
    """Stop training the parameters whose names match a shell-style pattern (e.g. ``*.se.*``)."""
    names = [n for n, _ in model.named_parameters()]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            raise ValueError(
                f"freeze_params: {pattern!r} matches no parameter of the model (names look like {names[0]!r})"
            )
    for name, p in model.named_parameters():
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
            p.requires_grad_(False)


def _run_lock(out: Path, d: Dist) -> AbstractContextManager[None]:
    """Hold ``OUT/.train.lock`` while training (rank 0): a second process training into the same
    folder is refused with one line instead of both overwriting each other's checkpoints."""
    busy = f"{out} is being trained into by another process; wait for it, or choose another --out"
    return exclusive(out / ".train.lock", busy) if d.is_main else nullcontext()


def train(cfg: Config) -> RunResult:
    """Train ``cfg.model`` with ``cfg``'s recipe and leave a run folder in ``cfg.runtime.out``.

    Raises ``ValueError`` / ``FileNotFoundError`` with one line for anything wrong in the setup
    (before training starts) and :class:`TrainingDiverged` when the loss becomes NaN or inf.
    """
    d = setup()
    threads = torch.get_num_threads()
    try:
        return _train(cfg, d)
    finally:
        torch.set_num_threads(threads)
        teardown(d)


def _train(cfg: Config, d: Dist) -> RunResult:
    t_start = time.perf_counter()
    o, run = cfg.optim, cfg.runtime
    out = Path(run.out or f"runs/{cfg.recipe or cfg.model}").expanduser()
    cfg.data.root()  # a missing data folder or a file in its place: one line, before any work
    info = model_info(cfg.model)
    if o.batch_size % (d.world * o.accum_steps):
        raise ValueError(
            f"batch_size={o.batch_size} must be divisible by processes x accum_steps "
            f"= {d.world * o.accum_steps}"
        )
    if run.sync_bn and d.device.type == "cpu" and d.enabled:
        raise ValueError(
            "sync_bn needs CUDA: torch's SyncBatchNorm has no CPU implementation (drop --sync-bn)"
        )
    if o.nesterov and o.momentum == 0:
        raise ValueError("nesterov needs momentum > 0")
    if run.amp == "auto":  # the run's config.yaml records the choice
        cfg = cfg.replace(amp=resolve_amp(run.amp, d.device))
    if run.resume and not (out / "last.pt").is_file():
        raise FileNotFoundError(f"--resume: {out / 'last.pt'} does not exist (train without --resume first)")
    if d.is_main:
        check_run_folder(out, cfg.runtime.resume, d.rank)
    with _run_lock(out, d):
        trainer = _Trainer(cfg, d, out, info)
        if run.resume:
            trainer.resume()
        return trainer.run(t_start)


@dataclass
class _Epoch:
    """The running sums of the epoch in progress; ``partial`` of a mid-epoch checkpoint restores them.

    Loss and correct counts add up on the device; the host reads them every ``SYNC_STEPS`` steps
    (divergence check, progress), not every step: no stall per step on a GPU.
    """

    number: int
    loss_acc: torch.Tensor
    correct: torch.Tensor
    window: torch.Tensor  # loss summed since the last read
    seen: int = 0
    first: int = 0  # images seen at the start of the window
    first_step: int = 0
    lr: float = 0.0
    skip: int = 0  # steps made before an interruption
    t0: float = 0.0

    @classmethod
    def start(cls, number: int, at: dict[str, Any], lr: float, device: torch.device) -> _Epoch:
        """Epoch ``number``, continued from a mid-epoch checkpoint's position ``at`` (or fresh)."""
        return cls(
            number,
            loss_acc=torch.tensor(at.get("loss_acc", 0.0), device=device),
            correct=torch.tensor(at.get("correct", 0), device=device, dtype=torch.long),
            window=torch.tensor(at.get("window", 0.0), device=device),
            seen=at.get("seen", 0),
            first=at.get("first", 0),
            first_step=at.get("first_step", 0),
            lr=at.get("lr", lr),
            skip=at.get("step", 0),
            t0=time.perf_counter() - at.get("seconds", 0.0),
        )

    def position(self, step: int) -> dict[str, Any]:
        """Where the epoch stands after ``step`` steps: what a mid-epoch checkpoint's ``partial`` holds."""
        return dict(
            step=step,
            loss_acc=float(self.loss_acc),
            window=float(self.window),
            lr=self.lr,
            correct=int(self.correct),
            seen=self.seen,
            first=self.first,
            first_step=self.first_step,
            epoch=self.number,
            seconds=time.perf_counter() - self.t0,
        )


class _Trainer:
    """One run of :func:`train`, in the steps a reader thinks of: setup (``__init__``: data, model,
    optimiser, schedule, scaler, EMA), :meth:`resume`, then for every epoch :meth:`train_epoch`,
    :meth:`evaluate_epoch` and :meth:`save_epoch`. The divergence check lives in :meth:`_diverged`."""

    def __init__(self, cfg: Config, d: Dist, out: Path, info: Any) -> None:
        self.cfg, self.d, self.out, self.info = cfg, d, out, info
        o, run = cfg.optim, cfg.runtime
        if d.is_main and remove_stale_temporaries(out):
            print(f"senet train: removed the temporary files of an interrupted save in {out}", flush=True)
        if run.threads:
            torch.set_num_threads(run.threads)
        torch.manual_seed(run.seed)
        random.seed(run.seed)
        self.per_rank = o.batch_size // d.world
        self.data = build_data(
            cfg.data,
            download=cfg.data.download and d.is_main,
            batch_size=self.per_rank,
            eval_batch_size=run.eval_batch_size,
            seed=run.seed,
            rank=d.rank,
            world=d.world,
            device=d.device,
        )
        assert self.data.train is not None
        if d.is_main:
            _report_data(self.data, out)
        self.steps_per_epoch = len(self.data.train)
        if self.steps_per_epoch == 0:
            images = len(getattr(self.data.train, "data", None) or self.data.train.loader.dataset)
            raise ValueError(
                f"batch_size={o.batch_size} exceeds the {images} training images"
                f"{f' of {d.world} processes' if d.world > 1 else ''}: give a smaller --batch-size"
            )
        self.model = self._model()
        self.bn = [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        _freeze(self.model, o.freeze_params)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(
            params, lr=o.scaled_lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay
        )
        self.factor = LRFactor.from_config(o, self.steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.factor)
        self.plateau = None
        if o.schedule == "plateau":
            self.plateau = PlateauDecay(self.optimizer, self.factor, o.gamma, o.plateau_patience)
        self.scaler = torch.amp.GradScaler(d.device.type, enabled=run.amp == "fp16")
        self.ema = None  # the moving average of the weights and BN statistics, evaluated beside them
        if o.ema_decay:
            self.ema = AveragedModel(
                self.model, multi_avg_fn=get_ema_multi_avg_fn(o.ema_decay), use_buffers=True
            )
        self.start_epoch, self.best_top1 = 1, -1.0
        self.history: list[dict[str, Any]] | None = None  # a resumed run's metrics so far
        self.partial: dict[str, Any] = {}  # a mid-epoch checkpoint's position (written on SIGINT/SIGTERM)

    def _model(self) -> nn.Module:
        cfg, d = self.cfg, self.d
        model = _build_model(cfg, len(self.data.classes), d).to(d.device)
        model.class_names = list(self.data.classes)
        data = cfg.data
        model.preprocessing = Preprocessing(
            mean=tuple(data.mean),
            std=tuple(data.std),
            input_size=(3, data.eval_crop, data.eval_crop),
            crop_fraction=data.eval_crop / (data.eval_resize or data.eval_crop),
        )
        if cfg.runtime.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if cfg.runtime.sync_bn and d.enabled:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return model

    def resume(self) -> None:
        """Continue from ``OUT/last.pt``: weights, optimiser, schedule, scaler, EMA, random states."""
        cfg, out, o = self.cfg, self.out, self.cfg.optim
        ckpt = load_checkpoint(out / "last.pt", map_location=self.d.device)
        diff = _config_differences(ckpt.get("config", {}), cfg)
        if diff:
            raise ValueError(f"--resume: the config differs from the checkpoint's in {', '.join(diff)}")
        saved_classes = ckpt.get("classes")
        if saved_classes and list(saved_classes) != list(self.data.classes):
            raise ValueError(
                f"--resume: {_class_difference(saved_classes, self.data.classes, cfg.data.data_dir)}"
            )
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.plateau is not None:
            self.plateau.load_state_dict(ckpt["plateau"])
        if self.ema is not None:
            self.ema.module.load_state_dict(ckpt["ema"])
            self.ema.n_averaged.fill_(int(ckpt["ema_steps"]))
        restore_scheduler(self.scheduler, ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        restore_rng(ckpt["rng"])
        self.start_epoch, self.best_top1 = int(ckpt["epoch"]) + 1, float(ckpt["best_top1"])
        if self.start_epoch - 1 > o.epochs:
            raise ValueError(
                f"--resume: {out / 'last.pt'} has already trained {self.start_epoch - 1} epochs, more "
                f"than --epochs {o.epochs}: give --epochs {self.start_epoch - 1} or more"
            )
        self.history = ckpt.get("history")
        self.partial = ckpt.get("partial") or {}
        old_lr = ckpt.get("config", {}).get("lr", o.lr)
        if self.d.is_main and old_lr != o.lr:
            print(f"senet train: resumed with lr {o.lr:g} (the run so far used {old_lr:g})", flush=True)

    def _prepare(self) -> None:
        """Wrap the model for many processes and compilation; open the run log; say what runs."""
        cfg, d, o = self.cfg, self.d, self.cfg.optim
        self.net: nn.Module = self.model
        if d.enabled:
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[d.device] if d.device.type == "cuda" else None
            )
        if cfg.runtime.compile:
            self.net = torch.compile(self.net)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=o.label_smoothing)
        self.log = RunLog(self.out, self.start_epoch, cfg.to_yaml(), self.history) if d.is_main else None
        self.show_bar = d.is_main and sys.stderr.isatty()
        # Without a terminal (nohup, a job scheduler, `> log 2>&1`): a progress line ~10 times an epoch.
        self.log_every = cfg.runtime.log_interval or SYNC_STEPS * max(
            1, round(self.steps_per_epoch / (10 * SYNC_STEPS))
        )
        self.head = _classifier_params(self.model) if o.freeze_backbone_epochs else set()
        if d.is_main:
            data, params = self.data, sum(p.numel() for p in self.model.parameters()) / 1e6
            print(
                f"senet train: {cfg.model} ({params:.2f}M params) on {len(data.train) * o.batch_size} "
                f"train / {data.val.num_samples * d.world} val images of {cfg.data.data_dir}, {d.world} "
                f"process(es) on {d.device.type}, batch {o.batch_size}, lr {o.scaled_lr:g} "
                f"({o.schedule}{_warmup_note(o, self.factor)}), {o.epochs} epochs -> {self.out}",
                flush=True,
            )

    def state(self, epoch: int, history: list[dict[str, Any]]) -> dict[str, Any]:
        """The checkpoint after ``epoch``: everything a resumed run needs, and the model's metadata."""
        cfg, model = self.cfg, unwrap(self.model)
        ema = self.ema
        return {
            "model": model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            **({"plateau": self.plateau.state_dict()} if self.plateau is not None else {}),
            **({"ema": ema.module.state_dict(), "ema_steps": int(ema.n_averaged)} if ema is not None else {}),
            "epoch": epoch,
            "best_top1": self.best_top1,
            "rng": capture_rng(),
            **checkpoint_metadata(model),  # format, arch + create_kwargs, preprocessing, classes
            "config": cfg.to_dict(),
            "dataset": self.info.dataset,
            "history": history,  # the run's metrics up to this epoch: metrics.jsonl is rebuilt from it
        }

    def run(self, t_start: float) -> RunResult:
        self._prepare()
        final: dict[str, Any] = {}
        self.lr = self.scheduler.get_last_lr()[0]
        try:  # SIGINT / SIGTERM: finish the step, save mid-epoch, stop (interrupt.py)
            with stop_requests() as self.stop:
                for epoch in range(self.start_epoch, self.cfg.optim.epochs + 1):
                    if self.stop:
                        raise TrainingInterrupted(
                            f"interrupted ({self.stop.name}) after epoch {epoch - 1}; resume with --resume",
                            self.stop.signum,
                        )
                    seen, loss_sum, correct, seconds = self.train_epoch(epoch)
                    final = self.evaluate_epoch(epoch, seen, loss_sum, correct, seconds)
                    self.save_epoch(epoch, final)
        finally:
            if self.log is not None:
                self.log.close()
        history = self.log.history if self.log is not None else []
        final = final or (history[-1] if history else {})  # a resumed run that had already finished
        seconds = time.perf_counter() - t_start
        return RunResult(self.out, self.cfg.optim.epochs, self.best_top1, final, history, seconds, self.model)

    def _set_modes(self, epoch: int) -> tuple[bool, bool]:
        """Train mode, except BN in the frozen-BN epochs and in the classifier-only epochs of
        fine-tuning (whose backbone BN statistics stay too). Returns (frozen BN, frozen backbone)."""
        o = self.cfg.optim
        self.net.train()
        frozen_bn = bool(o.freeze_bn_epochs) and epoch > o.epochs - o.freeze_bn_epochs
        frozen_backbone = epoch <= o.freeze_backbone_epochs
        if frozen_bn or frozen_backbone:
            for m in self.bn:
                m.eval()
        return frozen_bn, frozen_backbone

    def train_epoch(self, epoch: int) -> tuple[int, float, int, float]:
        """One pass over the training data; (images, summed loss, correct, seconds) over all processes."""
        self.data.train.set_epoch(epoch)
        frozen_bn, frozen_backbone = self._set_modes(epoch)
        at = self.partial if self.partial.get("epoch") == epoch else {}
        e = _Epoch.start(epoch, at, self.lr, self.d.device)
        desc, total = f"epoch {epoch}/{self.cfg.optim.epochs}", self.steps_per_epoch
        bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, disable=not self.show_bar)
        batches = itertools.islice(self.data.train, e.skip, None) if e.skip else self.data.train
        for step, (x, y) in enumerate(batches, start=e.skip):
            self._step(x, y, e, frozen_bn, frozen_backbone)
            self._after_step(e, step + 1, bar)
        bar.close()
        seconds = time.perf_counter() - e.t0
        loss_sum, correct, seen = all_reduce_sum([float(e.loss_acc), int(e.correct), e.seen], self.d)
        broadcast_buffers(self.model, self.d)
        self.lr = e.lr
        return int(seen), loss_sum, int(correct), seconds

    def _step(
        self, x: torch.Tensor, y: torch.Tensor, e: _Epoch, frozen_bn: bool, frozen_backbone: bool
    ) -> None:
        """One optimiser step on a batch (in ``accum_steps`` micro-batches), then the schedule's."""
        d, run, accum = self.d, self.cfg.runtime, self.cfg.optim.accum_steps
        if run.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        micro = self.per_rank // accum
        for i in range(accum):
            xs, ys = x[i * micro : (i + 1) * micro], y[i * micro : (i + 1) * micro]
            sync = nullcontext() if (i == accum - 1 or not d.enabled) else self.net.no_sync()
            with sync:
                with _autocast(run.amp, d.device):
                    logits = self.net(xs)
                    loss = self.criterion(logits.float(), ys)
                self.scaler.scale(loss / accum).backward()
            e.window += loss.detach() * len(ys)
            e.correct += (logits.argmax(1) == ys).sum()
        if frozen_bn:
            for m in self.bn:
                m.zero_grad(set_to_none=True)
        if frozen_backbone:  # gradients dropped before the step (DDP still saw every parameter)
            for p in self.model.parameters():
                if id(p) not in self.head:
                    p.grad = None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        e.lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        e.seen += len(y)

    def _after_step(self, e: _Epoch, done: int, bar: tqdm) -> None:
        """After ``done`` steps of the epoch: stop when told to, and every ``SYNC_STEPS`` steps read
        the loss (divergence check) and show progress."""
        d, stop = self.d, self.stop
        if stop and not d.enabled:
            self._save_interrupted(e, done)
        if done % SYNC_STEPS and done % self.log_every and done != self.steps_per_epoch:
            return
        window_loss = float(e.window) / (e.seen - e.first)
        finite = math.isfinite(window_loss)
        if d.enabled:
            flags = all_reduce_sum([0.0 if finite else 1.0, float(stop.signum)], d)
            finite = flags[0] == 0
            if flags[1] and done != self.steps_per_epoch:  # a rank was told to stop
                stop.signum = stop.signum or signal.SIGTERM
                self._save_interrupted(e, done)
        if not finite:
            what = f"loss became {window_loss} at epoch {e.number}, steps {e.first_step + 1}-{done}"
            self._diverged(f"{what} (lr {e.lr:.3g})", e.number)
        e.loss_acc += e.window
        e.window.zero_()
        e.first, e.first_step = e.seen, done
        ips = e.seen * d.world / (time.perf_counter() - e.t0)
        if d.is_main and not self.show_bar and done % self.log_every == 0 and done != self.steps_per_epoch:
            print(
                f"  epoch {e.number}/{self.cfg.optim.epochs} step {done}/{self.steps_per_epoch}"
                f"  loss {window_loss:.4f}  lr {e.lr:.4g}  {ips:.0f} img/s",
                flush=True,
            )
        bar.update(done - bar.n)
        bar.set_postfix(loss=f"{window_loss:.3f}", lr=f"{e.lr:.4f}", ips=f"{ips:.0f}")

    def _diverged(self, what: str, epoch: int) -> None:
        """Stop the run: the loss or the weights became NaN/inf. Names the last good checkpoint."""
        where = self.out / "last.pt" if epoch > 1 else "none yet (first epoch)"
        raise TrainingDiverged(
            f"{what}; stopped. Last good checkpoint: {where}. Try a lower --lr or more warm-up "
            "(--resume continues from it with a new --lr)"
        )

    def _save_interrupted(self, e: _Epoch, done: int) -> None:
        """Write the mid-epoch ``last.pt`` of a run told to stop and raise :class:`TrainingInterrupted`.

        The checkpoint is that of epoch ``epoch - 1`` plus ``partial``: the steps made in the epoch and
        its running sums, so ``--resume`` continues the epoch bit for bit."""
        at = e.position(done)
        if self.d.is_main:
            ckpt = self.state(e.number - 1, list(self.log.history))
            save_checkpoint({**ckpt, "partial": at}, self.out / "last.pt")
        raise TrainingInterrupted(
            f"interrupted ({self.stop.name}) at epoch {e.number} step {done}; saved {self.out / 'last.pt'}: "
            f"resume with --resume (it continues from that step; last complete epoch: {e.number - 1})",
            self.stop.signum,
        )

    def evaluate_epoch(
        self, epoch: int, seen: int, loss_sum: float, correct: int, seconds: float
    ) -> dict[str, Any]:
        """The epoch's record: training figures, validation of the model (and of its EMA); the
        plateau schedule's decision; refuses weights that became NaN/inf."""
        cfg, d = self.cfg, self.d
        t1 = time.perf_counter()
        last = cfg.runtime.channels_last
        val = _run_eval(unwrap(self.net), self.data.val, d, channels_last=last)
        ema_val = _run_eval(self.ema.module, self.data.val, d, channels_last=last) if self.ema else {}
        record = {
            "epoch": epoch,
            "train_loss": loss_sum / seen,
            "train_acc": 100 * correct / seen,
            **{f"val_{k}": val[k] for k in ("loss", "top1", "top5")},
            "lr": self.lr,
            "seconds": seconds,
            "eval_seconds": time.perf_counter() - t1,
            "images_per_s": seen / seconds,
            **{f"ema_val_{k}": ema_val[k] for k in ("loss", "top1", "top5") if k in ema_val},
        }
        if self.plateau is not None and self.plateau.step(val["loss"]) and d.is_main:
            print(
                f"senet train: validation loss {val['loss']:.4f} has not improved for "
                f"{cfg.optim.plateau_patience + 1} epoch(s): lr x{cfg.optim.gamma:g} from the next step",
                flush=True,
            )
        if _nonfinite(unwrap(self.model)):
            self._diverged(f"weights became nan/inf in epoch {epoch} (lr {self.lr:.3g})", epoch)
        return record

    def save_epoch(self, epoch: int, record: dict[str, Any]) -> None:
        """Log the epoch and write best.pt (when it is the best) and last.pt (rank 0 only)."""
        is_best = record["val_top1"] > self.best_top1
        self.best_top1 = max(self.best_top1, record["val_top1"])
        if self.log is None:
            return
        ckpt = self.state(epoch, [*self.log.history, record])
        # The log, then best.pt, then last.pt: a kill between any two leaves files that a resumed
        # run (from last.pt, whose history rebuilds metrics.jsonl) completes exactly.
        self.log.log_epoch(record)
        if is_best:
            save_checkpoint(ckpt, self.out / "best.pt")
        save_checkpoint(ckpt, self.out / "last.pt")
        ema = f" (EMA {record['ema_val_top1']:5.2f}%)" if "ema_val_top1" in record else ""
        print(
            f"epoch {epoch:>3}/{self.cfg.optim.epochs}  train loss {record['train_loss']:.4f} "
            f"acc {record['train_acc']:5.2f}%  val top-1 {record['val_top1']:5.2f}% top-5 "
            f"{record['val_top5']:5.2f}%{ema}  lr {record['lr']:.4g}  {record['seconds']:.1f}s  "
            f"{record['images_per_s']:.0f} img/s",
            flush=True,
        )


def evaluate(
    checkpoint: str | Path,
    data_dir: str | Path,
    *,
    model: str | None = None,
    crop: int | None = None,
    resize: int = 0,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    batch_size: int = 250,
    workers: int = 2,
    val_subset: int = 0,
    flip: bool = False,
    json_path: str | Path | None = None,
    ema: bool = False,
) -> dict[str, Any]:
    """Top-1 / top-5 accuracy and error of a set of weights on ``data_dir``'s val (or test) split.

    ``checkpoint`` is a ``senet train`` checkpoint (the model, its class count, normalisation and
    evaluation crop come from its config; read in memory when its recipe did) or any weights
    :func:`senet.load_model` reads: our files, or Cadene / timm / torchvision / converted
    Caffe weights with ``model`` naming the network. Those are evaluated with the preprocessing the
    weights carry (the registry's default when they carry none), each part replaceable by ``crop``,
    ``resize``, ``mean``, ``std``; with ``crop`` alone the resize keeps the weights' crop fraction.
    ``flip`` averages the predictions for each image and its horizontal mirror (test-time
    augmentation; not what the paper's single-crop figures use). The result, with the
    preprocessing used, is also written as JSON to ``json_path`` (default:
    ``eval-<checkpoint>-<crop>[-flip][-ema].json`` beside the checkpoint). ``ema`` evaluates the
    exponential moving average of the weights a run trained with ``ema_decay`` keeps in its checkpoints.
    """
    from ..weights import _is_url

    ckpt_path = Path(str(checkpoint))
    ckpt = None if _is_url(checkpoint) else load_checkpoint(ckpt_path)
    device = pick_device()
    if ema and not (isinstance(ckpt, dict) and isinstance(ckpt.get("ema"), dict)):
        raise ValueError(
            f"{checkpoint} holds no weight average: --ema needs a checkpoint of a run trained with "
            "--ema-decay"
        )
    if ema:
        ckpt = {**ckpt, "model": ckpt["ema"]}  # the average in the place of the weights
    loader = dict(val_subset=val_subset, workers=workers, eval_batch_size=batch_size, device=device)
    if isinstance(ckpt, dict) and "config" in ckpt and model is None and mean is None and std is None:
        net, batches, about = _run_checkpoint_data(ckpt, data_dir, crop, resize, loader)
    else:
        net = load_model(ckpt if ema else str(checkpoint), model).to(device)  # errors name the file
        _check_finite(net, str(checkpoint))
        prep = net.preprocessing.adjusted(crop=crop, resize=resize, mean=mean, std=std)
        batches, about = _folder_data(net, prep, data_dir, loader)
    t0 = time.perf_counter()
    m = _run_eval(net, batches, Dist(device=device), flip=flip)
    result = {"checkpoint": str(checkpoint), **about, **{k: m[k] for k in ("images", "top1", "top5")}}
    result |= {"top1_err": 100 - m["top1"], "top5_err": 100 - m["top5"], "loss": m["loss"]}
    result |= {"seconds": time.perf_counter() - t0, "data_dir": str(data_dir), "flip": flip, "ema": ema}
    default = f"eval-{ckpt_path.stem}-{result['crop']}{'-flip' if flip else ''}{'-ema' if ema else ''}.json"
    path = Path(json_path) if json_path else (ckpt_path.with_name(default) if ckpt else Path(default))
    try:
        path.write_text(json.dumps(_finite_or_none(result), indent=2, allow_nan=False) + "\n")
    except OSError as e:
        raise ValueError(f"cannot write {path}: {e.strerror or e} (pass --json PATH)") from None
    result["json"] = str(path)
    return result


def _tell_data(command: str, notices: list[str], skipped: list[tuple[str, str]]) -> None:
    """A command's lines on the data: notices, and the unreadable files left out."""
    for notice in notices:
        print(f"senet {command}: notice: {notice}", flush=True)
    for path, reason in skipped:
        print(f"senet {command}: skipped unreadable image {path} ({reason})", flush=True)


def _nonfinite(model: nn.Module) -> list[str]:
    """The names of ``model``'s floating-point tensors holding NaN or inf."""
    return [k for k, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]


def _check_finite(model: nn.Module, what: str) -> None:
    """Refuse weights holding NaN or inf: their accuracy (chance level) would be a silent lie."""
    bad = _nonfinite(model)
    if bad:
        raise ValueError(
            f"{what} holds NaN/inf in {len(bad)} tensors (e.g. {bad[0]}): the weights of a diverged "
            "run; evaluate an earlier checkpoint (best.pt) instead"
        )


def _finite_or_none(obj: Any) -> Any:
    """``obj`` with NaN/inf floats as ``None``: JSON has no NaN, and strict readers reject it."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_none(v) for v in obj]
    return obj


def trained_data(ckpt: dict[str, Any], data_dir: str | Path, by_name: bool = True, **changes: Any) -> Data:
    """The evaluation split of ``data_dir`` through the data pipeline of the run a ``senet train``
    checkpoint (today's format, as :func:`~senet.train.load_trained` gives it) comes from: its crop
    and normalisation, in memory when it was, with ``changes`` to its data fields and loader
    (``val_subset``, ``workers``, ``eval_batch_size``, ``device``, ...). Refused in one line unless its
    classes are those the checkpoint's model was trained on (``by_name``: a split holding some of them
    is labelled by their names, told in ``notices``)."""
    classes = ckpt.get("classes") if by_name else None
    fixed = dict(data_dir=str(data_dir), train=False, download=False, strict_data=False, classes=classes)
    data = build_data(DataConfig.from_fields(ckpt["config"]), **fixed, **changes)
    num_classes = ckpt["create_kwargs"]["num_classes"]
    saved = ckpt.get("classes") or [str(i) for i in range(num_classes)]
    if len(data.classes) != num_classes or (ckpt.get("classes") and list(saved) != list(data.classes)):
        raise ValueError(_class_difference(saved, data.classes, data_dir))
    return data


def _run_checkpoint_data(
    ckpt: dict[str, Any], data_dir: str | Path, crop: int | None, resize: int, loader: dict[str, Any]
) -> tuple[nn.Module, Any, dict[str, Any]]:
    """A ``senet train`` checkpoint's model, the evaluation batches of its own run's data pipeline (in
    memory when it was; ``loader``: the data loader's settings) and what the result says of them."""
    _, meta = read_checkpoint(ckpt)  # today's format, from any senet checkpoint
    arch, num_classes = meta.get("arch"), (meta.get("create_kwargs") or {}).get("num_classes")
    if not arch or not num_classes:
        raise ValueError("not a `senet train` checkpoint (it records no architecture and class count)")
    saved = DataConfig.from_fields(ckpt["config"])
    eval_crop = crop or saved.eval_crop
    resize = resize if crop else (resize or saved.eval_resize)
    in_memory = saved.in_memory and not crop  # another crop: decode from the files
    data = trained_data(
        {**ckpt, **meta}, data_dir, eval_crop=eval_crop, eval_resize=resize, in_memory=in_memory, **loader
    )
    _tell_data("eval", data.notices, data.skipped)
    model = load_model(ckpt).to(loader["device"])
    _check_finite(model, "the checkpoint")
    return model, data.val, {"model": arch, "epoch": ckpt.get("epoch"), "crop": eval_crop}


def _folder_data(
    model: nn.Module, prep: Preprocessing, data_dir: str | Path, loader: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """The batches of an ImageFolder split for ``model``, each image prepared by ``prep`` as
    :func:`senet.predict` does, and what the result says of them."""
    from ..data import folder_dataset, match_classes
    from ..data.datasets import find_split
    from ..predict import class_names

    root = DataConfig(data_dir=str(data_dir)).root(train=False)
    split = find_split(root, False)
    recorded = getattr(model, "class_names", None)
    label_by, notices = match_classes(list(recorded), "the weights", split) if recorded else (None, [])
    ds = folder_dataset(split, loader["val_subset"], prep.transform(), classes=label_by)
    _tell_data("eval", notices, ds.skipped)
    names = class_names(model)
    if len(ds.classes) != len(names):
        raise ValueError(
            f"{root} has {len(ds.classes)} classes, the model {len(names)} outputs: these weights "
            "were trained for another class set"
        )
    device, size, workers = loader["device"], loader["eval_batch_size"], loader["workers"]
    batches = torch.utils.data.DataLoader(ds, batch_size=size, num_workers=workers)
    name = getattr(model, "model_name", type(model).__name__)
    about = {"model": name, "epoch": None, "crop": prep.input_size[-1], "preprocessing": prep.as_dict()}
    about["layout"] = getattr(model, "layout", None)
    return ((x.to(device), y.to(device)) for x, y in batches), about
