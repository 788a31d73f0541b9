"""Model architectures, the registry of named configs, and model files."""

from .checkpoint import CheckpointError, load_model, save_model
from .efderain import PAPER, EfDeRain, EfDeRainConfig
from .prenet import PReNet, PReNetConfig
from .registry import ModelSpec, create_model, list_models, model_spec, register_model

__all__ = [
    "CheckpointError",
    "EfDeRain",
    "EfDeRainConfig",
    "ModelSpec",
    "PAPER",
    "PReNet",
    "PReNetConfig",
    "create_model",
    "list_models",
    "load_model",
    "model_spec",
    "register_model",
    "save_model",
]
