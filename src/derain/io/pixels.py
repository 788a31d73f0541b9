"""Float ↔ pixel conversion, in one place: every part of derain turns pixels into floats in [0, 1] and back here.

Two ways to float (:func:`to_float`), both float32:

* ``"divide"`` (default): ``pixels / top``, correctly rounded (training samples, metrics, validation, rendering);
* ``"reciprocal"``: ``pixels · float32(1 / top)``, one multiply, within one ulp of ``divide`` (photos on the
  inference path, rain layers, streak maps).

Three roundings back to integers (:func:`to_pixels`, :func:`to_u8`), ``top`` = 255 (8 bits) or 65535 (16 bits):

* ``"half-even"`` (default): ``clip(round(top·x), 0, top)``, numpy's round (ties to even), the product in ``x``'s
  own float dtype (metrics' protocol ``y``, rendering, rain layers, validation);
* ``"half-up"``: ``floor(top·clip(x, 0, 1) + 0.5)`` in float32, NaN as 0 (photos and videos derain writes);
* ``"truncate"``: ``clip(top·x, 0, top)`` rounded down (the released EfDeRain code's metrics).

They differ only where ``top·x`` is within float rounding of a half (``half-even``/``half-up``), or not an integer
(``truncate``); each caller keeps the one its outputs were defined with.

>>> to_u8(np.array([0.5, 1.2, -0.1])).tolist(), to_u8(np.array([0.5]), "truncate").tolist()
([128, 255, 0], [127])
>>> to_u8(np.array([126.5 / 255]), "half-even").tolist(), to_u8(np.array([126.5 / 255], np.float32), "half-up").tolist()
([126], [127])
>>> to_float(np.array([0, 51, 255], np.uint8)).tolist()
[0.0, 0.20000000298023224, 1.0]
"""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = ["LUMA_601", "PIXEL_TOP", "Rounding", "luma", "to_float", "to_pixels", "to_u8"]

#: the largest value of each pixel dtype
PIXEL_TOP = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
Rounding = Literal["half-even", "half-up", "truncate"]
#: ITU-R BT.601 luma weights of R, G, B (as Pillow's "L" and MATLAB's Y without its offset and scale)
LUMA_601 = np.array([0.299, 0.587, 0.114], np.float32)


def luma(rgb: np.ndarray) -> np.ndarray:
    """The BT.601 luma ``H×W`` (float32) of an ``H×W×3`` RGB array in any numeric dtype, on its own scale.

    >>> [round(float(v), 3) for v in luma(np.array([[[255, 0, 0], [10, 10, 10]]], np.uint8))[0]]
    [76.245, 10.0]
    """
    return rgb.astype(np.float32, copy=False) @ LUMA_601


def to_float(pixels: np.ndarray, method: Literal["divide", "reciprocal"] = "divide") -> np.ndarray:
    """uint8 / uint16 pixels → float32 in [0, 1] (``method``: see the module docstring); float pixels as float32."""
    top = PIXEL_TOP.get(np.asarray(pixels).dtype)
    if top is None:
        return np.asarray(pixels, dtype=np.float32)
    out = pixels.astype(np.float32)
    if method == "divide":
        out /= np.float32(top)
    elif method == "reciprocal":
        out *= np.float32(1.0 / top)
    else:
        raise ValueError(f"unknown method {method!r}; use 'divide' or 'reciprocal'")
    return out


def to_pixels(x: np.ndarray, bits: int = 8, rounding: Rounding = "half-even") -> np.ndarray:
    """A float image in [0, 1] → uint8 (``bits`` 8) or uint16 (16), rounded as ``rounding`` says (module docstring);
    pixels of that dtype are returned as they are."""
    dtype = np.dtype(np.uint16 if bits == 16 else np.uint8)
    arr = np.asarray(x)
    if arr.dtype == dtype:
        return arr
    top = PIXEL_TOP[dtype]
    if rounding == "half-up":
        block = np.nan_to_num(np.clip(np.asarray(arr, dtype=np.float32), 0.0, 1.0), copy=False)
        block *= np.float32(top)
        block += np.float32(0.5)
        return block.astype(dtype)
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"expected a float image in [0, 1] or a {dtype} image, got dtype {arr.dtype}")
    scaled = arr * int(top)
    if rounding == "half-even":
        scaled = np.round(scaled)
    elif rounding != "truncate":
        raise ValueError(f"unknown rounding {rounding!r}; use 'half-even', 'half-up' or 'truncate'")
    return np.clip(scaled, 0, int(top)).astype(dtype)


def to_u8(x: np.ndarray, rounding: Rounding = "half-even") -> np.ndarray:
    """:func:`to_pixels` to uint8."""
    return to_pixels(x, 8, rounding)
