"""Evaluation: the evaluation loop (:mod:`.evaluate`) and validation sets (:mod:`.validation`); the metrics
(:mod:`derain.metrics`), paired-dataset discovery (:mod:`derain.data.pairs`) and the hold-out
(:mod:`derain.data.folders`) they use are re-exported here."""

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
from ..data.folders import HoldOut
from ..data.pairs import LAYOUTS, DatasetError, Layout, Pair, PairSet, check_sizes, find_pairs, natural_key
from .validation import ValidationConfig, ValidationSets

__all__ = [
    "LAYOUTS",
    "PROTOCOLS",
    "DatasetError",
    "HoldOut",
    "Layout",
    "Pair",
    "PairSet",
    "Protocol",
    "ValidationConfig",
    "ValidationSets",
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
