"""deepfake-detector: tell whether a picture of a person is real or fake.

The public API: ``Detector`` (load a bundle, predict), ``train``/``TrainConfig``,
``evaluate``, the result schema ``Prediction`` and the error family. Heavy modules
(torch) are imported on first use, so ``import deepfake_detector`` stays light.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from .errors import (
    BundleError,
    CorruptMediaError,
    DatasetError,
    DeepfakeDetectorError,
    EmptyFileError,
    InvalidArgumentError,
    MediaError,
    MediaNotFoundError,
    MediaTooLargeError,
    ModelImportError,
    UnknownModelError,
    UnsupportedMediaError,
)
from .results import Prediction

try:
    __version__ = version("deepfake-detector")
except PackageNotFoundError:
    __version__ = "0.0.0+unknown"

_LAZY = {
    "Detector": "detector",
    "train": "training",
    "TrainConfig": "training",
    "evaluate": "evaluation",
    "load_image": "media.image",
}

if TYPE_CHECKING:
    from .detector import Detector
    from .evaluation import evaluate
    from .media.image import load_image
    from .training import TrainConfig, train


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BundleError",
    "CorruptMediaError",
    "DatasetError",
    "DeepfakeDetectorError",
    "Detector",
    "EmptyFileError",
    "InvalidArgumentError",
    "MediaError",
    "MediaNotFoundError",
    "MediaTooLargeError",
    "ModelImportError",
    "Prediction",
    "TrainConfig",
    "UnknownModelError",
    "UnsupportedMediaError",
    "__version__",
    "evaluate",
    "load_image",
    "train",
]
