"""The model zoo: every family module registers its builders on import (see ``registry``)."""

from . import resnet  # noqa: F401  (one import per family registers its names)
from .registry import ModelInfo, create_model, list_models, model_info, register_model

__all__ = ["ModelInfo", "create_model", "list_models", "model_info", "register_model"]
