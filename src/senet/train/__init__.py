"""Training and evaluation: a typed config, one loop for one or many processes, safe checkpoints.

From Python::

    from senet.train import load_config, train, evaluate
    data = "../shared/datasets/cifar10-jpeg"
    cfg = load_config("cifar10-quick", overrides={"data_dir": data, "out": "runs/q"})
    result = train(cfg)                      # -> RunResult (best / final accuracy, run folder)
    evaluate("runs/q/best.pt", cfg.data.data_dir)  # -> {"top1": ..., "top5": ..., ...}
"""

from .checkpoint import load_checkpoint, load_trained, save_checkpoint
from .config import Config, OptimConfig, RuntimeConfig, list_recipes, load_config, recipe_path
from .engine import RunResult, TrainingDiverged, evaluate, train
from .schedule import LRFactor

__all__ = [
    "Config",
    "LRFactor",
    "OptimConfig",
    "RunResult",
    "RuntimeConfig",
    "TrainingDiverged",
    "evaluate",
    "list_recipes",
    "load_checkpoint",
    "load_trained",
    "load_config",
    "recipe_path",
    "save_checkpoint",
    "train",
]
