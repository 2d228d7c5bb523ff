"""The one transform from an RGB image to the network's input, shared by train and predict.

Its parameters live in the bundle config, so a bundle always gets the transform it was
trained with. Steps: (crop the face, see ``crop``), resize to the input size, scale to
[0, 1], subtract mean, divide by std. ``crop`` is ``None`` for a model trained on whole
images, or the :class:`~deepfake_detector.faces.crop.CropSpec` its face crops were made with.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

import numpy as np
from PIL import Image

from .errors import BundleError, DeepfakeDetectorError
from .faces.crop import CropSpec

DRAFT_FACTOR = 2  # a JPEG taken whole is decoded at no less than this many times the input size

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
        if self.interpolation not in _INTERPOLATIONS:
            raise BundleError(
                f"Unknown interpolation {self.interpolation!r}; expected one of {sorted(_INTERPOLATIONS)}."
            )
        if self.input_size < 8:
            raise BundleError(f"input_size must be at least 8 pixels; got {self.input_size}.")

    @property
    def decode_side(self) -> int:
        """The smallest side a JPEG taken whole needs (see ``load_image(min_side=...)``): it is
        shrunk to the input size anyway, so a large JPEG may be decoded at reduced scale down to
        twice that, several times faster. Training and prediction both decode so, whatever
        the front end; face crops are cut from the full-size picture instead."""
        return DRAFT_FACTOR * self.input_size

    def resize(self, image: np.ndarray) -> np.ndarray:
        """Resize to the square input size (no-op when already that size)."""
        s = self.input_size
        if image.shape[0] == s and image.shape[1] == s:
            return image
        return np.asarray(self.resize_picture(Image.fromarray(image)))

    def resize_picture(self, picture: Image.Image) -> Image.Image:
        """``resize`` on a Pillow picture, for a loader that resizes before making the array
        (``load_image(fit=...)``): the same Pillow call, so the same pixels."""
        s = self.input_size
        if picture.size == (s, s):
            return picture
        return picture.resize((s, s), _INTERPOLATIONS[self.interpolation])

    @cached_property
    def _table(self) -> np.ndarray:
        """``(3, 256)`` float32: each channel's normalised value of each byte, ``(v / 255 - mean) / std``
        computed in float32, so looking it up gives the arithmetic's result bit for bit."""
        scaled = np.arange(256, dtype=np.float32)[:, None] / 255.0
        table = (scaled - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(table.T)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Resize, scale and normalise one image; returns ``(3, S, S)`` float32.

        Scaling and normalising are one table look-up per pixel (see ``_table``): twice as fast
        as the arithmetic on each image, which matters when decoding must keep up with the network."""
        planes = np.ascontiguousarray(self.resize(image).transpose(2, 0, 1))
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
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        try:
            return cls(
                input_size=int(d["input_size"]),
                mean=tuple(float(v) for v in d.get("mean", (0.0, 0.0, 0.0))),
                std=tuple(float(v) for v in d.get("std", (1.0, 1.0, 1.0))),
                interpolation=str(d.get("interpolation", "bilinear")),
                crop=CropSpec.from_dict(d["crop"]) if d.get("crop") else None,
                face_detector=d.get("face_detector"),
            )
        except BundleError:
            raise
        except (KeyError, TypeError, ValueError, DeepfakeDetectorError) as exc:
            raise BundleError(f"Invalid preprocessing section in bundle config: {exc}") from exc
