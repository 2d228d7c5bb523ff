"""Ctrl+C while an optional package loads stops the program; it is not "package missing"."""

from __future__ import annotations

import builtins
from pathlib import Path

import pytest

from deepfake_detector.detector import _may_use_onnx
from deepfake_detector.errors import reraise_interrupt
from deepfake_detector.faces import create_face_detector

SHIPPED = Path(__file__).resolve().parents[1] / "src" / "deepfake_detector" / "weights" / "default"


def _interrupted_import() -> ImportError:
    """What pybind11 raises when Ctrl+C lands while its extension module initialises."""
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as interrupt:
            raise ImportError("initialization failed") from interrupt
    except ImportError as exc:
        return exc


def test_an_import_error_made_by_ctrl_c_is_raised_as_the_interrupt() -> None:
    with pytest.raises(KeyboardInterrupt):
        reraise_interrupt(_interrupted_import())
    implicit = ImportError("no module")
    implicit.__context__ = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        reraise_interrupt(implicit)
    assert reraise_interrupt(ImportError("No module named 'onnxruntime'")) is None


def _failing_import(monkeypatch: pytest.MonkeyPatch, name: str, error: ImportError) -> None:
    real = builtins.__import__

    def fake(module: str, *args: object, **kwargs: object) -> object:
        if module == name or module.startswith(name + "."):
            raise error
        return real(module, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)


def test_ctrl_c_while_onnxruntime_loads_is_not_a_fall_back_to_pytorch(monkeypatch: pytest.MonkeyPatch) -> None:
    _failing_import(monkeypatch, "onnxruntime", _interrupted_import())
    with pytest.raises(KeyboardInterrupt):
        _may_use_onnx(SHIPPED)


def test_a_missing_onnxruntime_still_means_pytorch(monkeypatch: pytest.MonkeyPatch) -> None:
    _failing_import(monkeypatch, "onnxruntime", ImportError("No module named 'onnxruntime'"))
    assert _may_use_onnx(SHIPPED) is False


def test_ctrl_c_while_the_face_detector_loads_is_not_a_fall_back(monkeypatch: pytest.MonkeyPatch) -> None:
    _failing_import(monkeypatch, "facenet_pytorch", _interrupted_import())
    with pytest.raises(KeyboardInterrupt):
        create_face_detector("auto")
