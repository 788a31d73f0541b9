"""Model architectures (:mod:`.architectures`), model files (:mod:`.checkpoint`, file-level only), and the
registry of named configs (:mod:`.registry`: :func:`create_model` and :func:`load_model` resolve names)."""

from .checkpoint import CheckpointError, save_model
from .efderain import PAPER, EfDeRain, EfDeRainConfig
from .prenet import PReNet, PReNetConfig
from .registry import ModelSpec, create_model, list_models, load_model, model_spec, register_model

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
