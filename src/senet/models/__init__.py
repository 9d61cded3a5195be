"""The model zoo: every family module registers its builders on import (see ``registry``)."""

from . import (
    cifar,  # noqa: F401
    inception,  # noqa: F401
    mobilenet,  # noqa: F401
    resnet,  # noqa: F401  (one import per family registers its names)
    shufflenet,  # noqa: F401
    vgg,  # noqa: F401
)
from .registry import ModelInfo, list_models, model_info, register_model

__all__ = ["ModelInfo", "list_models", "model_info", "register_model"]
