"""Run a model on images: device, precision, threads, and [0, 1] clamping in one object."""

from __future__ import annotations

import contextlib
import copy
from typing import Iterator

import numpy as np
import torch
from torch import nn

from ..io.images import Photo
from .compiled import compile_model
from .precision import autocast, input_layout, prepare_model, resolve_precision
from .tiling import DEFAULT_OVERLAP, derain_array, derain_tiled, resolve_tile

__all__ = ["Derainer", "DerainerBase"]


class DerainerBase:
    """What every inference backend shares, on top of ``run_tensor``: tiling (:meth:`run_tiled`, the tensor
    path) and :meth:`derain_rgb` (the array path that the API, the CLI and the service use)."""

    def run_tensor(self, batch: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def run_tiled(self, batch: torch.Tensor, tile: int | None = None, overlap: int = DEFAULT_OVERLAP) -> torch.Tensor:
        """:meth:`run_tensor` in overlapping, blended tiles (bounded memory; see :mod:`derain.inference.tiling`).

        ``tile=None`` tiles only large images (automatic), ``0`` never tiles, ``N`` uses ``N×N`` tiles.
        """
        size = resolve_tile(tile, int(batch.shape[-2]), int(batch.shape[-1]))
        return self.run_tensor(batch) if size is None else derain_tiled(self.run_tensor, batch, size, overlap)

    def derain_rgb(self, rgb: np.ndarray, tile: int | None = None, overlap: int = DEFAULT_OVERLAP, *, grey: bool = False) -> np.ndarray:
        """``H×W×3`` uint8, uint16 or float in [0, 1] → the derained image in the same dtype (float → float32),
        tiled per :meth:`run_tiled`; a tile at a time is converted to float, so memory beyond the input and
        the output is bounded by the tile (:func:`~derain.inference.tiling.derain_array`). With ``grey``,
        ``H×W×1``: the mean of the channels, rounded once."""
        size = resolve_tile(tile, int(rgb.shape[0]), int(rgb.shape[1]))
        return derain_array(self.run_tensor, rgb, size, overlap, grey=grey)

    def derain_photo(self, photo: Photo, tile: int | None = None, overlap: int = DEFAULT_OVERLAP) -> np.ndarray:
        """The derained ``H×W×3`` pixels of a decoded photo in its pixel dtype (:meth:`derain_rgb`); a grey
        photo's are its channel mean, rounded once, as a view repeated into three channels."""
        if not photo.grey:
            return self.derain_rgb(photo.pixels, tile, overlap)
        mean = self.derain_rgb(photo.pixels, tile, overlap, grey=True)
        return np.broadcast_to(mean, (*mean.shape[:2], 3))

    def __call__(self, image: np.ndarray, tile: int | None = None, overlap: int = DEFAULT_OVERLAP) -> np.ndarray:
        """Derain an ``H×W×3`` numpy image: float in [0, 1] → float32; uint8 / uint16 → the same dtype.

        Large images are tiled as :meth:`run_tiled` says (``tile=None``: automatic above 1 MP).
        """
        if not isinstance(image, np.ndarray):
            raise TypeError(f"expected an H×W×3 numpy array (derain.derain takes PIL images and tensors), got {type(image).__name__}")
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an H×W×3 image, got shape {image.shape}")
        return self.derain_rgb(image, tile, overlap)


class Derainer(DerainerBase):
    """Holds a model ready for repeated inference.

    ``derainer(image)`` takes an ``H×W×3`` numpy image (float in [0, 1], uint8 or uint16) and returns
    the derained image of the same size and dtype, clamped; :meth:`run_tensor` does the same for
    ``(B, 3, H, W)`` float tensors. ``model`` is a registered name (its bundled weights, loaded and
    prepared here by :func:`~derain.inference.precision.prepare_model`: eval mode on ``device``; for
    reduced precision channels_last, and the weights autocast would cast stored in the compute dtype, so
    ``derainer.model`` then runs only under autocast of that precision) or a module.
    A module is never changed: it runs in eval mode during each call (its own modes restored after),
    as it is (device, dtype, layout) when it is already on ``device``, else as a copy moved there;
    ``owned=True`` says the module was made for this Derainer (just loaded), which then prepares it
    in place like a named model. ``compile=True`` runs the model's low-resolution stage compiled
    (:mod:`derain.inference.compiled`: faster per image after a compilation at each new input size;
    EfDeRain models only, else :class:`~derain.inference.compiled.CompileError`; a module it was
    given is copied first).

    Example:
        >>> import derain
        >>> d = Derainer(derain.create_model("efderain-tiny"), precision="fp32")
        >>> d(np.zeros((20, 30, 3), np.float32)).shape
        (20, 30, 3)
    """

    def __init__(
        self,
        model: nn.Module | str,
        device: str | torch.device = "cpu",
        precision: str = "auto",
        threads: int | None = None,
        *,
        owned: bool = False,
        compile: bool = False,
    ) -> None:
        if isinstance(model, str):
            from ..models.registry import create_model

            model, owned = create_model(model, pretrained=True), True
        elif not isinstance(model, nn.Module):
            raise TypeError(f"model must be a registered name or an nn.Module, got {type(model).__name__}")
        if threads:
            torch.set_num_threads(threads)
        torch.set_flush_denormal(True)  # tiny activations otherwise slow CPU convolutions down by 10-40x
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, self.device)
        if not owned and (compile or not _is_on(model, self.device)):
            model, owned = copy.deepcopy(model), True
        self._owned = owned
        self.model = prepare_model(model, self.precision, self.device) if owned else model
        if compile:
            compile_model(self.model)

    @torch.inference_mode()
    def run_tensor(self, batch: torch.Tensor) -> torch.Tensor:
        """Derain a ``(B, 3, H, W)`` float batch in [0, 1]; returns float32 on the CPU, clamped to [0, 1]."""
        x = input_layout(batch.to(self.device, torch.float32), self.model, self.precision)
        with _eval_mode(self.model), autocast(self.precision, self.device):
            out = self.model(x)
        return out.float().clamp_(0, 1).cpu().contiguous()


def _is_on(model: nn.Module, device: torch.device) -> bool:
    """Whether every parameter and buffer of ``model`` is on ``device`` (``cuda`` matches the current CUDA device)."""
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    tensors = [*model.parameters(), *model.buffers()]
    return all(t.device == device for t in tensors)


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode inside the block, every submodule's own mode restored after (no-op if already eval)."""
    modes = [(m, m.training) for m in model.modules() if m.training]
    if not modes:
        yield
        return
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
