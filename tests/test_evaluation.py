"""Evaluation writes a complete report whose numbers agree with an independent computation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from deepfake_detector import Detector, evaluate
from deepfake_detector.errors import DatasetError


def test_evaluate_report_and_numbers(tmp_path: Path, trained_bundle: Path, synthetic_test: Path) -> None:
    result = evaluate(trained_bundle, synthetic_test, tmp_path / "report", launder=True, progress=False)
    names = [s["name"] for s in result["sections"]]
    assert names == ["as-is", "laundered"]

    det = Detector.load(trained_bundle)
    paths = sorted(synthetic_test.rglob("*.png"))
    y = np.array([1 if "fake" in p.parts[-3] else 0 for p in paths])
    p = np.array([pr.p_fake for pr in det.predict_many(paths, workers=1)])
    as_is = result["sections"][0]["metrics"]
    assert as_is["n"] == len(paths)
    assert as_is["roc_auc_score"] == pytest.approx(roc_auc_score(y, p), abs=1e-9)
    assert as_is["threshold"] == pytest.approx(det.threshold)
    assert set(as_is["per_group"]) == {"scenes", "checkerboard"}
    # Laundering re-encodes the PNGs as JPEG q80, so the scores move.
    assert result["sections"][1]["metrics"]["log_loss"] != pytest.approx(as_is["log_loss"])

    out = tmp_path / "report"
    report = (out / "report.md").read_text()
    for png in (
        "training_curves.png",
        "confusion_matrix_as_is.png",
        "roc_curve_as_is.png",
        "pr_curve_as_is.png",
        "score_histogram_as_is.png",
        "roc_curve_laundered.png",
    ):
        assert (out / png).stat().st_size > 0
        assert png in report
    assert "checkerboard" in report and "laundered" in report
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["sections"][0]["metrics"]["roc_auc_score"] == pytest.approx(as_is["roc_auc_score"])


def test_evaluate_skips_and_counts_bad_files(tmp_path: Path, trained_bundle: Path, synthetic_test: Path) -> None:
    data = tmp_path / "data"
    for label in ("real", "fake"):
        (data / label).mkdir(parents=True)
        for src in sorted((synthetic_test / label).rglob("*.png"))[:5]:
            (data / label / src.name).write_bytes(src.read_bytes())
    (data / "fake" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    result = evaluate(trained_bundle, data, tmp_path / "r", progress=False)
    metrics = result["sections"][0]["metrics"]
    assert metrics["n"] == 10 and metrics["n_failed"] == 1
    assert "broken.png" in result["sections"][0]["errors"][0]


def test_evaluate_with_no_readable_image_fails_clearly(tmp_path: Path, trained_bundle: Path) -> None:
    data = tmp_path / "data"
    (data / "real").mkdir(parents=True)
    (data / "real" / "empty.png").write_bytes(b"")
    with pytest.raises(DatasetError, match="could be scored"):
        evaluate(trained_bundle, data, tmp_path / "r", progress=False)


def test_threshold_override_changes_labels_not_scores(
    tmp_path: Path, trained_bundle: Path, synthetic_test: Path
) -> None:
    low = evaluate(trained_bundle, synthetic_test, tmp_path / "low", threshold=0.0, progress=False)
    m = low["sections"][0]["metrics"]
    assert m["confusion_matrix"]["matrix"][0][0] == 0, "at threshold 0 nothing is called real"
    base = evaluate(trained_bundle, synthetic_test, tmp_path / "base", progress=False)
    assert base["sections"][0]["metrics"]["roc_auc_score"] == pytest.approx(m["roc_auc_score"])


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    from deepfake_detector.cli import main

    assert main(["demo", "--train", "--out", str(tmp_path / "demo"), "--epochs", "1"]) == 0
    assert (tmp_path / "demo" / "model" / "model.safetensors").is_file()
    assert (tmp_path / "demo" / "report" / "report.md").is_file()
    assert Image.open(tmp_path / "demo" / "report" / "roc_curve_as_is.png").size[0] > 100
