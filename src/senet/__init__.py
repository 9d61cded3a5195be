"""senet: Squeeze-and-Excitation Networks (Hu et al., CVPR 2018 / TPAMI 2019) in PyTorch."""

from .models import create_model, list_models, model_info, register_model
from .se import SEBlock, SEConfig

__version__ = "0.1.0"

__all__ = ["SEBlock", "SEConfig", "create_model", "list_models", "model_info", "register_model"]
