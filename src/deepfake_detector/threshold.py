"""The decision rule: how a score becomes a label, and how the threshold is chosen.

Kept in one place so that train, evaluate, predict and every front end agree.
"""

from __future__ import annotations

import numpy as np

from .results import LABEL_FAKE, LABEL_REAL

DEFAULT_THRESHOLD = 0.5


def label_for(p_fake: float, threshold: float) -> str:
    """``"fake"`` when ``p_fake`` is at or above the threshold, else ``"real"``."""
    return LABEL_FAKE if p_fake >= threshold else LABEL_REAL


def confidence_for(p_fake: float, threshold: float) -> float:
    """The probability of the label that :func:`label_for` chooses."""
    return p_fake if p_fake >= threshold else 1.0 - p_fake


def choose_threshold(y_true: np.ndarray, p_fake: np.ndarray) -> float:
    """The threshold that maximises balanced accuracy (Youden's J) on validation scores.

    Balanced accuracy rather than accuracy, so that class imbalance in the validation set
    does not push every verdict towards the larger class. Falls back to 0.5 when the
    validation data hold only one class. Ties go to the threshold nearest 0.5.
    """
    y_true = np.asarray(y_true).astype(int)
    p_fake = np.asarray(p_fake, dtype=float)
    if y_true.size == 0 or len(np.unique(y_true)) < 2:
        return DEFAULT_THRESHOLD
    candidates = np.unique(np.concatenate([p_fake, [DEFAULT_THRESHOLD]]))
    positives = y_true == 1
    best, best_score = DEFAULT_THRESHOLD, -np.inf
    for t in candidates:
        predicted = p_fake >= t
        tpr = predicted[positives].mean()
        tnr = (~predicted[~positives]).mean()
        score = tpr + tnr
        if score > best_score + 1e-12 or (abs(score - best_score) <= 1e-12 and abs(t - 0.5) < abs(best - 0.5)):
            best, best_score = float(t), score
    return best
