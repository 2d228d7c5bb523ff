"""The decision rule: how a score becomes a label, and how the threshold is chosen.

Kept in one place so that train, evaluate, predict and every front end agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .checks import is_finite, is_whole
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


@dataclass(frozen=True)
class Reencode:
    """The re-encoded copies a verdict must survive: JPEG at each quality, and a down-scale
    by each factor then back up. A verdict that one of them flips is too fragile to give."""

    jpeg_qualities: tuple[int, ...] = (75, 95)
    scales: tuple[float, ...] = (0.5, 0.75)

    @property
    def names(self) -> list[str]:
        """One name per copy, in the order copies are made: what a note says flipped."""
        return [f"JPEG q{q}" for q in self.jpeg_qualities] + [f"rescale {s:g}x" for s in self.scales]


def check_reencode(spec: Any) -> Reencode | None:
    """The bundle's ``uncertain.reencode``: ``None`` (off) or an object with ``jpeg_qualities``
    (integers 1..100) and ``scales`` (numbers in (0, 1]); a missing key makes no copy of that kind."""
    if spec is None:
        return None
    if not isinstance(spec, dict) or set(spec) - {"jpeg_qualities", "scales"}:
        raise InvalidArgumentError(
            f"reencode must be null or an object with 'jpeg_qualities' and 'scales'; got {spec!r}."
        )
    qualities, scales = spec.get("jpeg_qualities", []), spec.get("scales", [])
    if not isinstance(qualities, list) or not all(is_whole(q) and 1 <= q <= 100 for q in qualities):
        raise InvalidArgumentError(f"reencode jpeg_qualities must be a list of integers 1..100; got {qualities!r}.")
    if not isinstance(scales, list) or not all(is_finite(s) and 0 < s <= 1 for s in scales):
        raise InvalidArgumentError(f"reencode scales must be a list of numbers in (0, 1]; got {scales!r}.")
    if not qualities and not scales:
        raise InvalidArgumentError("reencode must name at least one copy (jpeg_qualities or scales); use null for off.")
    return Reencode(tuple(int(q) for q in qualities), tuple(float(s) for s in scales))


def check_uncertain(rule: Any) -> Reencode | None:
    """A bundle's (or ensemble's) whole ``uncertain`` rule: an object with a ``band`` (see
    :func:`check_band`) and a ``reencode`` spec (see :func:`check_reencode`); returns the latter."""
    if not isinstance(rule, dict):
        raise InvalidArgumentError(f"uncertain must be an object with 'band' and 'reencode'; got {rule!r}.")
    check_band(rule.get("band", 0.0))
    return check_reencode(rule.get("reencode"))


def label_under_copies(
    p_fake: float, copies_p_fake: Sequence[float], names: Sequence[str], threshold: float, band: float = 0.0
) -> tuple[str, list[str]]:
    """The label of one score given its re-encoded copies' scores, and the names of the
    copies whose label differs: a verdict some copy does not share is ``"uncertain"``, as
    an upload's re-encoding could flip it. One already uncertain has no verdict to flip."""
    label = label_for(p_fake, threshold, band)
    if label == LABEL_UNCERTAIN:
        return label, []
    flips = [name for name, p in zip(names, copies_p_fake) if label_for(float(p), threshold, band) != label]
    return (LABEL_UNCERTAIN if flips else label), flips


def confidence_for(p_fake: float, threshold: float) -> float:
    """How firmly ``p_fake`` sits on its side of the threshold, from 0.5 (at the threshold)
    to 1 (p_fake 0 for a real verdict, 1 for a fake one), linear on each side.

    At threshold 0.5 this is the probability of the chosen label, the prototype's
    "Confidence". A calibrated threshold elsewhere (0.84, say) would make that probability
    fall under 50 % for real verdicts with p_fake between 0.5 and the threshold; measured
    from the threshold instead, a verdict's confidence is never under 50 %, and grows as the
    score moves away from where the verdict would flip.
    """
    if is_fake(p_fake, threshold):
        return 1.0 if threshold >= 1.0 else 0.5 + 0.5 * (p_fake - threshold) / (1.0 - threshold)
    return 0.5 + 0.5 * (threshold - p_fake) / threshold


def check_max_fpr(max_fpr: Any) -> float | None:
    """The bound on the share of validation reals called fake: ``None`` (no bound) or a number
    in [0, 1]; checked by type too, as a recipe can hold any TOML value."""
    if max_fpr is not None and (not is_finite(max_fpr) or not 0.0 <= max_fpr <= 1.0):
        raise InvalidArgumentError(f"max_fpr must be a number in [0, 1]; got {max_fpr!r}.")
    return None if max_fpr is None else float(max_fpr)


def check_uncertain_share(share: Any) -> float:
    """The share of validation scores the uncertain band holds: a number in [0, 1), since a band
    holding every score would leave no verdict."""
    if not is_finite(share) or not 0.0 <= share < 1.0:
        raise InvalidArgumentError(f"uncertain_share must be a number in [0, 1); got {share!r}.")
    return float(share)


def choose_threshold(y_true: np.ndarray, p_fake: np.ndarray, max_fpr: float | None = None) -> float:
    """The threshold that maximises balanced accuracy (Youden's J) on validation scores.

    Balanced accuracy rather than accuracy, so that class imbalance in the validation set
    does not push every verdict towards the larger class. With ``max_fpr``, only thresholds
    that call at most that share of validation reals fake are candidates: a tool whose
    false alarms land on real people's photos should bound them first. The threshold sits
    midway between the two neighbouring scores it separates, so rounding cannot move a
    validation image across it. Among equally good thresholds the one nearest 0.5 wins.
    Falls back to 0.5 when the validation data hold only one class.
    """
    max_fpr = check_max_fpr(max_fpr)
    from sklearn.metrics import roc_curve

    y_true = np.asarray(y_true).astype(int)
    p_fake = np.asarray(p_fake, dtype=float)
    if y_true.size == 0 or len(np.unique(y_true)) < 2:
        return DEFAULT_THRESHOLD
    fpr, tpr, cuts = roc_curve(y_true, p_fake, drop_intermediate=False)
    # cuts[0] is +inf (nothing called fake); cuts[i] is the i-th highest distinct score.
    below = np.append(cuts[1:], 0.0)
    midpoints = np.where(np.isinf(cuts), 1.0, (np.minimum(cuts, 1.0) + below) / 2.0)
    j = np.where(fpr <= max_fpr + 1e-12, tpr - fpr, -np.inf) if max_fpr is not None else tpr - fpr
    best = np.flatnonzero(j >= j.max() - 1e-12)
    return float(midpoints[best[np.argmin(np.abs(midpoints[best] - DEFAULT_THRESHOLD))]])


def choose_band(p_fake: np.ndarray, threshold: float, share: float) -> float:
    """The uncertain band's half-width that holds ``share`` of the validation scores: the
    verdicts nearest the threshold, where validation errors crowd, are reported as uncertain.
    Capped below 0.5, the widest band :func:`check_band` accepts."""
    share = check_uncertain_share(share)
    distances = np.abs(np.asarray(p_fake, dtype=float) - threshold)
    if share == 0.0 or distances.size == 0:
        return 0.0
    return float(min(np.quantile(distances, share), 0.499))
