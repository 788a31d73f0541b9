"""PSNR and SSIM: the two evaluation protocols, and differentiable versions for training.

Protocols (:data:`PROTOCOLS`, :func:`score`; reference.md §4):

``y`` (field standard: PReNet, RCDNet, Restormer, BasicSR)
    The float prediction in [0, 1] is rounded to uint8, ``clip(round(255·x), 0, 255)``; PSNR and
    SSIM are computed on the Y channel of MATLAB's ``rgb2ycbcr`` (:func:`rgb_to_y`) against the
    original ground truth, at its original size. SSIM is Wang et al. (11×11 Gaussian, σ = 1.5).
    The model sees the original-size input (whoever runs it pads to a multiple of 16 and crops).

``efderain-rgb`` (the released EfDeRain ``validation.py``, to compare with the paper's numbers)
    The rainy input and the ground truth are each bilinearly resized (uint8 → uint8) up to the
    next multiple of 16 (:func:`efderain_resize`); the model runs on the resized input. The
    prediction is truncated to uint8, ``uint8(clip(255·x, 0, 255))``, and bilinearly resized back
    to the original size *in float* (:func:`efderain_resize_back`); the resized ground truth
    takes the same way back (so it is slightly blurred by the round trip). Metrics are computed
    at the original size on those float images: PSNR over all RGB channels and SSIM as
    skimage's default (7×7 uniform window, sample covariance, data range 255, channel mean;
    :func:`calculate_ssim_skimage`). The released code returned PSNR 100 for identical images;
    here it is ``inf``.

Formulas (images in [0, 255], L = 255)::

    PSNR = 10·log10(L² / MSE),  MSE = mean((x − y)²)              (inf if MSE = 0)
    SSIM = mean over the map of
           (2·μx·μy + C1)(2·σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2)),
           C1 = (0.01·L)², C2 = (0.03·L)²,
    μ, σ² and σxy local (weighted) means, variances and covariance under the window, computed
    only where the window fits inside the image ("valid" filtering, no padding).

>>> import numpy as np
>>> a = np.full((16, 16, 3), 100, np.uint8)
>>> round(calculate_psnr(a, a + 1), 7)
48.1308036
>>> float(rgb_to_y(np.array([[[255, 255, 255]]], np.uint8))[0, 0])
235.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from numpy.lib.stride_tricks import sliding_window_view
from torch import Tensor

from .io.pixels import to_u8

__all__ = [
    "PROTOCOLS",
    "Protocol",
    "QuantizeMode",
    "calculate_psnr",
    "calculate_ssim",
    "calculate_ssim_skimage",
    "efderain_resize",
    "efderain_resize_back",
    "gaussian_kernel_1d",
    "get_protocol",
    "psnr_torch",
    "quantize",
    "rgb_to_y",
    "round_up_size",
    "score",
    "ssim_torch",
]

QuantizeMode = Literal["round", "truncate"]

_Y_WEIGHTS = np.array([65.481, 128.553, 24.966], dtype=np.float64)


# --------------------------------------------------------------------------- colour, windows


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """MATLAB ``rgb2ycbcr`` luma (studio range) of an ``H×W×3`` RGB image in [0, 255].

    ``Y = 16 + (65.481·R + 128.553·G + 24.966·B) / 255``, returned as float64 in [16, 235]
    (not rounded). Input: uint8, or float already in [0, 255].

    >>> rgb_to_y(np.array([[[0, 0, 0], [255, 0, 0]]], np.uint8)).round(3).tolist()
    [[16.0, 81.481]]
    """
    arr = np.asarray(img)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"rgb_to_y needs an H×W×3 RGB image, got shape {arr.shape}")
    return 16.0 + arr.astype(np.float64) @ _Y_WEIGHTS / 255.0


def gaussian_kernel_1d(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Normalised 1-D Gaussian ``g_i ∝ exp(−(i − (size−1)/2)² / 2σ²)``, float64 (as ``cv2.getGaussianKernel``).

    The SSIM window is ``outer(g, g)``, which also sums to 1.
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"window size must be a positive odd number, got {size}")
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def _uniform_kernel_1d(size: int = 7) -> np.ndarray:
    return np.full(size, 1.0 / size)


# --------------------------------------------------------------------------- numpy metrics


def _prepare_pair(img: np.ndarray, img2: np.ndarray, crop_border: int, test_y_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes, crop ``crop_border`` pixels per side, optionally take Y; float64 H×W×C."""
    a, b = np.asarray(img), np.asarray(img2)
    if a.shape != b.shape:
        raise ValueError(f"images must have the same shape, got {a.shape} and {b.shape}")
    if a.ndim not in (2, 3):
        raise ValueError(f"expected an H×W or H×W×C image, got shape {a.shape}")
    if a.ndim == 2:
        a, b = a[:, :, None], b[:, :, None]
    if crop_border:
        a = a[crop_border:-crop_border, crop_border:-crop_border]
        b = b[crop_border:-crop_border, crop_border:-crop_border]
    if test_y_channel:
        return rgb_to_y(a)[:, :, None], rgb_to_y(b)[:, :, None]
    return a.astype(np.float64), b.astype(np.float64)


def calculate_psnr(img: np.ndarray, img2: np.ndarray, crop_border: int = 0, test_y_channel: bool = False) -> float:
    """PSNR in dB of two H×W(×C) images in [0, 255] (uint8 or float): ``10·log10(255² / MSE)``.

    MSE is the mean over all pixels and channels (or over Y if ``test_y_channel``); ``inf`` for
    identical images. Same signature and result as BasicSR's ``calculate_psnr`` (RGB order here).
    """
    a, b = _prepare_pair(img, img2, crop_border, test_y_channel)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def _filter_valid(img: np.ndarray, kernel_1d: np.ndarray) -> np.ndarray:
    """Correlate a 2-D float64 image with ``outer(k, k)``, keeping only the 'valid' region."""
    rows = sliding_window_view(img, len(kernel_1d), axis=0) @ kernel_1d
    return sliding_window_view(rows, len(kernel_1d), axis=1) @ kernel_1d


def _ssim_2d(a: np.ndarray, b: np.ndarray, kernel_1d: np.ndarray, cov_norm: float = 1.0) -> float:
    """Mean SSIM map of two 2-D float64 images in [0, 255] (valid region, window ``outer(k, k)``).

    ``cov_norm`` multiplies the (co)variances: 1 for Wang et al., N/(N−1) for skimage's sample covariance.
    """
    size = len(kernel_1d)
    if min(a.shape) < size:
        raise ValueError(f"SSIM needs images of at least {size}×{size} pixels, got {a.shape[0]}×{a.shape[1]}")
    c1, c2 = (0.01 * 255.0) ** 2, (0.03 * 255.0) ** 2
    mu_a, mu_b = _filter_valid(a, kernel_1d), _filter_valid(b, kernel_1d)
    var_a = cov_norm * (_filter_valid(a * a, kernel_1d) - mu_a**2)
    var_b = cov_norm * (_filter_valid(b * b, kernel_1d) - mu_b**2)
    cov = cov_norm * (_filter_valid(a * b, kernel_1d) - mu_a * mu_b)
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


def calculate_ssim(img: np.ndarray, img2: np.ndarray, crop_border: int = 0, test_y_channel: bool = False) -> float:
    """SSIM of Wang et al. (MATLAB ``ssim_index``, BasicSR ``calculate_ssim``) on images in [0, 255].

    11×11 Gaussian window (σ = 1.5, normalised), K1 = 0.01, K2 = 0.03, L = 255, population
    (co)variances, valid filtering (no padding), mean of the map; for several channels the mean
    over channels. With ``test_y_channel`` it is computed on :func:`rgb_to_y`.
    """
    a, b = _prepare_pair(img, img2, crop_border, test_y_channel)
    kernel = gaussian_kernel_1d(11, 1.5)
    return float(np.mean([_ssim_2d(a[:, :, c], b[:, :, c], kernel) for c in range(a.shape[2])]))


def calculate_ssim_skimage(img: np.ndarray, img2: np.ndarray) -> float:
    """SSIM with scikit-image's defaults, as the released EfDeRain validation computed it.

    Equals ``skimage.metrics.structural_similarity(img, img2, channel_axis=2, data_range=255)``
    (``compare_ssim(..., multichannel=True, data_range=255)`` in old versions): 7×7 uniform window,
    sample (co)variances (×49/48), K1 = 0.01, K2 = 0.03, mean over the valid region (skimage
    crops (7−1)/2 pixels per side, the same thing), mean over channels. Computed here in numpy,
    so scikit-image is not a dependency.
    """
    a, b = _prepare_pair(img, img2, 0, False)
    kernel, n = _uniform_kernel_1d(7), 7 * 7
    return float(np.mean([_ssim_2d(a[:, :, c], b[:, :, c], kernel, n / (n - 1)) for c in range(a.shape[2])]))


# --------------------------------------------------------------------------- uint8 conversion, resizing


def quantize(pred: np.ndarray, mode: QuantizeMode = "round") -> np.ndarray:
    """A float image in [0, 1] → uint8 (a uint8 image is returned unchanged).

    ``round``: ``clip(round(255·x), 0, 255)`` (protocol ``y``); ``truncate``:
    ``uint8(clip(255·x, 0, 255))``, i.e. floor (the released EfDeRain code). The product is taken in
    the prediction's own float dtype (float32 for a model output, as the released code).

    >>> quantize(np.array([0.5, 1.2, -0.1])).tolist(), quantize(np.array([0.5]), "truncate").tolist()
    ([128, 255, 0], [127])
    """
    if mode not in ("round", "truncate") and np.asarray(pred).dtype != np.uint8:
        raise ValueError(f"unknown quantize mode {mode!r}; use 'round' or 'truncate'")
    return to_u8(pred, "half-even" if mode == "round" else "truncate")  # derain.io.pixels


def round_up_size(height: int, width: int, multiple: int = 16) -> tuple[int, int]:
    """``(height, width)`` each rounded up to a multiple of ``multiple`` (481×321 → 496×336)."""
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple


def _bilinear_resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an H×W×C float32 image to ``size = (H', W')``.

    Half-pixel centres, edge clamping, no antialiasing: ``cv2.resize(..., INTER_LINEAR)`` ==
    ``F.interpolate(mode="bilinear", align_corners=False, antialias=False)``.
    """
    if tuple(img.shape[:2]) == tuple(size):
        return img.astype(np.float32, copy=True)
    x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).permute(2, 0, 1)[None]
    y = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=False)
    return y[0].permute(1, 2, 0).numpy()


def efderain_resize(img: np.ndarray, multiple: int = 16) -> np.ndarray:
    """The released EfDeRain validation's first step for both the rainy input and the ground truth.

    The uint8 ``H×W×3`` image is bilinearly resized up to :func:`round_up_size` (as
    ``cv2.resize(img, (W16, H16))`` on uint8: the result is rounded to uint8) and scaled to
    float32 in [0, 1]. This is what the model sees. cv2's uint8 path uses 11-bit fixed-point
    weights, so a pixel can differ from it by one grey level.
    """
    arr = np.asarray(img)
    if arr.dtype != np.uint8 or arr.ndim != 3:
        raise ValueError(f"efderain_resize expects an H×W×C uint8 image, got {arr.dtype} {arr.shape}")
    resized = _bilinear_resize(arr.astype(np.float32), round_up_size(arr.shape[0], arr.shape[1], multiple))
    resized8 = np.floor(np.clip(resized, 0, 255) + 0.5).astype(np.uint8)
    return resized8.astype(np.float32) / np.float32(255)


def efderain_resize_back(pred: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The released EfDeRain validation's ``recover_process``: truncate to uint8, resize back in float.

    ``pred`` (float in [0, 1] at the resized size, or uint8) is truncated with
    ``quantize(pred, "truncate")`` and then bilinearly resized to ``size = (H, W)`` in float32
    without rounding (``cv2.resize`` on a float32 image). Returns float64 ``H×W×C`` in [0, 255].
    """
    return _resize_uint8_to_float(quantize(pred, "truncate"), size)


def _resize_uint8_to_float(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A uint8 image bilinearly resized to ``size`` in float32 (no rounding), as float64."""
    return _bilinear_resize(img.astype(np.float32), size).astype(np.float64)


# --------------------------------------------------------------------------- protocols


@dataclass(frozen=True)
class Protocol:
    """How predictions are turned into numbers: quantisation, resizing, colour space, SSIM.

    The evaluation loop feeds :meth:`model_input` of the rainy image to the model, then calls
    :meth:`score` with the float prediction (or a uint8 image) and the original ground truth.
    The prediction must have the size of :meth:`model_input` (for ``efderain-rgb`` the size rounded
    up to a multiple of 16): a prediction made at the original size would be compared with the
    round-tripped (blurred) ground truth, so it is refused. The resize round trip blurs the streaks,
    so ``efderain-rgb`` scores the same images higher than plain RGB PSNR / skimage SSIM without
    resizing (the figures on Rain100L: BENCHMARKS.md, "Scoring protocols").
    """

    name: str
    description: str
    quantize_mode: QuantizeMode  #: how a float prediction becomes uint8 (:func:`quantize`)
    y_channel: bool  #: metrics on MATLAB Y (else on all RGB channels)
    ssim: Literal["wang", "skimage"]  #: :func:`calculate_ssim` or :func:`calculate_ssim_skimage`
    resize_multiple: int | None  #: resize input and GT to this multiple and back (released EfDeRain)

    def model_input(self, rainy: np.ndarray) -> np.ndarray:
        """The float32 ``H×W×3`` image in [0, 1] the model should be run on (resized if the protocol says so)."""
        if self.resize_multiple is not None:
            return efderain_resize(rainy, self.resize_multiple)
        return np.asarray(rainy, dtype=np.float32) / np.float32(255)

    def prediction_image(self, pred: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """The image the metrics see for a prediction (float in [0, 1] or uint8), float64 in [0, 255] at ``size``."""
        image = quantize(pred, self.quantize_mode)
        expected = round_up_size(size[0], size[1], self.resize_multiple) if self.resize_multiple else tuple(size)
        if tuple(image.shape[:2]) != expected:
            raise ValueError(
                f"protocol {self.name!r}: prediction is {image.shape[0]}×{image.shape[1]} but must be "
                f"{expected[0]}×{expected[1]} (the size of model_input() for a {size[0]}×{size[1]} ground truth)"
            )
        if self.resize_multiple is not None:
            return _resize_uint8_to_float(image, size)
        return image.astype(np.float64)

    def reference_image(self, gt: np.ndarray) -> np.ndarray:
        """The image the metrics compare against, from the original uint8 ground truth."""
        gt = np.asarray(gt)
        if gt.dtype != np.uint8:
            raise TypeError(f"the ground truth must be a uint8 image, got dtype {gt.dtype}")
        if self.resize_multiple is not None:
            return efderain_resize_back(efderain_resize(gt, self.resize_multiple), gt.shape[:2])
        return gt.astype(np.float64)

    def metrics(self, image: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
        """``(PSNR, SSIM)`` of two prepared images in [0, 255]."""
        psnr = calculate_psnr(image, reference, test_y_channel=self.y_channel)
        if self.ssim == "wang":
            return psnr, calculate_ssim(image, reference, test_y_channel=self.y_channel)
        return psnr, calculate_ssim_skimage(image, reference)

    def score(self, pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
        """``(PSNR dB, SSIM)`` of a prediction against the original uint8 ground truth ``gt``."""
        gt = np.asarray(gt)
        return self.metrics(self.prediction_image(pred, gt.shape[:2]), self.reference_image(gt))


PROTOCOLS: dict[str, Protocol] = {
    "y": Protocol(
        name="y",
        description="Y of MATLAB rgb2ycbcr, Wang SSIM (11x11 Gaussian), prediction rounded to uint8, original size",
        quantize_mode="round",
        y_channel=True,
        ssim="wang",
        resize_multiple=None,
    ),
    "efderain-rgb": Protocol(
        name="efderain-rgb",
        description="released EfDeRain validation: RGB PSNR, skimage SSIM (7x7 uniform), truncation, "
        "input and GT resized to multiples of 16 and back",
        quantize_mode="truncate",
        y_channel=False,
        ssim="skimage",
        resize_multiple=16,
    ),
}


def get_protocol(protocol: str | Protocol) -> Protocol:
    """A :class:`Protocol` by name (a key of :data:`PROTOCOLS`), or the protocol itself."""
    if isinstance(protocol, Protocol):
        return protocol
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {protocol!r}; known: {sorted(PROTOCOLS)}")
    return PROTOCOLS[protocol]


def score(protocol: str | Protocol, pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """``(PSNR dB, SSIM)`` of ``pred`` (float ``H×W×3`` in [0, 1] or uint8) against uint8 ``gt``.

    >>> gt = np.full((32, 32, 3), 120, np.uint8)
    >>> psnr, ssim = score("y", gt.astype(np.float32) / 255, gt)
    >>> psnr, round(ssim, 6)
    (inf, 1.0)
    """
    return get_protocol(protocol).score(pred, gt)


# --------------------------------------------------------------------------- torch (training)


def _ssim_window(channels: int, window_size: int, sigma: float, like: Tensor) -> Tensor:
    g = torch.as_tensor(gaussian_kernel_1d(window_size, sigma), dtype=like.dtype, device=like.device)
    return torch.outer(g, g).expand(channels, 1, window_size, window_size).contiguous()


def ssim_torch(
    pred: Tensor,
    target: Tensor,
    window_size: int = 11,
    sigma: float = 1.5,
    data_range: float = 1.0,
    padding: Literal["same", "valid"] = "same",
) -> Tensor:
    """Differentiable mean SSIM of ``(B, C, H, W)`` tensors (Gaussian window per channel, grouped conv).

    C1 = (0.01·L)², C2 = (0.03·L)², L = ``data_range``; population (co)variances.
    ``padding="same"``: zero padding of ``window_size // 2`` (the released training loss, pytorch_ssim);
    ``"valid"``: no padding, equal to :func:`calculate_ssim` on ``255·x`` when ``data_range=1``.
    """
    if pred.shape != target.shape or pred.dim() != 4:
        raise ValueError(f"ssim_torch needs two (B, C, H, W) tensors of the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    if padding not in ("same", "valid"):
        raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
    channels = pred.shape[1]
    window = _ssim_window(channels, window_size, sigma, pred)
    pad = window_size // 2 if padding == "same" else 0

    def filt(x: Tensor) -> Tensor:
        return F.conv2d(x, window, padding=pad, groups=channels)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_p, mu_t = filt(pred), filt(target)
    var_p = filt(pred * pred) - mu_p**2
    var_t = filt(target * target) - mu_t**2
    cov = filt(pred * target) - mu_p * mu_t
    ssim_map = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / ((mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2))
    return ssim_map.mean()


def psnr_torch(pred: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """Mean over the batch of per-image PSNR ``10·log10(L² / MSE)`` for ``(B, C, H, W)`` (or ``(C, H, W)``) tensors.

    ``inf`` where an image is identical to its target.
    """
    if pred.shape != target.shape:
        raise ValueError(f"psnr_torch needs tensors of the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    if pred.dim() == 3:
        pred, target = pred[None], target[None]
    mse = (pred - target).pow(2).flatten(1).mean(dim=1)
    return (10.0 * torch.log10(data_range**2 / mse)).mean()
