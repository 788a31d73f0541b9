"""Run a model on images: device, precision, threads, and [0, 1] clamping in one object."""

from __future__ import annotations

import contextlib
import copy
import functools
import math
from typing import Callable, Iterator, Literal, Union

import numpy as np
import torch
from torch import nn

from ..errors import InvalidArgument
from ..io.images import Photo
from ..models.interface import inference_form
from .compiled import CompiledModel, compile_model
from .precision import autocast, input_layout, prepare_model, resolve_precision
from .tiling import DEFAULT_OVERLAP, JUDGE_PIXELS, derain_array, derain_tiled, judgement_view, resolve_tile

__all__ = ["Derainer", "DerainerBase", "Strength", "is_grey", "resolve_strength"]

Strength = Union[float, Literal["auto"]]
#: Pixels per band that :func:`is_grey` compares at once.
_GREY_BAND = 1 << 18


def is_grey(rgb: np.ndarray) -> bool:
    """Whether an ``H×W×3`` image has R = G = B at every pixel (compared a band of rows at a time, so the memory it
    takes stays small and a colour image is told early).

    >>> is_grey(np.full((2, 2, 3), 7, np.uint8)), is_grey(np.array([[[7, 7, 8]]], np.uint8))
    (True, False)
    """
    rows = max(1, _GREY_BAND // max(1, rgb.shape[1]))
    for y in range(0, rgb.shape[0], rows):
        band = rgb[y : y + rows]
        if not (np.array_equal(band[..., 0], band[..., 1]) and np.array_equal(band[..., 1], band[..., 2])):
            return False
    return True


def resolve_strength(strength: Strength | str | None) -> Strength:
    """``auto`` (or None): the model's own judgement of each image; a number in [0, 1] (or its text): how much
    of the rain removal to apply, whatever the model judges (0: the input back; 1: the model with its
    judgement of the image forced open).

    >>> resolve_strength(None), resolve_strength("0.5"), resolve_strength(1)
    ('auto', 0.5, 1.0)
    """
    if strength is None or (isinstance(strength, str) and strength.strip().lower() == "auto"):
        return "auto"
    try:
        value = float(strength)
    except (TypeError, ValueError):
        raise InvalidArgument(f"strength must be 'auto' or a number from 0 to 1, got {strength!r}", option="--strength") from None
    if not (0.0 <= value <= 1.0) or math.isnan(value):
        raise InvalidArgument(f"strength must be 'auto' or a number from 0 to 1, got {strength!r}", option="--strength")
    return value


class DerainerBase:
    """What every inference backend shares, on top of ``run_tensor``: tiling (:meth:`run_tiled`, the tensor
    path) and :meth:`derain_rgb` (the array path that the API, the CLI and the service use).

    ``strength`` (each method's, else the object's ``strength`` attribute, ``auto`` by default) is how much of
    the rain removal to apply (:func:`resolve_strength`). With ``auto`` a model that judges images as a whole
    (``judges_images``) judges each image once, on all of it (:data:`~derain.inference.tiling.JUDGE_PIXELS`
    or fewer pixels) or a copy downscaled to that size, and every tile gets that judgement: tiled and untiled
    outputs judge alike. A backend whose model judges each input itself (an exported ONNX file) takes ``auto``
    only, and judges each tile."""

    strength: Strength = "auto"
    judges_images: bool = False
    #: Tiles start at multiples of this (:func:`~derain.inference.tiling.tile_spans`): the model's padding multiple,
    #: so that tiled outputs are the untiled ones wherever a tile holds the context the model reads.
    tile_align: int = 1
    #: Tiles are as long as the image modulo ``tile_align``: the model centres its input on its padded canvas.
    tile_congruent: bool = False

    @property
    def name(self) -> str:
        """What this runs, for tables and logs."""
        return type(self).__name__

    @property
    def params(self) -> int:
        """The parameter count of what this runs (0 where it is not known)."""
        return 0

    def run_tensor(self, batch: torch.Tensor, strength: Strength | None = None, whole: torch.Tensor | None = None) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def judge(self, view: torch.Tensor) -> torch.Tensor:  # pragma: no cover - judges_images backends only
        """Each image's judgement ``(B, 1)`` in (0, 1): how rainy the model finds it as a whole."""
        raise NotImplementedError

    def judgement(self, image: np.ndarray | torch.Tensor, strength: Strength | str | None = None) -> torch.Tensor | None:
        """How rainy the model finds ``image`` (``H×W×3`` array or ``(B, 3, H, W)`` tensor) as a whole, ``(B, 1)``:
        what ``auto`` applies to all of it (:meth:`judge` on the image, or on a copy downscaled to
        :data:`~derain.inference.tiling.JUDGE_PIXELS`); None where the strength (this call's, else the object's) is
        not ``auto`` or the backend does not judge images."""
        s = resolve_strength(self.strength if strength is None else strength)
        if s != "auto" or not self.judges_images:
            return None
        return self.judge(judgement_view(image, JUDGE_PIXELS))

    def _runner(self, image: np.ndarray | torch.Tensor, tiled: bool, strength: Strength | str | None) -> Callable[[torch.Tensor], torch.Tensor]:
        """``run_tensor`` for the tiles (or the whole) of ``image``: with its strength, and with ``auto`` the
        image's :meth:`judgement` made once where the model would otherwise judge each tile, or a downscaled image
        (an image that fits whole is judged by the model itself, the same judgement)."""
        s = resolve_strength(self.strength if strength is None else strength)
        height, width = (image.shape[0], image.shape[1]) if isinstance(image, np.ndarray) else image.shape[-2:]
        whole = self.judgement(image, s) if tiled or height * width > JUDGE_PIXELS else None
        return functools.partial(self.run_tensor, strength=s, whole=whole)

    def run_tiled(
        self, batch: torch.Tensor, tile: int | None = None, overlap: int = DEFAULT_OVERLAP, *, strength: Strength | str | None = None
    ) -> torch.Tensor:
        """:meth:`run_tensor` in overlapping, blended tiles (bounded memory; see :mod:`derain.inference.tiling`).

        ``tile=None`` tiles only large images (automatic), ``0`` never tiles, ``N`` uses ``N×N`` tiles.
        """
        size = resolve_tile(tile, int(batch.shape[-2]), int(batch.shape[-1]))
        run = self._runner(batch, size is not None, strength)
        return run(batch) if size is None else derain_tiled(run, batch, size, overlap, self.tile_align, self.tile_congruent)

    def derain_rgb(
        self,
        rgb: np.ndarray,
        tile: int | None = None,
        overlap: int = DEFAULT_OVERLAP,
        *,
        grey: bool = False,
        strength: Strength | str | None = None,
    ) -> np.ndarray:
        """``H×W×3`` uint8, uint16 or float in [0, 1] → the derained image in the same dtype (float → float32),
        tiled per :meth:`run_tiled`; a tile at a time is converted to float, so memory beyond the input and
        the output is bounded by the tile (:func:`~derain.inference.tiling.derain_array`). With ``grey``,
        ``H×W×1``: the mean of the channels, rounded once. A grey image (R = G = B at every pixel, as a black-and-white
        photo saved in colour is) comes back grey: each pixel the mean of the model's three channels, so the model's
        colour cannot tint it.

        >>> out = Derainer(nn.Conv2d(3, 3, 1)).derain_rgb(np.full((8, 8, 3), 120, np.uint8))
        >>> out.shape, bool((out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all())
        ((8, 8, 3), True)
        """
        size = resolve_tile(tile, int(rgb.shape[0]), int(rgb.shape[1]))
        grey_in = not grey and is_grey(rgb)
        out = derain_array(self._runner(rgb, size is not None, strength), rgb, size, overlap, grey=grey or grey_in,
                           align=self.tile_align, congruent=self.tile_congruent)
        return np.repeat(out, 3, axis=2) if grey_in else out

    def derain_photo(
        self, photo: Photo, tile: int | None = None, overlap: int = DEFAULT_OVERLAP, *, strength: Strength | str | None = None
    ) -> np.ndarray:
        """The derained ``H×W×3`` pixels of a decoded photo in its pixel dtype (:meth:`derain_rgb`); a grey
        photo's are its channel mean, rounded once, as a view repeated into three channels."""
        if not photo.grey:
            return self.derain_rgb(photo.pixels, tile, overlap, strength=strength)
        mean = self.derain_rgb(photo.pixels, tile, overlap, grey=True, strength=strength)
        return np.broadcast_to(mean, (*mean.shape[:2], 3))

    def __call__(
        self, image: np.ndarray, tile: int | None = None, overlap: int = DEFAULT_OVERLAP, *, strength: Strength | str | None = None
    ) -> np.ndarray:
        """Derain an ``H×W×3`` numpy image: float in [0, 1] → float32; uint8 / uint16 → the same dtype.

        Large images are tiled as :meth:`run_tiled` says (``tile=None``: automatic above 1 MP).
        """
        if not isinstance(image, np.ndarray):
            raise TypeError(f"expected an H×W×3 numpy array (derain.derain takes PIL images and tensors), got {type(image).__name__}")
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an H×W×3 image, got shape {image.shape}")
        return self.derain_rgb(image, tile, overlap, strength=strength)


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
    EfDeRain-like models only, else :class:`~derain.inference.compiled.CompileError`; a module it was
    given is copied first; ``derainer.model`` is then a :class:`~derain.inference.compiled.CompiledModel`).

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
        strength: Strength | str = "auto",
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
        self.strength = resolve_strength(strength)
        form = inference_form(model)  # a re-parameterised network runs folded (a new module)
        if form is not model:
            model, owned = form, True
        if not owned and (compile or not _is_on(model, self.device)):
            model, owned = copy.deepcopy(model), True
        self._owned = owned
        self.model = prepare_model(model, self.precision, self.device) if owned else model
        if compile:  # a runner around the model (derain.models.interface: the model is not changed)
            self.model = compile_model(self.model)

    @property
    def name(self) -> str:
        """The model's registered name, else its class (the compiled model's own, not the runner's)."""
        model = self.model.model if isinstance(self.model, CompiledModel) else self.model
        return str(getattr(model, "registry_name", None) or type(model).__name__)

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def judges_images(self) -> bool:  # type: ignore[override]
        """Whether the model judges each image as a whole (``judges_images``, e.g. EfDeRain's ``gate_global``)."""
        return bool(getattr(self.model, "judges_images", False))

    @property
    def tile_align(self) -> int:  # type: ignore[override]
        """The model's padding multiple (``config.multiple``; 1 for a model without one)."""
        model = self.model.model if isinstance(self.model, CompiledModel) else self.model
        return int(getattr(getattr(model, "config", None), "multiple", 1) or 1)

    @property
    def tile_congruent(self) -> bool:  # type: ignore[override]
        """Whether the model centres its input on its padded canvas (``centred``, a staged model's)."""
        return bool(getattr(self.model, "centred", False))

    @torch.inference_mode()
    def judge(self, view: torch.Tensor) -> torch.Tensor:
        """The model's judgement ``(B, 1)`` of each image of ``view`` as a whole (``judges_images`` models)."""
        x = input_layout(view.to(self.device, torch.float32), self.model, self.precision)
        with _eval_mode(self.model), autocast(self.precision, self.device):
            return self.model.image_gate(x).float()

    @torch.inference_mode()
    def run_tensor(self, batch: torch.Tensor, strength: Strength | str | None = None, whole: torch.Tensor | None = None) -> torch.Tensor:
        """Derain a ``(B, 3, H, W)`` float batch in [0, 1]; returns float32 on the CPU, clamped to [0, 1].

        ``strength`` as in :class:`DerainerBase` (default: this object's); ``whole``: with ``auto``, each image's
        judgement ``(B, 1)`` made beforehand (:meth:`judge`), for a model that judges images.
        """
        s = resolve_strength(self.strength if strength is None else strength)
        x = batch.to(self.device, torch.float32)
        if s == 0:  # the input as it went in
            return x.clamp(0, 1).cpu().contiguous()
        x = input_layout(x, self.model, self.precision)
        if s != "auto" and self.judges_images:  # the strength in place of the model's judgement
            whole = torch.full((x.shape[0], 1), s, device=x.device)
        with _eval_mode(self.model), autocast(self.precision, self.device):
            out = self.model(x) if whole is None else self.model(x, whole=whole.to(x.device))
        out = out.float()
        if s not in ("auto", 1.0) and not self.judges_images:  # no judgement to replace: a blend with the input
            out = x.float() + s * (out - x.float())
        return out.clamp_(0, 1).cpu().contiguous()


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
