"""The MTCNN backend: facenet-pytorch's three-stage cascade of small CNNs.

Chosen because it is accurate on small, turned and partly hidden faces, gives five
landmarks, and its weights ship inside the facenet-pytorch wheel, so nothing is ever
downloaded. facenet-pytorch is optional and imported only when this detector is built.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError, MissingDependencyError, reraise_interrupt
from .base import FaceBox, check_image, check_positive_int, finish, shrink

INSTALL_LINE = "pip install --no-deps facenet-pytorch==2.6.0"
DEFAULT_THRESHOLDS: tuple[float, float, float] = (0.6, 0.7, 0.7)


def _import_facenet() -> Any:
    """facenet_pytorch, or an error with the install line.

    ``--no-deps`` because its metadata pins an old torch that would replace ours; it only
    needs torch and torchvision, which are already here.
    """
    try:
        import facenet_pytorch
    except ImportError as exc:
        reraise_interrupt(exc)
        raise MissingDependencyError("The 'mtcnn' face detector", "facenet-pytorch", INSTALL_LINE, exc) from exc
    return facenet_pytorch


class MTCNNDetector:
    """Faces by MTCNN, with its confidence as the score and its five landmarks.

    ``min_face_size`` (pixels of the original image) is the smallest face searched for;
    ``thresholds`` are the three stages' acceptance probabilities; images whose longer
    side exceeds ``max_side`` are shrunk to it first and the boxes scaled back. The network
    is built once here; calls on one instance are serialised by a lock.
    """

    name = "mtcnn"

    def __init__(
        self,
        *,
        device: str = "cpu",
        min_face_size: int = 20,
        thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
        max_side: int = 1280,
    ) -> None:
        self.min_face_size = check_positive_int("min_face_size", min_face_size, 12)
        self.max_side = check_positive_int("max_side", max_side, 64)
        self.thresholds = _check_thresholds(thresholds)
        facenet = _import_facenet()
        from ..devices import pick_device

        self.device = pick_device(device)
        self._model = facenet.MTCNN(
            keep_all=True,
            post_process=False,
            min_face_size=self.min_face_size,
            thresholds=list(self.thresholds),
            device=self.device,
        ).eval()
        self._lock = threading.Lock()

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        """Faces in an ``HxWx3`` uint8 RGB image, best first."""
        import torch

        height, width = check_image(image).shape[:2]
        small, scale = shrink(image, self.max_side)
        # min_face_size counts pixels of the original image: after shrinking, search for
        # proportionally smaller faces (down to MTCNN's floor of 12), so a face of a given
        # size is found whatever the resolution of the picture around it.
        min_size = max(12, int(self.min_face_size * scale))
        # MTCNN's image pyramid starts at min_face_size; a smaller image has no level to search.
        if min(small.shape[:2]) < min_size:
            return []
        with self._lock, torch.inference_mode():
            self._model.min_face_size = min_size
            boxes, probs, points = self._model.detect(np.ascontiguousarray(small), landmarks=True)
        if boxes is None:
            return []
        raw = [
            (*box[:4], float(prob), tuple((float(px), float(py)) for px, py in marks))
            for box, prob, marks in zip(boxes, probs, points)
        ]
        return finish(raw, scale, width, height)


def _check_thresholds(thresholds: Sequence[float]) -> tuple[float, float, float]:
    """Three probabilities, one per MTCNN stage, each in (0, 1]."""
    values = tuple(thresholds) if isinstance(thresholds, Sequence) and not isinstance(thresholds, str) else ()
    if len(values) != 3 or not all(
        isinstance(v, (int, float, np.floating)) and not isinstance(v, bool) and 0.0 < v <= 1.0 for v in values
    ):
        raise InvalidArgumentError(
            f"thresholds must be three numbers in (0, 1], one per MTCNN stage; got {thresholds!r}."
        )
    return (float(values[0]), float(values[1]), float(values[2]))
