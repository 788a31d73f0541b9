"""Run a model on images: device, precision, threads, and [0, 1] clamping in one object."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .precision import autocast, prepare_model, resolve_precision

__all__ = ["Derainer", "DerainerBase"]


class DerainerBase:
    """What every inference backend shares: tiling and the numpy-image call, on top of ``run_tensor``."""

    def run_tensor(self, batch: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def run_tiled(self, batch: torch.Tensor, tile: int | None = None, overlap: int = 32) -> torch.Tensor:
        """:meth:`run_tensor` in overlapping, blended tiles (bounded memory; see :mod:`derain.inference.tiling`).

        ``tile=None`` tiles only large images (automatic), ``0`` never tiles, ``N`` uses ``N×N`` tiles.
        """
        from .tiling import derain_tiled, resolve_tile

        size = resolve_tile(tile, int(batch.shape[-2]), int(batch.shape[-1]))
        return self.run_tensor(batch) if size is None else derain_tiled(self.run_tensor, batch, size, overlap)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Derain an ``H×W×3`` numpy image: float in [0, 1] → float32; uint8 / uint16 → the same dtype."""
        if not isinstance(image, np.ndarray):
            raise TypeError(f"expected an H×W×3 numpy array (derain.derain takes PIL images and tensors), got {type(image).__name__}")
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an H×W×3 image, got shape {image.shape}")
        scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(image.dtype)
        if scale is None and not np.issubdtype(image.dtype, np.floating):
            raise TypeError(f"expected uint8, uint16 or float pixels, got {image.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
        if scale is not None:
            x = x / scale
        out = self.run_tensor(x)[0].permute(1, 2, 0).numpy()
        return out if scale is None else np.round(out * scale).astype(image.dtype)


class Derainer(DerainerBase):
    """Holds a model ready for repeated inference.

    ``derainer(image)`` takes an ``H×W×3`` numpy image (float in [0, 1], uint8 or uint16) and returns
    the derained image of the same size and dtype, clamped; :meth:`run_tensor` does the same for
    ``(B, 3, H, W)`` float tensors. ``model`` is a registered name (its bundled weights) or a module
    (put in eval mode on ``device``, channels_last for reduced precision).

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
    ) -> None:
        if isinstance(model, str):
            from ..models.registry import create_model

            model = create_model(model, pretrained=True)
        elif not isinstance(model, nn.Module):
            raise TypeError(f"model must be a registered name or an nn.Module, got {type(model).__name__}")
        if threads:
            torch.set_num_threads(threads)
        torch.set_flush_denormal(True)  # tiny activations otherwise slow CPU convolutions down by 10-40x
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, self.device)
        self.model = prepare_model(model, self.precision, self.device)

    @torch.inference_mode()
    def run_tensor(self, batch: torch.Tensor) -> torch.Tensor:
        """Derain a ``(B, 3, H, W)`` float batch in [0, 1]; returns float32 on the CPU, clamped to [0, 1]."""
        x = batch.to(self.device, torch.float32)
        if self.precision != "fp32":
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.precision, self.device):
            out = self.model(x)
        return out.float().clamp_(0, 1).cpu().contiguous()
