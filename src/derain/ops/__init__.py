"""Differentiable image operations."""

from .pixel_filter import PixelDilationFilter2d, PixelFilter2d, pixel_dilation_filter2d, pixel_filter2d

__all__ = ["PixelDilationFilter2d", "PixelFilter2d", "pixel_dilation_filter2d", "pixel_filter2d"]
