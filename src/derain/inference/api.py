"""``derain.derain(image)``: derain a PIL image, a numpy array or a torch tensor in one call.

The result has the input's type and layout:

* PIL images → a PIL image of the same size and mode (derained as RGB; grey comes back grey, alpha
  is kept as it was; palette, CMYK, ``1``, ``I`` are converted back to that mode; ``F`` comes back
  as ``L`` or ``I;16``);
* numpy arrays ``H×W``, ``H×W×1``, ``H×W×3`` or ``H×W×4`` (alpha kept) of uint8, uint16
  (0..65535) or float (in [0, 1]) → the same shape and dtype;
* torch tensors ``(B, 3, H, W)`` or ``(3, H, W)``, float in [0, 1] → the same shape, dtype and device.

``model`` is a registered name (its bundled weights), an ``nn.Module``, a
:class:`~derain.inference.derainer.Derainer`, or None for the bundled ``default`` model. Large
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
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from ..io.images import PIXEL_TOP
from .derainer import Derainer, Strength
from .tiling import DEFAULT_OVERLAP

__all__ = ["derain", "get_derainer"]

T = TypeVar("T")


@functools.lru_cache(maxsize=4)
def _named(name: str, device: str, precision: str) -> Derainer:
    from ..models.registry import create_model

    return Derainer(create_model(name, pretrained=True), device=device, precision=precision, owned=True)


def get_derainer(model: str | nn.Module | Derainer | None = None, device: str = "cpu", precision: str = "auto") -> Derainer:
    """A :class:`Derainer` for ``model`` (name → bundled weights, cached; module; Derainer as is; None → ``default``)."""
    if isinstance(model, Derainer):
        return model
    if isinstance(model, nn.Module):
        return Derainer(model, device=device, precision=precision)
    if model is None or isinstance(model, str):
        return _named(model or "default", str(device), precision)
    raise TypeError(f"model must be a registered name, an nn.Module or a Derainer, got {type(model).__name__}")


def _derain_array(derainer: Derainer, image: np.ndarray, tile: int | None, overlap: int, strength: Strength | str | None) -> np.ndarray:
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


def _derain_tensor(derainer: Derainer, image: torch.Tensor, tile: int | None, overlap: int, strength: Strength | str | None) -> torch.Tensor:
    if not image.is_floating_point():
        raise TypeError(f"tensors must be float images in [0, 1], got {image.dtype}")
    squeeze = image.dim() == 3
    x = image[None] if squeeze else image
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected a (B, 3, H, W) or (3, H, W) tensor, got shape {tuple(image.shape)}")
    out = derainer.run_tiled(x.detach().float().cpu(), tile, overlap, strength=strength).to(image.device, image.dtype)
    return out[0] if squeeze else out


def derain(
    image: T,
    model: str | nn.Module | Derainer | None = None,
    precision: str = "auto",
    tile: int | None = None,
    tile_overlap: int = DEFAULT_OVERLAP,
    device: str = "cpu",
    strength: Strength | str | None = None,
) -> T:
    """Remove rain from ``image`` (PIL image, numpy array or torch tensor); returns the same kind.

    Args:
        image: the rainy image (see the module docs for the accepted layouts).
        model: registered model name (bundled weights), ``nn.Module``, ``Derainer``, or None for
            the bundled ``default`` model.
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
    derainer = get_derainer(model, device, precision)
    if isinstance(image, torch.Tensor):
        return _derain_tensor(derainer, image, tile, tile_overlap, strength)  # type: ignore[return-value]
    if isinstance(image, np.ndarray):
        return _derain_array(derainer, image, tile, tile_overlap, strength)  # type: ignore[return-value]
    from PIL import Image

    if isinstance(image, Image.Image):
        from ..io.images import photo_from_pil, photo_to_pil

        photo = photo_from_pil(image)
        result = photo_to_pil(photo, derainer.derain_photo(photo, tile, tile_overlap, strength=strength))
        if result.mode != image.mode and image.mode != "F":
            try:  # back to the caller's mode (P: adaptive palette, 1: dithered, CMYK, I, ...)
                result = result.convert(image.mode)
            except (ValueError, OSError):
                pass
        return result  # type: ignore[return-value]
    raise TypeError(f"image must be a PIL image, a numpy array or a torch tensor, got {type(image).__name__}")
