"""The decision rule: how a score becomes a label, and how the threshold is chosen.

Kept in one place so that train, evaluate, predict and every front end agree.
"""

from __future__ import annotations

import numpy as np

from .errors import InvalidArgumentError
from .results import LABEL_FAKE, LABEL_REAL, LABEL_UNCERTAIN

DEFAULT_THRESHOLD = 0.5


def is_fake(p_fake: np.ndarray | float, threshold: float) -> np.ndarray | bool:
    """The rule itself: fake when ``p_fake`` is at or above the threshold (works on arrays)."""
    return np.asarray(p_fake) >= threshold


def label_for(p_fake: float, threshold: float, band: float = 0.0) -> str:
    """``"fake"`` or ``"real"`` for one score; ``"uncertain"`` when it lies closer to the
    threshold than ``band``: a verdict a small change of the input could flip is not given."""
    if band > 0 and abs(p_fake - threshold) < band:
        return LABEL_UNCERTAIN
    return LABEL_FAKE if is_fake(p_fake, threshold) else LABEL_REAL


def check_band(band: float) -> float:
    """The uncertain band: a half-width in [0, 0.5)."""
    if isinstance(band, bool) or not isinstance(band, (int, float)) or not 0.0 <= band < 0.5:
        raise InvalidArgumentError(f"The uncertain band must be a number in [0, 0.5); got {band!r}.")
    return float(band)


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
