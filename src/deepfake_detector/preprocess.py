"""The one transform from an RGB image to the network's input, shared by train and predict.

Its parameters live in the bundle config, so a bundle always gets the transform it was
trained with. Steps: (crop the face, see ``crop``), resize to the input size, scale to
[0, 1], subtract mean, divide by std. ``crop`` is ``None`` for a model trained on whole
images, or the :class:`~deepfake_detector.faces.crop.CropSpec` its face crops were made with.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

import numpy as np
from PIL import Image

from .checks import is_finite, is_whole
from .errors import BundleError, DeepfakeDetectorError, InvalidArgumentError
from .faces.crop import CropSpec

DRAFT_FACTOR = 2  # a JPEG taken whole is decoded at no less than this many times the input size
# The input sizes a bundle may ask for. 8 pixels is the floor bundles have always had; above 4096
# each image alone needs gigabytes as a float tensor, which fails mid-run with a bare MemoryError,
# while every registered network takes 299 or less.
MIN_INPUT_SIZE = 8
MAX_INPUT_SIZE = 4096

_INTERPOLATIONS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "area": Image.Resampling.BOX,
}


@dataclass(frozen=True)
class Preprocessing:
    """How an ``HxWx3`` uint8 RGB image becomes a ``3xSxS`` float32 array."""

    input_size: int
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    interpolation: str = "bilinear"
    crop: CropSpec | None = None
    face_detector: str | None = None  # the detector that found the training faces, when crop is set

    def __post_init__(self) -> None:
        """Refuse settings that would fail later or, worse, make every score silently wrong
        (a zero or NaN std turns each input, and so each p_fake, into NaN)."""
        if not isinstance(self.interpolation, str) or self.interpolation not in _INTERPOLATIONS:
            raise BundleError(
                f"preprocessing.interpolation must be one of {sorted(_INTERPOLATIONS)}; got {self.interpolation!r}."
            )
        size = self.input_size
        if not is_whole(size) or not MIN_INPUT_SIZE <= size <= MAX_INPUT_SIZE:
            raise BundleError(
                f"preprocessing.input_size must be a whole number of pixels from {MIN_INPUT_SIZE} to {MAX_INPUT_SIZE}; "
                f"got {size!r}."
            )
        object.__setattr__(self, "input_size", int(size))
        object.__setattr__(self, "mean", _per_channel("mean", self.mean, positive=False))
        object.__setattr__(self, "std", _per_channel("std", self.std, positive=True))
        if not np.isfinite(self._table).all():
            raise BundleError(
                f"preprocessing.mean {list(self.mean)} and std {list(self.std)} overflow float32 "
                "(a std too close to zero?); the network's inputs would be infinite."
            )
        if self.crop is not None and not isinstance(self.crop, CropSpec):
            raise BundleError(f"preprocessing.crop must be a crop spec or null; got {self.crop!r}.")
        if self.face_detector is not None and not isinstance(self.face_detector, str):
            raise BundleError(f"preprocessing.face_detector must be a name or null; got {self.face_detector!r}.")

    @property
    def decode_side(self) -> int:
        """The smallest side a JPEG taken whole needs (see ``load_image(min_side=...)``): it is
        shrunk to the input size anyway, so a large JPEG may be decoded at reduced scale down to
        twice that, several times faster. Training and prediction both decode so, whatever
        the front end; face crops are cut from the full-size picture instead."""
        return DRAFT_FACTOR * self.input_size

    def planes(self, image: np.ndarray) -> np.ndarray:
        """The ``HxWx3`` uint8 image resized to the input size, as ``(3, S, S)`` uint8 channel
        planes: what an exported graph takes (it normalises inside), and what ``__call__``
        normalises. Pillow's filter of that name; bilinear is computed by ``_bilinear`` where
        it can be (the same pixels, several times faster)."""
        array = isinstance(image, np.ndarray)
        if not (
            array
            and image.dtype == np.uint8
            and image.ndim == 3
            and image.shape[2] == 3
            and image.shape[0] > 0
            and image.shape[1] > 0
        ):
            got = f"a {image.dtype} array of shape {image.shape}" if array else repr(type(image))
            raise InvalidArgumentError(f"Expected an HxWx3 uint8 RGB image array; got {got}.")
        s = self.input_size
        if image.shape[0] == s and image.shape[1] == s:
            return np.ascontiguousarray(image.transpose(2, 0, 1))
        if self.interpolation == "bilinear" and _fast_uint8_resize():
            return _bilinear(image, s)
        resized = np.asarray(Image.fromarray(image).resize((s, s), _INTERPOLATIONS[self.interpolation]))
        return np.ascontiguousarray(resized.transpose(2, 0, 1))

    @cached_property
    def _table(self) -> np.ndarray:
        """``(3, 256)`` float32: each channel's normalised value of each byte, ``(v / 255 - mean) / std``
        computed in float32, so looking it up gives the arithmetic's result bit for bit."""
        scaled = np.arange(256, dtype=np.float32)[:, None] / 255.0
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):  # refused by __post_init__, with a message
            table = (scaled - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(table.T)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Resize, scale and normalise one image; returns ``(3, S, S)`` float32.

        Scaling and normalising are one table look-up per pixel (see ``_table``): twice as fast
        as the arithmetic on each image, which matters when decoding must keep up with the network."""
        planes = self.planes(image)
        out = np.empty(planes.shape, np.float32)
        for channel, table in enumerate(self._table):
            np.take(table, planes[channel], out=out[channel])
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d["crop"] = self.crop.to_dict() if self.crop is not None else None
        return d

    @classmethod
    def from_dict(cls, d: Any) -> Preprocessing:
        """The settings stored by :meth:`to_dict`. Values are checked, not coerced: ``int(224.7)``
        would quietly give a network another input than its config says."""
        if not isinstance(d, dict):
            raise BundleError(f"preprocessing must be an object; got {d!r}.")
        if "input_size" not in d:
            raise BundleError("preprocessing.input_size is missing.")
        try:
            crop = CropSpec.from_dict(d["crop"]) if d.get("crop") else None
        except DeepfakeDetectorError as exc:
            raise BundleError(f"preprocessing.crop: {exc}") from exc
        return cls(
            input_size=d["input_size"],
            mean=d.get("mean", (0.0, 0.0, 0.0)),
            std=d.get("std", (1.0, 1.0, 1.0)),
            interpolation=d.get("interpolation", "bilinear"),
            crop=crop,
            face_detector=d.get("face_detector"),
        )


def _per_channel(name: str, values: Any, *, positive: bool) -> tuple[float, float, float]:
    """``values`` as three finite floats, one per RGB channel (positive ones for a std, which
    divides: zero gives infinities, a negative one flips what the network sees)."""
    try:
        items = tuple(values)
    except TypeError:
        items = ()
    kind = "positive" if positive else "finite"
    if len(items) != 3 or not all(is_finite(v) and (v > 0 or not positive) for v in items):
        raise BundleError(f"preprocessing.{name} must be three {kind} numbers, one per RGB channel; got {values!r}.")
    return (float(items[0]), float(items[1]), float(items[2]))


@functools.cache
def _fast_uint8_resize() -> bool:
    """Whether torch's uint8 resize runs its vectorised kernel here (x86 with AVX2 or AVX-512):
    one image is then one task on the calling thread. Elsewhere its generic code runs on
    OpenMP threads, at twice Pillow's CPU time, and hangs in a child forked after it ran, so
    Pillow resizes there."""
    import torch

    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def _bilinear(image: np.ndarray, size: int) -> np.ndarray:
    """An ``HxWx3`` uint8 image resized to ``size x size`` by Pillow's bilinear filter (a triangle
    widened by the shrink factor, so it averages away detail instead of aliasing it), as
    ``(3, size, size)`` planes, computed by torch's uint8 kernel, which was written to match
    Pillow's.

    Measured here on 299 px face crops: equal to Pillow's pixels but for 0.05 % of values, which
    differ by one grey level (more values on extreme shapes, never by more); 0.13 ms instead of
    0.45 ms, which matters because the decoding threads share the cores with the network. It
    reads the interleaved pixels in place and writes planes, so no transposing copy is needed
    either way."""
    import torch
    import torch.nn.functional as F

    pixels = torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1).unsqueeze(0)
    out = F.interpolate(pixels, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out[0].contiguous().numpy()
