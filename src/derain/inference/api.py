"""``derain.derain(image)``: derain a PIL image, an image file, a numpy array or a torch tensor in one call.

The result has the input's type and layout:

* an image file's path (``str`` or ``os.PathLike``) → a PIL image, as for that file opened with Pillow
  and passed in, read by :func:`~derain.io.images.load_photo` (the project's one reader: EXIF
  orientation applied, its pixel limit; a missing or unreadable file raises its
  :class:`~derain.io.images.ImageReadError`);
* PIL images → a PIL image of the same size and mode (derained as RGB; grey comes back grey, alpha
  is kept as it was; palette, CMYK, ``1``, ``I`` are converted back to that mode; ``F`` comes back
  as ``L`` or ``I;16``);
* numpy arrays ``H×W``, ``H×W×1``, ``H×W×3`` or ``H×W×4`` (alpha kept) of uint8, uint16
  (0..65535) or float (in [0, 1]) → the same shape and dtype;
* torch tensors ``(B, 3, H, W)`` or ``(3, H, W)``, float in [0, 1] → the same shape, dtype and device.

``model`` is anything :func:`~derain.inference.loading.load_derainer` takes (a registered name, a model
file, an ``nn.Module``, a :class:`~derain.inference.derainer.Derainer`), or None for the bundled ``default``. Large
images are tiled automatically (``tile=None``; see :mod:`derain.inference.tiling`); ``tile=0``
never tiles.

>>> import numpy as np, derain
>>> from PIL import Image
>>> model = derain.create_model("efderain-tiny", identity_init=True)
>>> out = derain.derain(Image.new("RGBA", (40, 30), (90, 120, 200, 77)), model=model, precision="fp32")
>>> out.size, out.mode, out.getpixel((0, 0))[3]
((40, 30), 'RGBA', 77)
>>> derain.derain(np.zeros((30, 40), np.uint16), model=model).dtype
dtype('uint16')
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, TypeVar, overload

import numpy as np
import torch
from torch import nn

from ..io.images import PIXEL_TOP, Photo
from .derainer import DerainerBase, Strength
from .loading import ModelSource, load_derainer, parse_source
from .tiling import DEFAULT_OVERLAP

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = ["derain", "get_derainer"]

T = TypeVar("T")


@functools.lru_cache(maxsize=4)
def _named(name: str, device: str, precision: str) -> DerainerBase:
    return load_derainer(name, device=device, precision=precision)


def get_derainer(model: ModelSource = None, device: str = "cpu", precision: str = "auto") -> DerainerBase:
    """The runner :func:`derain` uses for ``model``: :func:`~derain.inference.loading.load_derainer`'s, those of
    registered names (and None: ``default``) kept for the next call (up to four)."""
    if not (model is None or isinstance(model, (str, os.PathLike, nn.Module, DerainerBase))):
        raise TypeError(f"model must be a registered name, a model file, an nn.Module or a Derainer, got {type(model).__name__}")
    if model is None or isinstance(model, (str, os.PathLike)):
        name, weights, onnx = parse_source(model)
        if weights is None and onnx is None:  # a registered name: kept
            return _named(name or "default", str(device), precision)
    return load_derainer(model, device=device, precision=precision)


def _derain_array(derainer: DerainerBase, image: np.ndarray, tile: int | None, overlap: int, strength: Strength | str | None) -> np.ndarray:
    dtype = image.dtype
    if dtype not in PIXEL_TOP and not np.issubdtype(dtype, np.floating):
        raise TypeError(f"numpy images must be uint8, uint16 or float, got {dtype}")
    if image.ndim == 2:
        channels = 1
    elif image.ndim == 3 and image.shape[2] in (1, 3, 4):
        channels = image.shape[2]
    else:
        raise ValueError(f"expected an H×W, H×W×1, H×W×3 or H×W×4 image, got shape {image.shape}")
    colour = image.reshape(image.shape[0], image.shape[1], channels)
    if channels >= 3:  # the input's dtype back (float: float32)
        out = derainer.derain_rgb(colour[:, :, :3], tile, overlap, strength=strength)
    else:  # grey: the mean of the channels, rounded once
        out = derainer.derain_rgb(np.broadcast_to(colour, (*colour.shape[:2], 3)), tile, overlap, grey=True, strength=strength)
    result = out.astype(dtype, copy=False)
    if channels == 4:
        result = np.concatenate([result, image[:, :, 3:4]], axis=2)
    return result.reshape(image.shape)


def _derain_tensor(derainer: DerainerBase, image: torch.Tensor, tile: int | None, overlap: int, strength: Strength | str | None) -> torch.Tensor:
    if not image.is_floating_point():
        raise TypeError(f"tensors must be float images in [0, 1], got {image.dtype}")
    squeeze = image.dim() == 3
    x = image[None] if squeeze else image
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected a (B, 3, H, W) or (3, H, W) tensor, got shape {tuple(image.shape)}")
    out = derainer.run_tiled(x.detach().float().cpu(), tile, overlap, strength=strength).to(image.device, image.dtype)
    return out[0] if squeeze else out


def _derain_photo(derainer: DerainerBase, photo: Photo, tile: int | None, overlap: int, strength: Strength | str | None) -> PILImage:
    """A decoded photo derained, as a PIL image in the source's mode (palette, CMYK, ``1``, ``I`` converted back)."""
    from ..io.images import photo_to_pil

    result = photo_to_pil(photo, derainer.derain_photo(photo, tile, overlap, strength=strength))
    if result.mode != photo.source_mode and photo.source_mode != "F":
        try:  # back to the caller's mode (P: adaptive palette, 1: dithered, CMYK, I, ...)
            result = result.convert(photo.source_mode)
        except (ValueError, OSError):
            pass
    return result


@overload
def derain(image: str | os.PathLike[str], model: ModelSource = ..., precision: str = ..., tile: int | None = ...,
           tile_overlap: int = ..., device: str = ..., strength: Strength | str | None = ...) -> PILImage: ...
@overload
def derain(image: T, model: ModelSource = ..., precision: str = ..., tile: int | None = ...,
           tile_overlap: int = ..., device: str = ..., strength: Strength | str | None = ...) -> T: ...
def derain(
    image: object,
    model: ModelSource = None,
    precision: str = "auto",
    tile: int | None = None,
    tile_overlap: int = DEFAULT_OVERLAP,
    device: str = "cpu",
    strength: Strength | str | None = None,
) -> object:
    """Remove rain from ``image`` (PIL image, numpy array or torch tensor); returns the same kind (a PIL
    image for an image file's path).

    Args:
        image: the rainy image, or the path of an image file (see the module docs for the accepted layouts).
        model: what :func:`~derain.inference.loading.load_derainer` takes: a registered name (bundled weights),
            a model file (weights or ONNX), an ``nn.Module``, a ``Derainer``, or None for the bundled ``default``.
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16`` (see :mod:`derain.inference.precision`).
        tile: None tiles large images automatically, ``0`` never tiles, ``N`` uses ``N×N`` tiles.
        tile_overlap: overlap between neighbouring tiles in pixels.
        device: ``cpu``, ``cuda``, ...
        strength: how much of the rain removal to apply: ``auto`` (None: the Derainer's own, ``auto`` unless
            it was made with another) lets the model judge the image (one it finds dry comes back as it went
            in), a number from 0 (the input back) to 1 (full removal, whatever the model judges).

    >>> import torch, derain
    >>> model = derain.create_model("efderain-tiny", identity_init=True)
    >>> x = torch.rand(2, 3, 48, 64)
    >>> y = derain.derain(x, model=model, precision="fp32", tile=32, tile_overlap=8)
    >>> y.shape, y.dtype, bool((y - x).abs().mean() < 0.05)
    (torch.Size([2, 3, 48, 64]), torch.float32, True)
    """
    if isinstance(image, (str, os.PathLike)):  # read before the model loads: a bad file fails at once
        from ..io.images import load_photo

        photo = load_photo(image)
        return _derain_photo(get_derainer(model, device, precision), photo, tile, tile_overlap, strength)
    derainer = get_derainer(model, device, precision)
    if isinstance(image, torch.Tensor):
        return _derain_tensor(derainer, image, tile, tile_overlap, strength)  # type: ignore[return-value]
    if isinstance(image, np.ndarray):
        return _derain_array(derainer, image, tile, tile_overlap, strength)  # type: ignore[return-value]
    from PIL import Image

    if isinstance(image, Image.Image):
        from ..io.images import photo_from_pil

        return _derain_photo(derainer, photo_from_pil(image), tile, tile_overlap, strength)
    raise TypeError(f"image must be a PIL image, an image file's path, a numpy array or a torch tensor, got {type(image).__name__}")
