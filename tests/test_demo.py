"""The Quick start's demo: offline samples, and verdicts from a given or shipped model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import deepfake_detector.shipped as shipped
from deepfake_detector.cli import main
from deepfake_detector.demo import sample_images

pytest.importorskip("skimage")


def test_samples_are_a_photo_and_a_blend_of_its_face(tmp_path: Path) -> None:
    real_path, fake_path = sample_images(tmp_path)
    real, fake = np.asarray(Image.open(real_path)), np.asarray(Image.open(fake_path))
    assert real.shape == fake.shape == (512, 512, 3)
    changed = np.argwhere(np.abs(real.astype(int) - fake.astype(int)).sum(axis=2) > 0)
    assert len(changed) > 1000  # the face was blended
    (y0, x0), (y1, x1) = changed.min(axis=0), changed.max(axis=0)
    assert (y1 - y0) * (x1 - x0) < 0.25 * real.shape[0] * real.shape[1]  # and only the face region
    again = np.asarray(Image.open(sample_images(tmp_path / "again")[1]))
    assert np.array_equal(again, fake)  # seeded: the same sample every time


def test_demo_judges_given_pictures_with_a_model(tmp_path: Path, trained_bundle: Path, capsys) -> None:
    picture = tmp_path / "in.png"
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(picture)
    out = tmp_path / "out"
    assert main(["demo", str(picture), "--model", str(trained_bundle), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "in.png" in printed and "p_fake" in printed
    assert list(out.glob("in_*_verdict.jpg"))


def test_demo_reports_a_bad_picture(tmp_path: Path, trained_bundle: Path, capsys) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a picture")
    assert main(["demo", str(bad), "--model", str(trained_bundle), "--out", str(tmp_path / "o")]) == 2
    assert "bad.jpg" in capsys.readouterr().out


def test_demo_without_a_shipped_model_says_so(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(shipped, "WEIGHTS_DIR", tmp_path / "none")
    assert main(["demo", "--out", str(tmp_path / "o")]) == 1
    assert "shipped detector is missing" in capsys.readouterr().err


def test_library_loads_the_shipped_detector_by_default(tmp_path, trained_bundle, monkeypatch) -> None:
    from deepfake_detector import Detector
    from deepfake_detector.errors import BundleError
    from deepfake_detector.rebuild import install

    monkeypatch.setattr(shipped, "WEIGHTS_DIR", tmp_path / "weights")
    with pytest.raises(BundleError, match="missing"):
        Detector.load()
    (tmp_path / "weights").mkdir()
    install(trained_bundle)
    assert Detector.load().threshold == Detector.load(trained_bundle).threshold
