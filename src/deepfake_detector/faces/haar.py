"""The Haar backend: OpenCV's Viola-Jones frontal-face cascade.

No neural network and no torch, so it runs anywhere OpenCV does; it finds upright
frontal faces well and misses turned or small ones. Its cascade file ships in the
opencv-python-headless wheel. cv2 is optional and imported only when this detector is built.

The cascade gives no probability. The score is a documented stand-in: ``w``, the summed
vote of the last of the cascade's 25 stages for the strongest window of a detection
(``levelWeights`` of ``detectMultiScale3``), mapped through a logistic,
``score = 1 / (1 + exp(-(w - 3) / 1.5))``. Every accepted window has ``w`` above that
stage's threshold (about -3), so scores run from near 0 to 1. On face_photos (see
docs/faces.md) true faces had a median ``w`` near 6 (score 0.88) and false detections near
2.8 (score 0.47): use it to rank boxes, not as a calibrated probability.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

from ..checks import is_finite
from ..errors import InvalidArgumentError, MissingDependencyError, reraise_interrupt
from .base import FaceBox, check_image, check_positive_int, finish, shrink

INSTALL_LINE = 'pip install "opencv-python-headless<5"'
CASCADE_FILE = "haarcascade_frontalface_default.xml"
_SCORE_CENTRE = 3.0
_SCORE_SPREAD = 1.5


def _import_cv2() -> Any:
    """cv2 with its Haar cascades, or an error with the install line: OpenCV 5 dropped the
    cascade classifier and its files, so a cv2 of that version is as good as none here."""
    try:
        import cv2
    except ImportError as exc:
        reraise_interrupt(exc)
        raise MissingDependencyError("The 'haar' face detector", "opencv-python-headless", INSTALL_LINE, exc) from exc
    if not (hasattr(cv2, "CascadeClassifier") and hasattr(getattr(cv2, "data", None), "haarcascades")):
        version = getattr(cv2, "__version__", "unknown")
        cause = ImportError(f"cv2 {version} has no Haar cascades; OpenCV 5 removed them")
        raise MissingDependencyError("The 'haar' face detector", "opencv-python-headless<5", INSTALL_LINE, cause)
    return cv2


def weight_to_score(weight: float) -> float:
    """The logistic stand-in score for a last-stage weight (see the module docstring)."""
    return 1.0 / (1.0 + math.exp(-(weight - _SCORE_CENTRE) / _SCORE_SPREAD))


class HaarDetector:
    """Faces by OpenCV's Haar cascade on the equalised grayscale image.

    ``scale_factor`` is the step between the scanned window sizes (smaller: slower, finds
    more), ``min_neighbors`` how many overlapping hits make a face (larger: fewer false
    detections), ``min_face_size`` the smallest face in pixels of the detection image;
    images whose longer side exceeds ``max_side`` are shrunk to it first. ``device`` is
    accepted for a common signature and must be a CPU: OpenCV runs this on the CPU.
    """

    name = "haar"

    def __init__(
        self,
        *,
        device: str = "cpu",
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_face_size: int = 30,
        max_side: int = 1280,
    ) -> None:
        if device not in ("cpu", "auto"):
            raise InvalidArgumentError(f"The 'haar' face detector runs on the CPU only; got device={device!r}.")
        if not is_finite(scale_factor) or not 1 < scale_factor <= 2:
            raise InvalidArgumentError(f"scale_factor must be a number in (1, 2]; got {scale_factor!r}.")
        self.scale_factor = float(scale_factor)
        self.min_neighbors = check_positive_int("min_neighbors", min_neighbors, 0)
        self.min_face_size = check_positive_int("min_face_size", min_face_size, 12)
        self.max_side = check_positive_int("max_side", max_side, 64)
        self._cv2 = _import_cv2()
        path = self._cv2.data.haarcascades + CASCADE_FILE
        self._cascade = self._cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise MissingDependencyError(
                "The 'haar' face detector",
                "opencv-python-headless",
                INSTALL_LINE,
                FileNotFoundError(f"cascade file {path} is missing or unreadable"),
            )
        self._lock = threading.Lock()

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        """Faces in an ``HxWx3`` uint8 RGB image, best first."""
        cv2 = self._cv2
        height, width = check_image(image).shape[:2]
        small, scale = shrink(image, self.max_side)
        gray = cv2.equalizeHist(cv2.cvtColor(np.ascontiguousarray(small), cv2.COLOR_RGB2GRAY))
        size = (self.min_face_size, self.min_face_size)
        with self._lock:
            rects, _levels, weights = self._cascade.detectMultiScale3(
                gray,
                scaleFactor=self.scale_factor,
                minNeighbors=self.min_neighbors,
                minSize=size,
                outputRejectLevels=True,
            )
        raw = [
            (float(x), float(y), float(x + w), float(y + h), weight_to_score(float(weight)), None)
            for (x, y, w, h), weight in zip(rects, np.ravel(weights))
        ]
        return finish(raw, scale, width, height)
