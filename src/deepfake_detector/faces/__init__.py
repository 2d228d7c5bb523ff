"""Find faces in photos and crop them, so the deepfake classifier sees faces, not scenes.

``create_face_detector`` is the one door in, named like ``create_model``: ``"mtcnn"``
(facenet-pytorch) or ``"haar"`` (OpenCV). ``"auto"`` picks the default measured in
docs/faces.md and falls back to the other backend, with a warning, when the default's
package is missing. Both packages are optional; nothing heavy is imported until a
detector is built.
"""

from __future__ import annotations

import difflib
import inspect
import warnings
from typing import Any

from ..errors import DeepfakeDetectorError, InvalidArgumentError, MissingDependencyError, UnknownModelError
from .base import FaceBox, FaceDetector
from .crop import CropSpec, crop_box, crop_face
from .haar import HaarDetector
from .mtcnn import MTCNNDetector

__all__ = [
    "DEFAULT_FACE_DETECTOR",
    "CropSpec",
    "FaceBox",
    "FaceDetector",
    "HaarDetector",
    "MTCNNDetector",
    "MissingDependencyError",
    "create_face_detector",
    "crop_box",
    "crop_face",
    "list_face_detectors",
]

_DETECTORS: dict[str, type] = {"haar": HaarDetector, "mtcnn": MTCNNDetector}
# Chosen by benchmarks/faces.py; see docs/faces.md for the numbers.
DEFAULT_FACE_DETECTOR = "mtcnn"
_FALLBACK = {"mtcnn": "haar", "haar": "mtcnn"}


def list_face_detectors() -> list[str]:
    """Names ``create_face_detector`` accepts besides ``"auto"``, sorted."""
    return sorted(_DETECTORS)


def create_face_detector(name: str = "auto", *, device: str = "cpu", **kwargs: Any) -> FaceDetector:
    """Build a face detector by name; ``None`` keyword values are dropped so backend defaults win.

    Keyword arguments go to the backend (both take ``min_face_size`` and ``max_side``). An
    unknown name raises with close matches and the known names; a parameter the backend
    does not take raises and lists the ones it does.
    """
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if name != "auto":
        return _build(_known(name), device, kwargs)
    try:
        return _build(DEFAULT_FACE_DETECTOR, device, kwargs)
    except MissingDependencyError as missing:
        other = _FALLBACK[DEFAULT_FACE_DETECTOR]
        accepted = _parameters(other)
        try:
            detector = _build(other, device, {k: v for k, v in kwargs.items() if k in accepted})
        except DeepfakeDetectorError:
            raise missing from None
        warnings.warn(f"{missing} Using the {other!r} face detector instead.", stacklevel=2)
        return detector


def _known(name: str) -> str:
    """``name`` if registered; otherwise the registry's kind of error, with suggestions."""
    if name in _DETECTORS:
        return name
    close = difflib.get_close_matches(str(name), [*_DETECTORS, "auto"], n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownModelError(
        f"Unknown face detector {name!r}.{hint} Known face detectors: auto, {', '.join(list_face_detectors())}."
    )


def _parameters(name: str) -> set[str]:
    """The keyword parameters a backend's constructor takes."""
    return set(inspect.signature(_DETECTORS[name]).parameters)


def _build(name: str, device: str, kwargs: dict[str, Any]) -> FaceDetector:
    """Construct backend ``name``, refusing parameters it does not take by name."""
    accepted = _parameters(name)
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise InvalidArgumentError(
            f"The {name!r} face detector does not take {', '.join(map(repr, unknown))}; "
            f"it takes: {', '.join(sorted(accepted))}."
        )
    detector: FaceDetector = _DETECTORS[name](device=device, **kwargs)
    return detector
