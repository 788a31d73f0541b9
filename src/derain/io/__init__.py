"""Image files: reading photos as HWC uint8 RGB arrays."""

from .images import IMAGE_EXTENSIONS, ImageReadError, is_image_file, read_image

__all__ = ["IMAGE_EXTENSIONS", "ImageReadError", "is_image_file", "read_image"]
