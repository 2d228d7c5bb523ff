"""Metrics, plots and the report: checked against values worked out by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from deepfake_detector.errors import InvalidArgumentError
from deepfake_detector.metrics import compute_metrics, equal_error_rate
from deepfake_detector.plots import (
    plot_confusion_matrix,
    plot_precision_recall_curve,
    plot_roc_curve,
    plot_score_histogram,
    plot_training_curves,
)
from deepfake_detector.report import write_report

Y = [0, 0, 0, 1, 1, 1]
PERFECT = [0.1, 0.2, 0.3, 0.7, 0.8, 0.9]

# Four reals; fakes from two methods: "easy" always above every real, "hard" interleaved.
# hard vs all reals: 0.25 beats two reals, 0.35 beats three -> AUC = (2 + 3) / (2 * 4) = 5/8,
# while the pooled AUC is (8 + 5) / 16, so the per-group number must not be the pooled one.
GROUPED_Y = [0, 0, 0, 0, 1, 1, 1, 1]
GROUPED_P = [0.1, 0.2, 0.3, 0.4, 0.8, 0.9, 0.25, 0.35]
GROUPS = ["real", "real", "real", "real", "easy", "easy", "hard", "hard"]


def test_perfect_scores() -> None:
    m = compute_metrics(Y, PERFECT, threshold=0.5)
    assert m["roc_auc_score"] == 1.0
    assert m["average_precision_score"] == 1.0
    assert m["equal_error_rate"] == 0.0
    assert m["accuracy_score"] == 1.0
    assert m["log_loss"] < 0.4


def test_reversed_scores() -> None:
    m = compute_metrics(Y, PERFECT[::-1], threshold=0.5)
    assert m["roc_auc_score"] == 0.0
    assert m["accuracy_score"] == 0.0
    assert m["equal_error_rate"] == 1.0


def test_eer_interpolates_between_roc_points() -> None:
    # Reals 0.1 0.2 0.3 0.7, fakes 0.6 0.8. At t=0.7: FPR 1/4, FNR 1/2; at t=0.6: FPR 1/4, FNR 0.
    # FPR - FNR goes from -1/4 to +1/4, so it crosses halfway: EER 1/4, threshold 0.65.
    eer, threshold = equal_error_rate([0, 0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.7, 0.6, 0.8])
    assert eer == pytest.approx(0.25)
    assert threshold == pytest.approx(0.65)


def test_eer_on_a_roc_point() -> None:
    # At t=0.6 one real of two is flagged and one fake of two missed: FPR = FNR = 1/2.
    assert equal_error_rate([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9]) == pytest.approx((0.5, 0.6))


def test_confusion_matrix_orientation() -> None:
    # One real called fake (fp), two fakes caught (tp), one fake missed (fn), two reals right (tn).
    m = compute_metrics([0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.9, 0.8, 0.7, 0.3], threshold=0.5)
    assert m["confusion_matrix"] == {"labels": ["real", "fake"], "matrix": [[2, 1], [1, 2]]}
    m = compute_metrics([0, 1, 1, 1], [0.9, 0.8, 0.7, 0.6], threshold=0.5)
    assert m["confusion_matrix"]["matrix"] == [[0, 1], [0, 3]]
    assert m["classification_report"]["fake"]["precision"] == pytest.approx(0.75)
    assert m["classification_report"]["real"]["support"] == 1


def test_threshold_is_inclusive() -> None:
    m = compute_metrics([0, 1], [0.5, 0.5], threshold=0.5)
    assert m["confusion_matrix"]["matrix"] == [[0, 1], [0, 1]]


def test_per_group_auc_against_all_of_the_other_class() -> None:
    m = compute_metrics(GROUPED_Y, GROUPED_P, threshold=0.5, groups=GROUPS)
    groups = m["per_group"]
    assert list(groups) == ["easy", "hard", "real"]
    easy, hard, real = groups["easy"], groups["hard"], groups["real"]
    assert easy["label"] == hard["label"] == "fake" and real["label"] == "real"
    assert easy["roc_auc_score_vs_real"] == 1.0
    assert hard["roc_auc_score_vs_real"] == pytest.approx(5 / 8)
    assert m["roc_auc_score"] == pytest.approx(13 / 16)
    assert hard["accuracy_score"] == 0.0 and easy["accuracy_score"] == 1.0
    assert hard["mean_p_fake"] == pytest.approx(0.3)
    assert easy["n"] == 2 and real["n"] == 4
    assert real["roc_auc_score_vs_fake"] == pytest.approx(m["roc_auc_score"])
    assert real["roc_auc_score_vs_real"] is None and easy["roc_auc_score_vs_fake"] is None


def test_mixed_group() -> None:
    m = compute_metrics([0, 1, 1], [0.2, 0.7, 0.9], threshold=0.5, groups=["a", "a", "b"])
    assert m["per_group"]["a"]["label"] == "mixed"
    assert m["per_group"]["a"]["roc_auc_score_vs_real"] is None
    assert m["per_group"]["b"]["roc_auc_score_vs_real"] == 1.0


@pytest.mark.parametrize("label", [0, 1])
def test_one_class_gives_none_not_an_error(label: int) -> None:
    m = compute_metrics([label] * 3, [0.2, 0.6, 0.9], threshold=0.5, groups=["x", "x", "y"])
    for key in ("roc_auc_score", "average_precision_score", "equal_error_rate", "eer_threshold"):
        assert m[key] is None
    assert m["n"] == 3 and m["n_fake"] == 3 * label
    assert m["log_loss"] > 0
    assert m["per_group"]["x"]["roc_auc_score_vs_real"] is None
    assert m["per_group"]["x"]["roc_auc_score_vs_fake"] is None
    json.dumps(m, allow_nan=False)


def test_equal_error_rate_needs_both_classes() -> None:
    with pytest.raises(InvalidArgumentError, match="y_true"):
        equal_error_rate([1, 1], [0.3, 0.4])


@pytest.mark.parametrize(
    ("y_true", "p_fake", "kwargs", "name"),
    [
        ([0, 1], [0.5], {}, "same length"),
        ([], [], {}, "y_true"),
        ([0, 1], [0.5, 1.5], {}, "p_fake"),
        ([0, 1], [0.5, float("nan")], {}, "p_fake"),
        ([0, 1], [-0.1, 0.5], {}, "p_fake"),
        ([0, 2], [0.5, 0.5], {}, "y_true"),
        (["real", "fake"], [0.5, 0.5], {}, "y_true"),
        ([0, 1], ["a", "b"], {}, "p_fake"),
        ([0, 1], [0.5, 0.5], {"threshold": 2.0}, "threshold"),
        ([0, 1], [0.5, 0.5], {"groups": ["a"]}, "groups"),
    ],
)
def test_invalid_input(y_true: list, p_fake: list, kwargs: dict, name: str) -> None:
    with pytest.raises(InvalidArgumentError, match=name):
        compute_metrics(y_true, p_fake, **{"threshold": 0.5, **kwargs})


def test_invalid_message_shows_what_was_received() -> None:
    with pytest.raises(InvalidArgumentError, match=r"1\.5"):
        compute_metrics([0, 1], [0.5, 1.5], threshold=0.5)
    with pytest.raises(InvalidArgumentError, match=r"1 labels and 2 scores"):
        compute_metrics([0], [0.5, 0.5], threshold=0.5)


def test_result_is_plain_json() -> None:
    m = compute_metrics(np.array(GROUPED_Y), np.array(GROUPED_P, dtype=np.float32), np.float64(0.5), groups=GROUPS)
    text = json.dumps(m, allow_nan=False)
    assert json.loads(text) == m
    assert type(m["n"]) is int and type(m["roc_auc_score"]) is float
    assert set(m["classification_report"]) >= {"real", "fake", "macro avg", "weighted avg"}


def _assert_png(path) -> None:
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()


def test_plots_write_pngs(tmp_path) -> None:
    m = compute_metrics(GROUPED_Y, GROUPED_P, threshold=0.5)
    history = [
        {
            "epoch": 1,
            "train_loss": 0.7,
            "val_loss": 0.6,
            "train_accuracy": 0.5,
            "val_accuracy": 0.6,
            "val_roc_auc": 0.7,
        },
        {"epoch": 2, "train_loss": 0.5, "val_loss": None, "train_accuracy": 0.7},
        {"train_loss": 0.4},
    ]
    paths = [
        plot_training_curves(history, tmp_path / "curves.png"),
        plot_training_curves([{"epoch": 1}], tmp_path / "empty_curves.png"),
        plot_confusion_matrix(m, tmp_path / "cm.png"),
        plot_roc_curve(GROUPED_Y, GROUPED_P, tmp_path / "roc.png", eer=m["equal_error_rate"]),
        plot_roc_curve(GROUPED_Y, GROUPED_P, tmp_path / "roc_own_eer.png"),
        plot_precision_recall_curve(GROUPED_Y, GROUPED_P, tmp_path / "pr.png"),
        plot_score_histogram(GROUPED_Y, GROUPED_P, tmp_path / "sub" / "hist.png", threshold=0.5),
    ]
    for path in paths:
        _assert_png(path)


def test_plots_with_one_class(tmp_path) -> None:
    y, p = [1, 1, 1], [0.2, 0.6, 0.9]
    m = compute_metrics(y, p, threshold=0.5)
    for path in (
        plot_roc_curve(y, p, tmp_path / "roc.png"),
        plot_precision_recall_curve(y, p, tmp_path / "pr.png"),
        plot_score_histogram(y, p, tmp_path / "hist.png", threshold=0.5),
        plot_confusion_matrix(m, tmp_path / "cm.png"),
    ):
        _assert_png(path)


def test_report(tmp_path) -> None:
    as_is = compute_metrics(GROUPED_Y, GROUPED_P, threshold=0.5, groups=GROUPS)
    laundered = compute_metrics([1, 1], [0.4, 0.9], threshold=0.5, groups=["easy", "hard"])
    plot_roc_curve(GROUPED_Y, GROUPED_P, tmp_path / "roc.png")
    plots = {"ROC curve": "roc.png", "Score histogram": "score histogram.png", "Not made": None}
    path = write_report(
        tmp_path,
        [{"name": "as-is", "metrics": as_is}, {"name": "laundered", "metrics": laundered}],
        title="Evaluation of seed_cnn",
        model_summary={"arch": "seed_cnn", "bundle": tmp_path / "bundle", "threshold": 0.5},
        plots=plots,
    )
    assert path == tmp_path / "report.md"
    text = path.read_text(encoding="utf-8")
    assert "# Evaluation of seed_cnn" in text
    assert "## as-is" in text and "## laundered" in text
    for group in ("easy", "hard", "real"):
        assert f"| {group} |" in text
    assert "](roc.png)" in text and "](score%20histogram.png)" in text
    assert "Not made" not in text
    assert "| roc_auc_score | n/a |" in text  # the laundered set holds no reals
    assert f"| roc_auc_score | {as_is['roc_auc_score']:.4f} |" in text
    assert "| real | 4 | 0 |" in text  # confusion-matrix row: true real, 4 right, 0 called fake

    saved = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert saved["sections"][0]["metrics"] == as_is
    assert saved["model"]["bundle"] == str(tmp_path / "bundle")


def test_report_rejects_malformed_sections(tmp_path) -> None:
    with pytest.raises(InvalidArgumentError, match=r"sections\[0\]"):
        write_report(tmp_path, [{"metrics": {}}], title="t", model_summary={}, plots={})
