"""Test doubles shared by several test files."""

from __future__ import annotations

import numpy as np

from deepfake_detector.faces.base import FaceBox


class FixedFaces:
    """A FaceDetector that finds the boxes it was given in every image, so that face-path
    tests know exactly which crops the Detector should score."""

    name = "fixed"

    def __init__(self, boxes: list[FaceBox]) -> None:
        self.boxes = boxes

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        return list(self.boxes)
