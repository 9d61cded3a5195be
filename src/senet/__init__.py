"""senet: Squeeze-and-Excitation Networks (Hu et al., CVPR 2018 / TPAMI 2019) in PyTorch."""

from .analysis.profile import Profile, profile
from .factory import create_model, load_model
from .inference import fuse_for_inference
from .models import list_models, model_info, register_model
from .predict import Prediction, predict
from .preprocessing import Preprocessing, preprocessing
from .se import SEBlock, SEConfig
from .surgery import insert_se
from .weights import WeightsMismatchError, load_weights, save_weights

__version__ = "0.1.0"

__all__ = [
    "Prediction",
    "Preprocessing",
    "Profile",
    "SEBlock",
    "SEConfig",
    "WeightsMismatchError",
    "create_model",
    "fuse_for_inference",
    "insert_se",
    "list_models",
    "load_model",
    "load_weights",
    "model_info",
    "predict",
    "preprocessing",
    "profile",
    "register_model",
    "save_weights",
]
