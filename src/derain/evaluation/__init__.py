"""Evaluation: the evaluation loop (:mod:`.evaluate`); the metrics (:mod:`derain.metrics`) and paired-dataset
discovery (:mod:`derain.data.pairs`) it uses are re-exported here."""

from ..metrics import (
    PROTOCOLS,
    Protocol,
    calculate_psnr,
    calculate_ssim,
    calculate_ssim_skimage,
    efderain_resize,
    efderain_resize_back,
    get_protocol,
    psnr_torch,
    quantize,
    rgb_to_y,
    round_up_size,
    score,
    ssim_torch,
)
from ..data.pairs import LAYOUTS, DatasetError, Layout, Pair, PairSet, check_sizes, find_pairs, natural_key

__all__ = [
    "LAYOUTS",
    "PROTOCOLS",
    "DatasetError",
    "Layout",
    "Pair",
    "PairSet",
    "Protocol",
    "calculate_psnr",
    "calculate_ssim",
    "calculate_ssim_skimage",
    "check_sizes",
    "efderain_resize",
    "efderain_resize_back",
    "find_pairs",
    "get_protocol",
    "natural_key",
    "psnr_torch",
    "quantize",
    "rgb_to_y",
    "round_up_size",
    "score",
    "ssim_torch",
]
