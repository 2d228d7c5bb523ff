"""What every face detector returns and promises, shared by the backends.

A deepfake classifier looks at faces, not whole photos, so detection sits in front of it.
Backends differ (a neural MTCNN, OpenCV's Haar cascade) but hand back the same
:class:`FaceBox`, in pixels of the image they were given, best first, clipped to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from ..errors import InvalidArgumentError


@dataclass(frozen=True)
class FaceBox:
    """One detected face, in pixels of the image given to ``detect()``.

    ``score`` is the detector's confidence in [0, 1]; ``landmarks`` holds MTCNN's five
    points (two eyes, nose, two mouth corners) as ``(x, y)`` pairs when the backend gives
    them. Landmarks are not clipped: a point of a face cut by the border may lie outside.
    """

    x: float
    y: float
    w: float
    h: float
    score: float
    landmarks: tuple[tuple[float, float], ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values, for reports and the CLI."""
        return {
            "x": self.x,
            "y": self.y,
            "w": self.w,
            "h": self.h,
            "score": self.score,
            "landmarks": None if self.landmarks is None else [list(p) for p in self.landmarks],
        }

    def iou(self, other: FaceBox) -> float:
        """Intersection over union with ``other``: the usual test of "same face"."""
        return box_iou((self.x, self.y, self.w, self.h), (other.x, other.y, other.w, other.h))


def box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two ``(x, y, w, h)`` boxes."""
    inter_w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    inter_h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if inter_w <= 0 or inter_h <= 0:
        return 0.0
    inter = inter_w * inter_h
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


@runtime_checkable
class FaceDetector(Protocol):
    """Anything that finds faces: ``detect`` takes an ``HxWx3`` uint8 RGB array.

    It returns boxes sorted by score, highest first, clipped to the image; an image
    without faces gives an empty list.
    """

    name: str

    def detect(self, image: np.ndarray) -> list[FaceBox]: ...


def check_image(image: object) -> np.ndarray:
    """Refuse anything but the ``HxWx3`` uint8 array ``load_image`` produces, naming what came."""
    if not isinstance(image, np.ndarray):
        raise InvalidArgumentError(
            f"image must be an HxWx3 uint8 RGB numpy array (see load_image); got {type(image).__name__}."
        )
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape:
        raise InvalidArgumentError(
            "image must be an HxWx3 uint8 RGB numpy array (see load_image); "
            f"got shape {image.shape} and dtype {image.dtype}."
        )
    return image


def check_positive_int(name: str, value: object, minimum: int = 1) -> int:
    """A detector parameter that must be a whole number of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InvalidArgumentError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    return int(value)


def shrink(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Downscale so the longer side is at most ``max_side``; returns the image and the scale used.

    Detection cost grows with pixel count while faces in big photos are big, so a bounded
    size keeps the time per photo flat. Pillow's bilinear resize filters over the whole
    footprint when shrinking, so small faces are not aliased away.
    """
    height, width = image.shape[:2]
    longer = max(height, width)
    if longer <= max_side:
        return image, 1.0
    scale = max_side / longer
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
    return small, scale


def finish(
    raw: list[tuple[float, float, float, float, float, tuple[tuple[float, float], ...] | None]],
    scale: float,
    width: int,
    height: int,
) -> list[FaceBox]:
    """Turn backend corners ``(x0, y0, x1, y1, score, landmarks)`` on the detection image into boxes.

    Scales back to the caller's image, clips to it, drops boxes left empty by clipping,
    clamps the score into [0, 1] and sorts best first: the promises of :class:`FaceDetector`.
    """
    boxes = []
    for x0, y0, x1, y1, score, points in raw:
        x0, x1 = (min(max(float(v) / scale, 0.0), float(width)) for v in (x0, x1))
        y0, y1 = (min(max(float(v) / scale, 0.0), float(height)) for v in (y0, y1))
        if x1 <= x0 or y1 <= y0 or not math.isfinite(score):
            continue
        if points is not None:
            points = tuple((float(px) / scale, float(py) / scale) for px, py in points)
        boxes.append(FaceBox(x0, y0, x1 - x0, y1 - y0, min(max(float(score), 0.0), 1.0), points))
    boxes.sort(key=lambda b: b.score, reverse=True)
    return boxes
