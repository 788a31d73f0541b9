"""Training: data sources, losses, the training loop (``derain train``).

What other modules use: :func:`train`, :func:`check_run` and :class:`TrainResult` (:mod:`.trainer`), the configuration
(:mod:`.config`) and the presets (:mod:`.presets`).
"""

from .config import ConfigError, TrainConfig, config_changes, load_config
from .presets import list_presets, resolve_preset
from .trainer import TrainResult, check_run, train

__all__ = ["ConfigError", "TrainConfig", "TrainResult", "check_run", "config_changes", "list_presets", "load_config", "resolve_preset", "train"]
