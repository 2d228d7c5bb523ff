"""The decision rule: how a score becomes a label, and how the threshold is chosen.

Kept in one place so that train, evaluate, predict and every front end agree.
"""

from __future__ import annotations

import numpy as np

from .results import LABEL_FAKE, LABEL_REAL

DEFAULT_THRESHOLD = 0.5


def is_fake(p_fake: np.ndarray | float, threshold: float) -> np.ndarray | bool:
    """The rule itself: fake when ``p_fake`` is at or above the threshold (works on arrays)."""
    return np.asarray(p_fake) >= threshold


def label_for(p_fake: float, threshold: float) -> str:
    """``"fake"`` or ``"real"`` for one score."""
    return LABEL_FAKE if is_fake(p_fake, threshold) else LABEL_REAL


def confidence_for(p_fake: float, threshold: float) -> float:
    """The probability of the label that :func:`label_for` chooses."""
    return p_fake if is_fake(p_fake, threshold) else 1.0 - p_fake


def choose_threshold(y_true: np.ndarray, p_fake: np.ndarray) -> float:
    """The threshold that maximises balanced accuracy (Youden's J) on validation scores.

    Balanced accuracy rather than accuracy, so that class imbalance in the validation set
    does not push every verdict towards the larger class. The threshold sits midway
    between the two neighbouring scores it separates, so rounding cannot move a
    validation image across it. Among equally good thresholds the one nearest 0.5 wins.
    Falls back to 0.5 when the validation data hold only one class.
    """
    from sklearn.metrics import roc_curve

    y_true = np.asarray(y_true).astype(int)
    p_fake = np.asarray(p_fake, dtype=float)
    if y_true.size == 0 or len(np.unique(y_true)) < 2:
        return DEFAULT_THRESHOLD
    fpr, tpr, cuts = roc_curve(y_true, p_fake, drop_intermediate=False)
    # cuts[0] is +inf (nothing called fake); cuts[i] is the i-th highest distinct score.
    below = np.append(cuts[1:], 0.0)
    midpoints = np.where(np.isinf(cuts), 1.0, (np.minimum(cuts, 1.0) + below) / 2.0)
    j = tpr - fpr
    best = np.flatnonzero(j >= j.max() - 1e-12)
    return float(midpoints[best[np.argmin(np.abs(midpoints[best] - DEFAULT_THRESHOLD))]])
