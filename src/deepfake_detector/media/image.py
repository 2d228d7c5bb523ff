"""Turn any still image a user hands us into one kind of array, and mimic upload re-encoding.

Everything downstream (preprocessing, models, reports) expects an ``HxWx3`` C-contiguous
uint8 RGB array. This module is the single place that deals with file formats, pixel modes,
EXIF orientation and transparency, and that turns bad input into the typed errors of
:mod:`deepfake_detector.errors`, each naming the file and the reason.
"""

from __future__ import annotations

import io
import os
import re
import struct
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from ..checks import is_whole
from ..errors import (
    CorruptMediaError,
    EmptyFileError,
    InvalidArgumentError,
    MediaError,
    MediaNotFoundError,
    MediaTooLargeError,
    UnsupportedMediaError,
)

IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
DEFAULT_MAX_PIXELS: int = 100_000_000

# Only these Pillow plugins may identify a file: the formats we promise, and no plugin that
# shells out or parses exotic containers (EPS runs Ghostscript, for example).
_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
_FORMAT_NAMES = "JPEG, PNG, WebP, BMP, TIFF and GIF"

# Modes that carry an alpha channel, and 8-bit modes whose "transparency" info marks
# transparent pixels; both are composited onto the background instead of dropping alpha.
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "PA"})
_KEYED_TRANSPARENCY_MODES = frozenset({"L", "P", "RGB"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})

# What Pillow raises on damaged or truncated data while parsing headers or decoding pixels.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, struct.error)

_WHITE = (255, 255, 255)

# How each EXIF orientation other than 1 (upright) is undone, as in ImageOps.exif_transpose.
_EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def is_image_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` has an image suffix; used to pick image files out of folders cheaply."""
    return os.path.splitext(os.fspath(path))[1].lower() in IMAGE_SUFFIXES


def load_image(
    source: str | os.PathLike[str] | bytes | bytearray | memoryview | Image.Image | np.ndarray,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    background: tuple[int, int, int] = _WHITE,
    name: str | None = None,
    min_side: int | None = None,
) -> np.ndarray:
    """Read ``source`` as an ``HxWx3`` C-contiguous uint8 RGB array (always a fresh array).

    The format is decided by content, EXIF orientation is applied, transparency is
    composited onto ``background``, and images over ``max_pixels`` are refused from their
    header, before any pixel is decoded. ``name`` replaces the source's name in errors
    (for example an upload's file name).

    ``min_side``: the caller will shrink the image to about this size anyway, so a JPEG file
    may be decoded at a reduced scale (1/2, 1/4 or 1/8, Pillow's draft mode, done inside the
    JPEG decoder and several times faster) as long as both sides stay at least ``min_side``.
    Other formats, and arrays or Pillow images handed in, keep their full size.
    """
    if not is_whole(max_pixels) or max_pixels < 1:
        raise InvalidArgumentError(f"max_pixels must be a positive integer; got {max_pixels!r}.")
    if min_side is not None and (not is_whole(min_side) or min_side < 1):
        raise InvalidArgumentError(f"min_side must be a positive integer or None; got {min_side!r}.")
    _check_background(background)

    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, name or "<array>", background, max_pixels)
    if isinstance(source, Image.Image):
        label = name or "<PIL image>"
        return _pil_to_rgb(_decoded(source, label, max_pixels), label, background)
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "<bytes>"
        data = bytes(source)
        if not data:
            raise EmptyFileError(label, "no data (0 bytes)")
        return _read(io.BytesIO(data), label, max_pixels, background, min_side)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        label = name or path or "'' (an empty path)"
        if os.path.isdir(path):
            raise MediaNotFoundError(label, "is a directory, not an image file")
        if not os.path.exists(path):
            raise MediaNotFoundError(label, "no such file")
        if not os.path.isfile(path):
            raise MediaNotFoundError(label, "is not a regular file")
        try:
            handle = open(path, "rb")
        except OSError as exc:
            raise MediaNotFoundError(label, f"cannot be opened ({exc.strerror})") from exc
        with handle:
            if os.fstat(handle.fileno()).st_size == 0:
                raise EmptyFileError(label, "file is empty (0 bytes)")
            return _read(handle, label, max_pixels, background, min_side)
    raise UnsupportedMediaError(
        name or f"<{type(source).__name__}>",
        "expected a file path, bytes, a PIL image or a numpy array",
    )


def probe_image(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """``(width, height)`` of an image file from its header alone, without decoding pixels.

    A cheap check over a whole data set before training: missing, empty, non-image and
    oversized files raise the same typed errors as :func:`load_image`. Damage inside the
    pixel data is found only when the image is decoded.
    """
    label = os.fspath(path)
    if not os.path.isfile(label):
        raise MediaNotFoundError(label, "no such file")
    if os.path.getsize(label) == 0:
        raise EmptyFileError(label, "file is empty (0 bytes)")
    with _pillow_errors(label):
        with Image.open(label, formats=_FORMATS) as picture:
            size = picture.size
    _check_size(label, size[0], size[1], max_pixels)
    return size


def launder(image: np.ndarray, *, max_side: int = 512, quality: int = 80) -> np.ndarray:
    """Shrink and JPEG re-encode ``image`` the way a platform treats an upload.

    Detectors see laundered pictures in the wild, so training and tests need the same
    loss: the longer side becomes at most ``max_side`` (never upscaled), then the image is
    JPEG-encoded at ``quality`` and decoded again. Returns ``HxWx3`` uint8 RGB.
    """
    if not is_whole(max_side) or max_side < 1:
        raise InvalidArgumentError(f"max_side must be a positive integer; got {max_side!r}.")
    picture = Image.fromarray(_array_to_rgb(image, "<array>", _WHITE, None))
    width, height = picture.size
    if max(width, height) > max_side:
        if width >= height:
            size = (max_side, max(1, round(height * max_side / width)))
        else:
            size = (max(1, round(width * max_side / height)), max_side)
        picture = picture.resize(size, Image.Resampling.LANCZOS)
    return load_image(_jpeg_bytes(picture, quality), name="<laundered JPEG>")


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of an image array (any array kind :func:`load_image` accepts), as RGB."""
    return _jpeg_bytes(Image.fromarray(_array_to_rgb(image, "<array>", _WHITE, None)), quality)


def _jpeg_bytes(picture: Image.Image, quality: int) -> bytes:
    """Encode an RGB Pillow image as JPEG at ``quality`` (1 to 100)."""
    if not is_whole(quality) or not 1 <= quality <= 100:
        raise InvalidArgumentError(f"quality must be an integer from 1 to 100; got {quality!r}.")
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=int(quality))
    return buffer.getvalue()


def _check_background(background: tuple[int, int, int]) -> None:
    """Refuse a background that is not three 0..255 integers, before any work is done."""
    if (
        not isinstance(background, (tuple, list))
        or len(background) != 3
        or not all(is_whole(v) and 0 <= v <= 255 for v in background)
    ):
        raise InvalidArgumentError(f"background must be a tuple of three integers from 0 to 255; got {background!r}.")


def _check_size(label: str, width: int, height: int, max_pixels: int) -> None:
    """Refuse empty images and images over the pixel limit, from their dimensions alone."""
    if width <= 0 or height <= 0:
        raise UnsupportedMediaError(label, f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise MediaTooLargeError(
            label,
            f"image is {width}x{height} ({width * height:,} pixels), over the limit of {max_pixels:,} pixels",
        )


@contextmanager
def _pillow_errors(label: str) -> Iterator[None]:
    """Translate Pillow's exceptions into our errors, with Pillow's own warnings quiet (``_quiet_pillow``)."""
    with _quiet_pillow:
        try:
            yield
        except MediaError:
            raise
        except UnidentifiedImageError as exc:
            raise UnsupportedMediaError(label, f"not an image in a supported format ({_FORMAT_NAMES})") from exc
        except Image.DecompressionBombError as exc:
            raise MediaTooLargeError(
                label, f"image is too large for Pillow's decompression-bomb guard ({exc})"
            ) from exc
        except _DECODE_ERRORS as exc:
            raise CorruptMediaError(label, f"image data is truncated or damaged ({exc})") from exc


class _QuietPillow:
    """While any thread reads an image, silence two kinds of Pillow warning process-wide:

    - the decompression-bomb warning: ``max_pixels`` is checked from the header before
      decoding, so our limit, not Pillow's global one, decides;
    - the EXIF (TIFF directory) parser's warnings about damaged blocks: damaged EXIF is read
      as no orientation, so "Corrupt EXIF data" on the user's stderr would only alarm them.

    ``warnings.catch_warnings`` would save and restore the whole filter list, which decoding
    threads entering and leaving at once scramble (our filters left on for good, or a filter
    the caller added meanwhile lost). Instead the first reader puts these two entries (a filter
    is the documented tuple ``(action, message, category, module, lineno)``) at the front of
    the list, and the last one takes out those very objects, under a lock: the caller's own
    filters, an identical one included, keep their places. ``warnings.filterwarnings`` is not
    used because it would move an identical filter of the caller's to the front for good.
    """

    _FILTERS = (
        ("ignore", None, Image.DecompressionBombWarning, None, 0),
        ("ignore", None, UserWarning, re.compile(r"PIL\.TiffImagePlugin$"), 0),
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._readers = 0

    def __enter__(self) -> None:
        with self._lock:
            if self._readers == 0:
                warnings.filters[:0] = self._FILTERS
            self._readers += 1

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._readers -= 1
            if self._readers == 0:
                for entry in self._FILTERS:
                    at = next((i for i, present in enumerate(warnings.filters) if present is entry), None)
                    if at is not None:
                        del warnings.filters[at]


_quiet_pillow = _QuietPillow()


def _read(
    stream: IO[bytes],
    label: str,
    max_pixels: int,
    background: tuple[int, int, int],
    min_side: int | None = None,
) -> np.ndarray:
    """Identify, decode and convert the image in ``stream``; the Pillow image is closed after."""
    with _pillow_errors(label):  # a JPEG without JFIF density reads EXIF here for its DPI
        picture = Image.open(stream, formats=_FORMATS)
    with picture:
        if picture.format == "JPEG":
            _check_jpeg_data(label, stream, picture.width, picture.height)
        return _pil_to_rgb(_decoded(picture, label, max_pixels, min_side, owned=True), label, background)


def _check_jpeg_data(label: str, stream: IO[bytes], width: int, height: int) -> None:
    """Refuse a JPEG whose bytes cannot hold its declared size: the decoder would fill the
    missing part with grey, silently, and the verdict would be on filler.

    Huffman coding needs about 2 bits per 8x8 block even for a blank picture (measured:
    a black 4000x4000 greyscale JPEG at quality 1, optimised, is 62 KB); a file with under
    1/32 bit per block (a header promising 9000x9000 px over 600 bytes) is truncated or forged.
    Arithmetic coding (rare, but decodable) can code a blank block in far less, so it is exempt.
    """
    position = stream.tell()
    size = stream.seek(0, io.SEEK_END)
    stream.seek(position)
    if size * 8 * 32 * 64 < width * height and _frame_marker(stream) not in _ARITHMETIC_FRAMES:
        raise CorruptMediaError(
            label, f"truncated or damaged: {size} bytes cannot hold the {width}x{height} pixels its header declares"
        )


_ARITHMETIC_FRAMES = {0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}  # JPEG's start-of-frame markers of arithmetic coding


def _frame_marker(stream: IO[bytes]) -> int | None:
    """The start-of-frame marker of the JPEG in ``stream`` (0xC0 baseline, 0xC2 progressive,
    0xC9 arithmetic...), found by walking the segments before it; None if not found."""
    position = stream.tell()
    stream.seek(0)
    try:
        if stream.read(2) != b"\xff\xd8":
            return None
        while True:
            head = stream.read(4)
            if len(head) < 4 or head[0] != 0xFF:
                return None
            marker, length = head[1], int.from_bytes(head[2:4], "big")
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # DHT, JPG and DAC are not frames
                return marker
            stream.seek(length - 2, io.SEEK_CUR)
    finally:
        stream.seek(position)


def _decoded(
    picture: Image.Image, label: str, max_pixels: int, min_side: int | None = None, *, owned: bool = False
) -> Image.Image:
    """Check the header size, decode all pixels (first frame; a JPEG at reduced scale when
    ``min_side`` allows it) and apply EXIF orientation (none when the EXIF is unreadable).

    A picture the caller handed in is never modified: the result is a new image. One this
    module opened itself (``owned``) is oriented in place, which spares a copy of every
    decoded pixel, a fifth of a small JPEG's decoding time.
    """
    _check_size(label, picture.width, picture.height, max_pixels)
    with _pillow_errors(label):
        if min_side is not None and picture.format == "JPEG" and min(picture.size) >= 2 * min_side:
            picture.draft(picture.mode, (min_side, min_side))
        picture.load()
    method = _EXIF_TRANSPOSE.get(_exif_orientation(picture))
    if method is None:
        return picture if owned else picture.copy()
    with _pillow_errors(label):
        if not owned:
            return picture.transpose(method)
        # Pillow re-encodes the EXIF block without its orientation tag after turning, which
        # fails on some damaged blocks (TypeError); nothing reads this picture's EXIF again.
        for key in ("exif", "Raw profile type exif"):
            picture.info.pop(key, None)
        ImageOps.exif_transpose(picture, in_place=True)
        return picture


def _exif_orientation(picture: Image.Image) -> int:
    """The EXIF orientation of a decoded picture (1 to 8), 1 (as stored) when it has none.

    EXIF is metadata next to the pixels: a block that cannot be parsed (cut short, random
    bytes) or holds no valid orientation must not cost the user a picture whose pixels
    decode, so it counts as no orientation.
    """
    with _quiet_pillow:
        try:
            value = picture.getexif().get(ExifTags.Base.Orientation, 1)
        except _DECODE_ERRORS:
            return 1
    return value if is_whole(value) and 1 <= value <= 8 else 1


def _pil_to_rgb(picture: Image.Image, label: str, background: tuple[int, int, int]) -> np.ndarray:
    """Convert a decoded image of any pixel mode to an ``HxWx3`` uint8 RGB array."""
    mode = picture.mode
    if mode in _ALPHA_MODES or (mode in _KEYED_TRANSPARENCY_MODES and "transparency" in picture.info):
        return _composite(picture.convert("RGBA"), background)
    if mode in _SIXTEEN_BIT_MODES:
        # "I" may hold anything a 32-bit integer can; values outside 0..65535 are clipped.
        values = np.clip(np.asarray(picture), 0, 65535).astype(np.uint32)
        return _gray_to_rgb(((values + 128) // 257).astype(np.uint8))
    if mode == "F":
        return _gray_to_rgb(_float_to_uint8(np.asarray(picture)))
    try:
        rgb = picture if mode == "RGB" else picture.convert("RGB")  # convert() would copy an RGB picture
    except ValueError as exc:
        raise UnsupportedMediaError(label, f"pixel mode {mode!r} cannot be converted to RGB") from exc
    return np.array(rgb, dtype=np.uint8, order="C")


def _composite(rgba: Image.Image, background: tuple[int, int, int]) -> np.ndarray:
    """Blend an RGBA image over an opaque ``background``, as a viewer would show it."""
    base = Image.new("RGBA", rgba.size, (*background, 255))
    return np.array(Image.alpha_composite(base, rgba).convert("RGB"), dtype=np.uint8, order="C")


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    """Repeat an ``HxW`` uint8 array into three identical channels."""
    return np.repeat(gray[:, :, np.newaxis], 3, axis=2)


def _float_to_uint8(values: np.ndarray) -> np.ndarray:
    """Floats in [0, 1] are scaled by 255; any other range is taken as 0..255 and clipped.

    NaN counts as 0, so one bad value cannot poison the whole image.
    """
    values = np.nan_to_num(values.astype(np.float32), nan=0.0, posinf=255.0, neginf=0.0)
    if values.min() >= 0.0 and values.max() <= 1.0:
        values = values * 255.0
    return np.rint(np.clip(values, 0.0, 255.0)).astype(np.uint8)


def _array_to_rgb(
    array: np.ndarray,
    label: str,
    background: tuple[int, int, int],
    max_pixels: int | None,
) -> np.ndarray:
    """Convert a gray, RGB or RGBA array of a supported dtype to a fresh uint8 RGB array."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise UnsupportedMediaError(
            label,
            f"array of shape {array.shape} is not an image; expected HxW, HxWx1, HxWx3 (RGB) or HxWx4 (RGBA)",
        )
    if array.size == 0:
        raise UnsupportedMediaError(label, f"array of shape {array.shape} has no pixels")
    if max_pixels is not None:
        _check_size(label, array.shape[1], array.shape[0], max_pixels)

    if array.dtype == np.uint8:
        pixels = array
    elif array.dtype == np.bool_:
        pixels = np.where(array, np.uint8(255), np.uint8(0))
    elif array.dtype == np.uint16:
        pixels = ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        pixels = _float_to_uint8(array)
    else:
        raise UnsupportedMediaError(
            label,
            f"array dtype {array.dtype} is not supported; use uint8, uint16, bool or float in [0, 1]",
        )

    if pixels.ndim == 2:
        return _gray_to_rgb(pixels)
    if pixels.shape[2] == 4:
        return _composite(Image.fromarray(np.ascontiguousarray(pixels)), background)
    return np.array(pixels, dtype=np.uint8, order="C")
