"""Every error a user can cause, as one family of typed exceptions.

Front ends catch :class:`DeepfakeDetectorError` and show its message; the message
always names the thing at fault (a file, a model name, a parameter) and the reason.
Each class also subclasses the matching built-in, so ``except ValueError`` keeps working.
"""

from __future__ import annotations

from os import PathLike


class DeepfakeDetectorError(Exception):
    """Base class of every error this package raises on purpose."""


def reraise_interrupt(exc: BaseException) -> None:
    """Raise KeyboardInterrupt when Ctrl+C is what made ``exc``. An extension module interrupted
    while it initialises (pybind11's, which onnxruntime uses) raises ImportError chained to the
    KeyboardInterrupt; read as "package missing", the interrupt would be lost, and the program
    would go on without the package instead of stopping."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            raise KeyboardInterrupt from exc
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__


class MediaError(DeepfakeDetectorError):
    """An input file or buffer could not be used; ``path`` names it, ``reason`` says why."""

    def __init__(self, path: str | PathLike[str] | None, reason: str) -> None:
        self.path = str(path) if path is not None else "<in-memory input>"
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class MediaNotFoundError(MediaError, FileNotFoundError):
    """The input path does not exist or is not a file."""


class EmptyFileError(MediaError, ValueError):
    """The input has zero bytes."""


class UnsupportedMediaError(MediaError, ValueError):
    """The input is not an image (or video) in a format we read."""


class CorruptMediaError(MediaError, ValueError):
    """The input claims a known format but cannot be decoded (truncated, damaged)."""


class MediaTooLargeError(MediaError, ValueError):
    """The input exceeds a size limit (pixel count or bytes): a guard against decompression bombs."""


class UnknownModelError(DeepfakeDetectorError, ValueError):
    """A model name is not in the registry."""


class BundleError(DeepfakeDetectorError, ValueError):
    """A model bundle folder is missing, incomplete or inconsistent."""


class DatasetError(DeepfakeDetectorError, ValueError):
    """A data set folder or manifest cannot be used for training or evaluation."""


class InvalidArgumentError(DeepfakeDetectorError, ValueError):
    """A parameter has a value outside what the function accepts."""


class UnknownLayerError(DeepfakeDetectorError, ValueError):
    """A layer name (such as a bundle's ``explain_layer``) names no module of the network."""


class ModelImportError(DeepfakeDetectorError, ValueError):
    """A foreign model file (for example a Keras ``.h5``) cannot be mapped onto our network."""


class CheckpointError(DeepfakeDetectorError, ValueError):
    """An interrupted run's checkpoint cannot be read, so it cannot be resumed."""


class ExportError(DeepfakeDetectorError, RuntimeError):
    """A bundle cannot be exported (an ensemble, or a network the exporter cannot reproduce faithfully)."""


class TrainingError(DeepfakeDetectorError, RuntimeError):
    """Training cannot go on (for example the loss became NaN)."""


class MissingDependencyError(DeepfakeDetectorError, ImportError):
    """An optional package a backend needs is not installed; ``install`` is the line that fixes it."""

    def __init__(self, what: str, package: str, install: str, cause: BaseException) -> None:
        self.package = package
        self.install = install
        super().__init__(
            f"{what} needs the {package} package, which cannot be imported ({cause}). Install it with: {install}"
        )
