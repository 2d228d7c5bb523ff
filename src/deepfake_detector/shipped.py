"""Where the detector that ships inside the package lives.

Every front end that takes an optional model (``predict``, ``evaluate``, the web page, the
REST service) falls back to :func:`default_model_dir`, so that a fresh install judges
pictures with no training and no download.
"""

from __future__ import annotations

from pathlib import Path

from .errors import BundleError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_MODEL = "default"


def default_model_dir() -> Path:
    """The shipped bundle's folder; a :class:`BundleError` when this install lacks it."""
    path = WEIGHTS_DIR / DEFAULT_MODEL
    if not path.is_dir():
        raise BundleError(
            f"{path}: the shipped detector is missing from this install; pass --model with a bundle folder, "
            "or rebuild it with `python -m deepfake_detector.rebuild` (see docs/shipped-detector.md)."
        )
    return path
