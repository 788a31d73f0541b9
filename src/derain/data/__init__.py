"""Training-data augmentation: RainMix, synthetic rain rendering and a bank of real rain layers.

* :mod:`.rainmix` — RainMix (EfficientDeRain Algorithm 1) over Garg–Nayar streak maps.
* :mod:`.render` — JORDER-style synthetic rain for clean-only photos, with presets, and
  :func:`rain_statistics` to compare rendered and real rain.
* :mod:`.rain_layers` — real rain layers (rainy − clean) from paired sets, composited onto clean photos.
* :mod:`.pairs` — paired folders (rainy/clean) in the field's layouts; :mod:`.folders` — where data lives
  (the data root) and the hold-out: which items of a folder are kept out of training for validation.
"""

from .rain_layers import RainLayerBank, composite
from .rainmix import (
    OPS,
    Op,
    RainMix,
    RainMixSample,
    StreakBank,
    chain_matrix,
    mix,
    op_matrix,
    rainmix_pair,
    sample_op,
    screen_blend,
    warp_chain,
)
from .render import (
    PRESETS,
    RainParams,
    RainRenderer,
    dominant_orientation,
    line_kernel,
    rain_statistics,
    render_rain,
    y_psnr,
)

__all__ = [
    "OPS",
    "PRESETS",
    "Op",
    "RainLayerBank",
    "RainMix",
    "RainMixSample",
    "RainParams",
    "RainRenderer",
    "StreakBank",
    "chain_matrix",
    "composite",
    "dominant_orientation",
    "line_kernel",
    "mix",
    "op_matrix",
    "rain_statistics",
    "rainmix_pair",
    "render_rain",
    "sample_op",
    "screen_blend",
    "warp_chain",
    "y_psnr",
]
