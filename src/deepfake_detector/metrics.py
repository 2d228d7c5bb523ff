"""How well a detector separates real from fake, as one JSON-ready dict.

Every score is ``p_fake`` and fake is the positive class (``y_true == 1``). Names follow
scikit-learn: truth first, ``*_score`` is higher-is-better, ``*_error``/``*_loss`` is
lower-is-better. Metrics that need both classes are ``None`` when only one is present, so
that evaluating a folder of only fakes (a common forensic case) never fails. No torch or
matplotlib here, so light front ends can import it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import PurePath
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    classification_report,
    confusion_matrix,
    log_loss,
    roc_auc_score,
    roc_curve,
)

from .errors import InvalidArgumentError
from .results import LABEL_FAKE, LABEL_REAL, LABELS
from .threshold import is_fake

MIXED = "mixed"

# Scores come from float32 sigmoids, which cannot tell 1 - 1e-7 from 1; clipping there keeps
# one overconfident mistake from dominating the mean loss with an arbitrary, huge value.
_LOG_LOSS_EPS = 1e-7


def validate_scores(y_true: ArrayLike, p_fake: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Check and convert ``(y_true, p_fake)`` once, so every metric and plot sees the same data.

    Returns ``y_true`` as an int array of 0/1 and ``p_fake`` as a float array in [0, 1];
    anything else raises :class:`InvalidArgumentError` naming the parameter.
    """
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise InvalidArgumentError(f"y_true must be one-dimensional; got shape {y.shape}.")
    if y.size == 0:
        raise InvalidArgumentError("y_true must not be empty; got 0 samples.")
    if y.dtype.kind not in "biuf" or not np.isin(y, (0, 1)).all():
        bad = [v for v in dict.fromkeys(y.tolist()) if not (isinstance(v, (int, float)) and v in (0, 1))]
        raise InvalidArgumentError(
            f"y_true must hold only 0 (real) and 1 (fake); got {len(bad)} other value(s), e.g. {bad[:5]!r}."
        )
    try:
        p = np.asarray(p_fake, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"p_fake must be numbers in [0, 1]; got {exc}.") from None
    if p.ndim != 1:
        raise InvalidArgumentError(f"p_fake must be one-dimensional; got shape {p.shape}.")
    if p.size != y.size:
        raise InvalidArgumentError(
            f"y_true and p_fake must have the same length; got {y.size} labels and {p.size} scores."
        )
    outside = p[~((p >= 0.0) & (p <= 1.0))]  # NaN fails both comparisons, so it lands here too
    if outside.size:
        raise InvalidArgumentError(
            f"p_fake must lie in [0, 1] with no NaN; got {outside.size} value(s) outside, "
            f"e.g. {outside[:5].tolist()!r}."
        )
    return y.astype(int), p


def equal_error_rate(y_true: ArrayLike, p_fake: ArrayLike) -> tuple[float, float]:
    """The error rate where false positives equal false negatives, and the threshold giving it.

    A single operating-point-free number that forensic papers report next to AUC. FPR and
    FNR are interpolated linearly between the two ROC points where they cross, so small test
    sets do not snap to a ROC corner. Needs both classes; raises otherwise.
    """
    y, p = validate_scores(y_true, p_fake)
    if np.unique(y).size < 2:
        raise InvalidArgumentError(
            f"equal_error_rate needs both classes in y_true; got only {LABELS[int(y[0])]!r} samples."
        )
    fpr, tpr, thresholds = roc_curve(y, p, pos_label=1, drop_intermediate=False)
    # The first ROC point has threshold +inf (nothing flagged); 1.0 is the highest usable one.
    thresholds = np.minimum(thresholds, 1.0)
    gap = fpr - (1.0 - tpr)  # FPR - FNR: -1 at the first point, rises to +1 at the last
    i = int(np.argmax(gap >= 0.0))
    if gap[i] == 0.0:
        return float(fpr[i]), float(thresholds[i])
    w = -gap[i - 1] / (gap[i] - gap[i - 1])
    eer = fpr[i - 1] + w * (fpr[i] - fpr[i - 1])
    threshold = thresholds[i - 1] + w * (thresholds[i] - thresholds[i - 1])
    return float(eer), float(threshold)


def json_ready(value: Any) -> Any:
    """``value`` with numpy types made plain and NaN/inf made ``None``, so strict JSON accepts it."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, PurePath):
        return str(value)
    raise InvalidArgumentError(f"Cannot store a {type(value).__name__} in JSON; got {value!r}.")


def _auc_or_none(y: np.ndarray, p: np.ndarray) -> float | None:
    """ROC AUC, or ``None`` where it is undefined (fewer than two classes)."""
    return float(roc_auc_score(y, p)) if np.unique(y).size == 2 else None


def _per_group(y: np.ndarray, p: np.ndarray, y_pred: np.ndarray, groups: np.ndarray) -> dict[str, dict]:
    """One entry per group; pure groups are scored against every sample of the other class.

    A group holding both classes (one data set of several) also gets its own ROC AUC.

    Scoring, say, only one manipulation method's fakes against all reals is how methods
    are compared in the field: it says which fakes the detector misses, independent of how
    many of each the test set happens to hold.
    """
    real, fake = p[y == 0], p[y == 1]
    out: dict[str, dict] = {}
    for name in sorted(set(groups.tolist())):
        member = groups == name
        gy, gp = y[member], p[member]
        classes = np.unique(gy)
        label = LABELS[int(classes[0])] if classes.size == 1 else MIXED
        vs_real = vs_fake = None
        if label == LABEL_FAKE and real.size:
            vs_real = _auc_or_none(np.r_[np.zeros(real.size), np.ones(gp.size)], np.r_[real, gp])
        if label == LABEL_REAL and fake.size:
            vs_fake = _auc_or_none(np.r_[np.zeros(gp.size), np.ones(fake.size)], np.r_[gp, fake])
        out[name] = {
            "n": int(member.sum()),
            "label": label,
            "accuracy_score": float(accuracy_score(gy, y_pred[member])),
            "mean_p_fake": float(gp.mean()),
            "roc_auc_score": _auc_or_none(gy, gp),
            "roc_auc_score_vs_real": vs_real,
            "roc_auc_score_vs_fake": vs_fake,
        }
    return out


def compute_metrics(
    y_true: ArrayLike,
    p_fake: ArrayLike,
    threshold: float,
    groups: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Every number an evaluation reports, as a JSON-ready dict (see the module docstring).

    ``threshold`` is the decision rule of :func:`deepfake_detector.threshold.label_for`;
    the threshold-free metrics (AUC, AP, EER, log loss) ignore it. ``groups`` names each
    sample's source (a manipulation method, a data set) to get a ``per_group`` breakdown.
    """
    y, p = validate_scores(y_true, p_fake)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating, np.integer)):
        raise InvalidArgumentError(f"threshold must be a number in [0, 1]; got {threshold!r}.")
    if not 0.0 <= threshold <= 1.0:  # also rejects NaN
        raise InvalidArgumentError(f"threshold must be a number in [0, 1]; got {threshold!r}.")
    group_array = None
    if groups is not None:
        group_array = np.asarray(groups, dtype=object)
        if group_array.ndim != 1 or group_array.size != y.size:
            raise InvalidArgumentError(
                f"groups must give one name per sample; got {group_array.size} names for {y.size} samples."
            )
        not_str = [g for g in group_array.tolist() if not isinstance(g, str)]
        if not_str:
            raise InvalidArgumentError(f"groups must be strings; got {not_str[:5]!r}.")

    y_pred = is_fake(p, threshold).astype(int)
    both = np.unique(y).size == 2
    eer, eer_threshold = equal_error_rate(y, p) if both else (None, None)
    with warnings.catch_warnings():
        # With one class, balanced accuracy is that class's recall; sklearn says so in a warning.
        warnings.simplefilter("ignore", UserWarning)
        balanced = balanced_accuracy_score(y, y_pred)
    metrics = {
        "n": int(y.size),
        "n_real": int((y == 0).sum()),
        "n_fake": int((y == 1).sum()),
        "threshold": float(threshold),
        "accuracy_score": accuracy_score(y, y_pred),
        "balanced_accuracy_score": balanced,
        "roc_auc_score": _auc_or_none(y, p),
        "average_precision_score": average_precision_score(y, p, pos_label=1) if both else None,
        "equal_error_rate": eer,
        "eer_threshold": eer_threshold,
        "log_loss": log_loss(y, np.clip(p, _LOG_LOSS_EPS, 1.0 - _LOG_LOSS_EPS), labels=[0, 1]),
        "confusion_matrix": {
            "labels": list(LABELS),
            "matrix": confusion_matrix(y, y_pred, labels=[0, 1]),
        },
        "classification_report": classification_report(
            y, y_pred, labels=[0, 1], target_names=list(LABELS), output_dict=True, zero_division=0
        ),
        "per_group": _per_group(y, p, y_pred, group_array) if group_array is not None else None,
    }
    return json_ready(metrics)
