"""``senet detect train|eval``: train and score the two-stream detector, in named steps.

The set-up follows FRN's training script (HuCaoFighting/FRN ``train_dsec.py``; docs/detection.md):
Adam at 1e-4, ReduceLROnPlateau on the epoch's training loss (patience 3), batch 1 with two-step
gradient accumulation, gradient-norm clipping at 0.1, BatchNorm frozen, the RGB input blanked with
probability 0.15. Every one of these is a config field. A run folder holds what ``senet train``'s
holds: config.yaml, metrics.jsonl (loss, mAP, mAP50 per epoch), TensorBoard events, curves.png and
atomically written ``last.pt`` / ``best.pt`` that ``--resume`` continues exactly.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from ..devices import pick_device
from ..train.checkpoint import capture_rng, restore_rng
from ..train.engine import TrainingDiverged
from ..train.runlog import RunLog, check_run_folder, save_figure
from ..weights import atomic_save, load_file
from .config import DetectConfig
from .detector import create_detector
from .evaluate import coco_evaluate, detections_to_coco
from .events import EventRepresentation

__all__ = ["DetectResult", "evaluate_detector", "load_detector", "make_datasets", "train_detector"]

CHECKPOINT_ARCH = "two_stream_detector"


@dataclass
class DetectResult:
    """What a finished detection run reports (its folder holds the rest)."""

    out: Path
    final: dict[str, Any]
    best_map50: float
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)


def make_datasets(cfg: DetectConfig, splits: tuple[str, ...] | None = None) -> list[Dataset]:
    """The data sets of ``splits`` (default: the config's train and val splits) in the config's layout."""
    from .ddd17 import DDD17Dataset
    from .dsec import DSEC_CLASSES, DSECDetDataset

    if not cfg.data_dir:
        raise ValueError(
            "no data folder: give --data-dir (a DSEC-Det or PKU-DDD17-Car folder; docs/detection.md)"
        )
    root = Path(cfg.data_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"data folder {root} does not exist (docs/detection.md says how to get the data)"
        )
    representation = EventRepresentation(cfg.representation, cfg.bins, cfg.tau_us)
    modalities = tuple(cfg.modalities)
    out: list[Dataset] = []
    for split in splits or (cfg.train_split, cfg.val_split):
        if cfg.dataset == "dsec":
            ds: Dataset = DSECDetDataset(
                root,
                split,
                representation=representation,
                window_us=cfg.window_us,
                **_class_map(cfg.classes, DSEC_CLASSES),
                modalities=modalities,
            )
        else:
            ds = DDD17Dataset.from_folder(root, split, modalities=modalities)
        out.append(ds)
    return out


def _class_map(classes: dict[str, str], names: tuple[str, ...]) -> dict[str, Any]:
    """``classes`` / ``class_names`` of a reader, from a ``{data class: our class}`` mapping ({}: all)."""
    if not classes:
        return {}
    unknown = sorted(set(classes) - set(names))
    if unknown:
        raise ValueError(f"classes: {unknown} are not classes of the data set ({', '.join(names)})")
    ours = list(dict.fromkeys(classes.values()))
    return {"classes": {names.index(k): ours.index(v) for k, v in classes.items()}, "class_names": ours}


def _subset(ds: Dataset, limit: int) -> Dataset:
    return Subset(ds, range(min(limit, len(ds)))) if limit and limit < len(ds) else ds  # type: ignore[arg-type]


def _base(ds: Dataset) -> Any:
    return ds.dataset if isinstance(ds, Subset) else ds


def collate(batch: list[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]]) -> tuple[list, list]:
    """Detection batches are lists: images of one batch may differ in size."""
    return [b[0] for b in batch], [b[1] for b in batch]


def _to(device: torch.device, items: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    return [{k: v.to(device) for k, v in item.items()} for item in items]


def build_detector(
    cfg: DetectConfig, num_classes: int, event_channels: int, class_names: list[str]
) -> nn.Module:
    """The config's detector (backbone, head, fusion, modalities) for ``num_classes`` classes."""
    return create_detector(
        cfg.backbone,
        num_classes,
        head=cfg.head,
        modalities=tuple(cfg.modalities),
        event_channels=event_channels,
        fusion=cfg.fusion,
        fusion_kwargs=dict(cfg.fusion_kwargs),
        min_size=cfg.min_size,
        max_size=cfg.max_size,
        weights_backbone=cfg.weights_backbone or None,
        rgb_blank_prob=cfg.rgb_blank_prob,
        class_names=class_names,
        backbone_kwargs={"norm_eval": cfg.norm_eval} if cfg.norm_eval else None,
    )


def _optimizer(cfg: DetectConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


class CosineFactor:
    """The lr factor of epoch ``e``, ``(1 + cos(pi e / epochs)) / 2``, in closed form: a run resumed with
    more ``epochs`` follows the longer schedule from where it stands (CosineAnnealingLR's recursion
    would not)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def __call__(self, epoch: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min(epoch, self.epochs) / self.epochs))


def _scheduler(cfg: DetectConfig, opt: torch.optim.Optimizer) -> Any:
    if cfg.schedule == "plateau":  # FRN: ReduceLROnPlateau(patience=3) stepped on the epoch's loss
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=cfg.plateau_patience)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(opt, CosineFactor(cfg.epochs))
    return torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0)


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    opt: torch.optim.Optimizer,
    cfg: DetectConfig,
    device: torch.device,
    epoch: int,
) -> dict[str, float]:
    """One pass over the training set; the mean of every loss term. A non-finite loss stops the run."""
    model.train()
    sums: dict[str, float] = {}
    opt.zero_grad(set_to_none=True)
    every = cfg.log_interval or max(1, len(loader) // 5)
    for i, (inputs, targets) in enumerate(loader):
        losses = model(_to(device, inputs), _to(device, targets))
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"the loss became {loss.item()} at epoch {epoch + 1} step {i + 1}; the last good checkpoint "
                "is kept. Try a lower --lr or a smaller --clip-grad-norm"
            )
        (loss / cfg.accum_steps).backward()
        if (i + 1) % cfg.accum_steps == 0 or i + 1 == len(loader):
            if cfg.clip_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
        for k, v in {**losses, "loss": loss}.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        if (i + 1) % every == 0:
            print(
                f"  epoch {epoch + 1}/{cfg.epochs} step {i + 1}/{len(loader)}"
                f"  loss {sums['loss'] / (i + 1):.4f}",
                flush=True,
            )
    return {f"train_{k}" if k == "loss" else k: v / max(len(loader), 1) for k, v in sums.items()}


@torch.no_grad()
def evaluate_detector(
    model: nn.Module, dataset: Dataset, device: torch.device, *, batch_size: int = 2, workers: int = 0
) -> dict[str, Any]:
    """COCO mAP / mAP50 / per-class AP of ``model`` on ``dataset`` (its ``coco_ground_truth()``)."""
    base = _base(dataset)
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate)
    ids: list[int] = []
    preds: list[dict[str, torch.Tensor]] = []
    for inputs, targets in loader:
        preds += [{k: v.cpu() for k, v in p.items()} for p in model(_to(device, inputs))]
        ids += [int(t["image_id"]) for t in targets]
    truth = base.coco_ground_truth()
    if isinstance(dataset, Subset):
        keep = set(ids)
        truth = {
            **truth,
            "images": [im for im in truth["images"] if im["id"] in keep],
            "annotations": [a for a in truth["annotations"] if a["image_id"] in keep],
        }
    return coco_evaluate(truth, detections_to_coco(ids, preds), base.class_names)


def _plot(history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(ep, [h["train_loss"] for h in history], "o-")
    ax1.set(xlabel="epoch", ylabel="training loss", title="loss")
    ax2.plot(ep, [100 * h["val_mAP"] for h in history], "o-", label="mAP")
    ax2.plot(ep, [100 * h["val_mAP50"] for h in history], "o--", label="mAP50")
    ax2.set(xlabel="epoch", ylabel="%", title="held-out COCO AP")
    ax2.legend()
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    save_figure(fig, path)


def _checkpoint(
    model: nn.Module, opt: Any, sched: Any, cfg: DetectConfig, epoch: int, history: list, best: float
) -> dict[str, Any]:
    return {
        "format": 2,
        "arch": CHECKPOINT_ARCH,
        "create_kwargs": model.create_kwargs,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "epoch": epoch,
        "config": cfg.to_dict(),
        "history": history,
        "best_map50": best,
        "rng": capture_rng(),
    }


def load_detector(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The detector of a ``senet detect train`` checkpoint with its weights (eval mode) and the checkpoint."""
    ckpt = load_file(path)
    if not isinstance(ckpt, dict) or ckpt.get("arch") != CHECKPOINT_ARCH:
        raise ValueError(f"{path} is not a `senet detect train` checkpoint (no arch {CHECKPOINT_ARCH!r})")
    model = create_detector(**{**ckpt["create_kwargs"], "weights_backbone": None})
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt


def _prepare_out(cfg: DetectConfig) -> Path:
    out = Path(cfg.out or f"runs/detect-{cfg.recipe or cfg.fusion}").expanduser()
    check_run_folder(out, cfg.resume)
    if cfg.resume and not (out / "last.pt").exists():
        raise ValueError(f"--resume: {out} holds no last.pt to continue (start without --resume)")
    return out


RESUMABLE = frozenset("epochs out resume data_dir workers threads device log_interval description".split())


def _resume(
    cfg: DetectConfig, path: Path, model: nn.Module, opt: torch.optim.Optimizer, sched: Any
) -> tuple[int, list[dict[str, Any]], float]:
    """Load the state of ``path`` into the run; the epoch done, the history and the best mAP50 so far."""
    ckpt = load_file(path, map_location=next(model.parameters()).device)
    saved, now = ckpt.get("config", {}), cfg.to_dict()
    changed = sorted(k for k in now if k not in RESUMABLE and k in saved and saved[k] != now[k])
    if changed:
        raise ValueError(
            f"--resume: {path.parent} was trained with other {', '.join(changed)} "
            f"(e.g. {changed[0]}={saved[changed[0]]!r}); only {', '.join(sorted(RESUMABLE))} may change"
        )
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    sched.load_state_dict(ckpt["scheduler"])
    if isinstance(sched, torch.optim.lr_scheduler.LambdaLR):
        sched.lr_lambdas = [CosineFactor(cfg.epochs)] * len(opt.param_groups)  # this run's length
        for group, base_lr in zip(opt.param_groups, sched.base_lrs, strict=True):
            group["lr"] = base_lr * sched.lr_lambdas[0](sched.last_epoch)
    restore_rng(ckpt["rng"])
    return ckpt["epoch"], ckpt["history"], ckpt["best_map50"]


def train_detector(cfg: DetectConfig) -> DetectResult:
    """Train the config's detector on its data, evaluating on the val split every epoch."""
    start_time = time.time()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(None if cfg.device == "auto" else cfg.device)
    out = _prepare_out(cfg)
    torch.manual_seed(cfg.seed)
    train_ds, val_ds = make_datasets(cfg)
    base = _base(train_ds)
    model = build_detector(cfg, base.num_classes, base.event_channels, list(base.class_names)).to(device)
    opt = _optimizer(cfg, model)
    sched = _scheduler(cfg, opt)
    start, history, best = _resume(cfg, out / "last.pt", model, opt, sched) if cfg.resume else (0, [], -1.0)
    train_ds, val_ds = _subset(train_ds, cfg.train_limit), _subset(val_ds, cfg.val_limit)
    print(
        f"senet detect train: {cfg.backbone} {cfg.streams} "
        f"head={cfg.head} on {len(train_ds)} train / {len(val_ds)} val frames of {cfg.data_dir}, "
        f"{device}, {cfg.epochs} epochs -> {out}",
        flush=True,
    )
    log = RunLog(out, start + 1, cfg.to_dict(), history, plot=_plot)  # records count epochs from 1
    record: dict[str, Any] = history[-1] if history else {}
    try:
        for epoch in range(start, cfg.epochs):
            t0 = time.time()
            order = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)  # the same after a resume
            loader = DataLoader(
                train_ds,
                cfg.batch_size,
                shuffle=True,
                num_workers=cfg.workers,
                collate_fn=collate,
                generator=order,
            )
            record = {"epoch": epoch + 1, **train_one_epoch(model, loader, opt, cfg, device, epoch)}
            scores = evaluate_detector(model, val_ds, device, batch_size=cfg.batch_size, workers=cfg.workers)
            record.update(
                val_mAP=scores["mAP"],
                val_mAP50=scores["mAP50"],
                lr=opt.param_groups[0]["lr"],
                seconds=time.time() - t0,
            )
            record.update({f"val_AP_{k}": v for k, v in scores["per_class"].items()})
            if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                sched.step(record["train_loss"])
            else:
                sched.step()
            log.log_epoch(record)
            best = max(best, record["val_mAP50"])
            state = _checkpoint(model, opt, sched, cfg, epoch + 1, log.history, best)
            atomic_save(state, out / "last.pt")
            if record["val_mAP50"] >= best:
                atomic_save(state, out / "best.pt")
            print(
                f"epoch {epoch + 1}/{cfg.epochs}: loss {record['train_loss']:.4f}"
                f"  val mAP {100 * record['val_mAP']:.1f}"
                f"  mAP50 {100 * record['val_mAP50']:.1f}  ({record['seconds']:.0f} s)",
                flush=True,
            )
    finally:
        log.close()
    return DetectResult(out, record, best, time.time() - start_time, log.history)


def detect_eval(
    checkpoint: str | Path,
    data_dir: str | Path | None = None,
    split: str | None = None,
    *,
    device: str | None = None,
    limit: int = 0,
    batch_size: int = 2,
) -> dict[str, Any]:
    """COCO mAP / mAP50 of a detection checkpoint on ``split`` of ``data_dir`` (default: its run's)."""
    dev = pick_device(device)
    model, ckpt = load_detector(checkpoint, dev)
    cfg = DetectConfig.from_dict({**ckpt["config"], **({"data_dir": str(data_dir)} if data_dir else {})})
    (ds,) = make_datasets(cfg, (split or cfg.val_split,))
    missing = [m for m in model.modalities if m not in cfg.modalities]
    if missing:
        raise ValueError(f"the checkpoint needs modalities {missing} that the data config does not give")
    scores = evaluate_detector(model, _subset(ds, limit), dev, batch_size=batch_size)
    scores["frames"] = min(limit, len(ds)) if limit else len(ds)
    return scores
