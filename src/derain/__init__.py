"""derain: fast single-image rain removal (EfficientDeRain, pixel-wise dilation filtering).

>>> import derain
>>> model = derain.create_model("efderain-tiny")
>>> type(model).__name__
'EfDeRain'

Derain a PIL image, a numpy array or a tensor with :func:`derain.derain` (same type back; an image
file's path gives a PIL image; large images are tiled automatically; ``model=None`` uses the bundled
``default`` model):

>>> from PIL import Image
>>> photo = Image.new("RGB", (64, 48), (120, 130, 140))
>>> derain.derain(photo, model=derain.create_model("efderain-tiny")).size
(64, 48)

Importing derain sets ``OMP_WAIT_POLICY=PASSIVE`` unless it is already set (or torch already loaded
OpenMP): waiting threads sleep instead of spinning, so a folder run beside another busy process
loses much less time, and idle runs are as fast (the figures: BENCHMARKS.md, "A shared machine";
``python benchmarks/bench_contention.py``).
"""

import os as _os

_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read by OpenMP when torch loads it, just below

from .models import CheckpointError, create_model, list_models, load_model, save_model
from .inference.api import derain
from .inference.loading import load_derainer

__version__ = "0.1.0"

__all__ = ["CheckpointError", "__version__", "create_model", "derain", "list_models", "load_derainer", "load_model", "save_model"]
