"""Cut a face out of a photo with context around it, the same way in training and prediction.

Detectors draw tight boxes, but blending seams, hairlines and jaw edges, where face swaps
leave traces, lie just outside them; so the crop adds a margin. A ``CropSpec`` is a small
value that can be stored with a model bundle, so prediction crops as training did.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from ..checks import is_finite
from ..errors import InvalidArgumentError
from .base import FaceBox, check_image

MAX_MARGIN = 2.0


@dataclass(frozen=True)
class CropSpec:
    """How to grow a face box into a crop.

    ``margin`` is the fraction of the box's width (and height) added on EACH side, so 0.3
    makes a crop 1.6 times the box; ``square`` then grows the shorter side to the longer one
    around the box centre, since classifiers take square inputs and stretching would
    distort the face.
    """

    margin: float = 0.3
    square: bool = True

    def __post_init__(self) -> None:
        margin = self.margin
        if not is_finite(margin) or not 0.0 <= margin <= MAX_MARGIN:
            raise InvalidArgumentError(f"margin must be a number from 0 to {MAX_MARGIN:g}; got {margin!r}.")
        if not isinstance(self.square, (bool, np.bool_)):
            raise InvalidArgumentError(f"square must be true or false; got {self.square!r}.")
        object.__setattr__(self, "margin", float(margin))
        object.__setattr__(self, "square", bool(self.square))

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for a bundle's JSON config."""
        return {"margin": self.margin, "square": self.square}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CropSpec:
        """The spec stored by :meth:`to_dict`; missing keys take defaults, unknown keys are refused."""
        if not isinstance(data, dict):
            raise InvalidArgumentError(f"a crop spec must be a mapping; got {type(data).__name__}.")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidArgumentError(
                f"unknown crop spec key(s) {', '.join(map(repr, unknown))}; known keys: {', '.join(sorted(known))}."
            )
        return cls(**data)


def crop_box(box: FaceBox, image_shape: tuple[int, int], spec: CropSpec) -> tuple[int, int, int, int]:
    """The integer region ``(x0, y0, x1, y1)`` to cut for ``box``, clipped to the image.

    ``image_shape`` is ``(height, width)`` in numpy order (``image.shape[:2]`` works; extra
    entries are ignored). The region is rounded outwards, so it always contains the grown
    box where the image allows. Near the border clipping cuts the crop, which may then be
    non-square: shifting it inwards instead would move the face off-centre.
    """
    if len(image_shape) < 2:
        raise InvalidArgumentError(f"image_shape must be (height, width); got {image_shape!r}.")
    height, width = image_shape[0], image_shape[1]
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in (height, width)):
        raise InvalidArgumentError(f"image_shape must hold two positive integers (height, width); got {image_shape!r}.")
    if not all(math.isfinite(v) for v in (box.x, box.y, box.w, box.h)) or box.w <= 0 or box.h <= 0:
        raise InvalidArgumentError(f"the face box must have a finite position and positive size; got {box!r}.")

    crop_w = box.w * (1.0 + 2.0 * spec.margin)
    crop_h = box.h * (1.0 + 2.0 * spec.margin)
    if spec.square:
        crop_w = crop_h = max(crop_w, crop_h)
    centre_x, centre_y = box.x + box.w / 2.0, box.y + box.h / 2.0
    # Rounding to 1e-6 first keeps float noise (10 * 1.6 = 16.000000000000004) from adding a pixel.
    x0 = max(0, math.floor(round(centre_x - crop_w / 2.0, 6)))
    y0 = max(0, math.floor(round(centre_y - crop_h / 2.0, 6)))
    x1 = min(int(width), math.ceil(round(centre_x + crop_w / 2.0, 6)))
    y1 = min(int(height), math.ceil(round(centre_y + crop_h / 2.0, 6)))
    if x1 <= x0 or y1 <= y0:
        raise InvalidArgumentError(
            f"the face box {box.x:g},{box.y:g} {box.w:g}x{box.h:g} lies outside the {width}x{height} image."
        )
    return x0, y0, x1, y1


def crop_face(image: np.ndarray, box: FaceBox, spec: CropSpec) -> np.ndarray:
    """The pixels of :func:`crop_box`'s region, as a new ``hxwx3`` uint8 array."""
    x0, y0, x1, y1 = crop_box(box, check_image(image).shape[:2], spec)
    return image[y0:y1, x0:x1].copy()
