"""Reading user media into the one array form the models take, with typed errors on bad input."""

from __future__ import annotations

from .image import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    encode_jpeg,
    is_image_path,
    launder,
    load_image,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
    "encode_jpeg",
    "is_image_path",
    "launder",
    "load_image",
]
