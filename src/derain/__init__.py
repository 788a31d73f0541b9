"""derain: fast single-image rain removal (EfficientDeRain, pixel-wise dilation filtering).

>>> import derain
>>> model = derain.create_model("efderain-tiny")
>>> type(model).__name__
'EfDeRain'
"""

from .models import CheckpointError, create_model, list_models, load_model, save_model

__version__ = "0.1.0"

__all__ = ["CheckpointError", "__version__", "create_model", "list_models", "load_model", "save_model"]
