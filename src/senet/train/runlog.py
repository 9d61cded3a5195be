"""The run folder: config.yaml, metrics.jsonl, TensorBoard events and curves.png (rank 0 only)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

__all__ = ["RunLog", "check_run_folder", "plot_curves", "read_metrics", "save_figure"]


def check_run_folder(out: Path, resume: bool, rank: int = 0) -> None:
    """Refuse an unwritable folder, or one holding another run, before any work starts (every
    command that writes a run folder: ``senet train``, ``senet detect train``)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{rank}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"cannot write to --out {out}: {e.strerror or e}") from None
    if not resume and (out / "last.pt").exists():
        raise ValueError(
            f"{out} already holds a run (last.pt): pass --resume to continue it, or choose another --out"
        )


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The per-epoch records of a ``metrics.jsonl`` file."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} line {n} is not a JSON record ({e.msg}): {line[:60]!r}") from None
        if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
            raise ValueError(f"{path} line {n} is not an epoch record: {line[:60]!r}")
        records.append(record)
    return records


def plot_curves(history: list[dict[str, Any]], path: str | Path) -> None:
    """Loss and accuracy per epoch (train and validation) as a PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(ep, [h["train_loss"] for h in history], "o-", label="train")
    ax1.plot(ep, [h["val_loss"] for h in history], "o-", label="val")
    ax1.set(xlabel="epoch", ylabel="loss", title="loss")
    ax2.plot(ep, [h["train_acc"] for h in history], "o-", label="train top-1")
    ax2.plot(ep, [h["val_top1"] for h in history], "o-", label="val top-1")
    ax2.plot(ep, [h["val_top5"] for h in history], "o--", label="val top-5")
    ax2.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    save_figure(fig, path)


def save_figure(fig: Any, path: str | Path) -> None:
    """Write a matplotlib figure as PNG atomically (temporary file, rename) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = Path(path).with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


class RunLog:
    """Writes the run folder's records; on a resumed run, forgets epochs after the checkpoint."""

    def __init__(
        self,
        out: Path,
        start_epoch: int,
        config: dict[str, Any] | str,
        history: list[dict[str, Any]] | None = None,
        plot: Callable[[list[dict[str, Any]], Path], None] = plot_curves,
    ) -> None:
        """``config``: written to ``config.yaml`` (a mapping, or the text :meth:`Config.to_yaml` gives);
        ``history``: the records a resumed checkpoint carries (else those of metrics.jsonl);
        ``plot`` draws ``curves.png`` from the records (detection runs plot mAP, not top-1)."""
        self.out = out
        self.plot = plot
        self.metrics_path = out / "metrics.jsonl"
        if history is None:
            history = read_metrics(self.metrics_path)  # a bad line stops here, before any write
        text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
        (out / "config.yaml").write_text(text)
        self.history = [h for h in history if h["epoch"] < start_epoch]
        self.metrics_path.write_text("".join(json.dumps(h) + "\n" for h in self.history))
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(str(out / "events"), purge_step=start_epoch)

    def log_epoch(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        for key, value in record.items():
            if key != "epoch" and isinstance(value, (int, float)):
                self.tb.add_scalar(key, value, record["epoch"])
        self.tb.flush()
        self.plot(self.history, self.out / "curves.png")

    def close(self) -> None:
        self.tb.close()
