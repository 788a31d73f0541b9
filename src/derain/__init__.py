"""derain: fast single-image rain removal (EfficientDeRain, pixel-wise dilation filtering).

>>> import derain
>>> model = derain.create_model("efderain-tiny")
>>> type(model).__name__
'EfDeRain'

Derain a PIL image, a numpy array or a tensor with :func:`derain.derain` (same type back; large
images are tiled automatically; ``model=None`` uses the bundled ``default`` model):

>>> from PIL import Image
>>> photo = Image.new("RGB", (64, 48), (120, 130, 140))
>>> derain.derain(photo, model=derain.create_model("efderain-tiny")).size
(64, 48)
"""

from .models import CheckpointError, create_model, list_models, load_model, save_model
from .inference.api import derain

__version__ = "0.1.0"

__all__ = ["CheckpointError", "__version__", "create_model", "derain", "list_models", "load_model", "save_model"]
