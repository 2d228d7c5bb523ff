"""Building an ensemble: member bundles and validation data in, an ensemble folder out.

Each member scores the validation data as its own Detector would (same faces, its own
preprocessing). The combination is then fitted on those scores: nothing to fit for
``"mean"``; for ``"logistic"``, scikit-learn's ``LogisticRegression`` on each member's
clipped logit (see :mod:`deepfake_detector.ensemble`), which weighs the members by how
much each adds and calibrates the result. The threshold is chosen on the combined scores
by the rule training uses, and the validation metrics are stored beside each member's own.

The validation data must not be the test data: the numbers in ``ensemble.json`` are
fitted on them, as a bundle's threshold is. The combination is fitted on image scores;
the Detector combines each face crop's scores before taking an image's maximum over its
faces, so the two agree exactly when each image is judged on one input (whole images,
face crops scored as they are with ``faces="off"``, or one face per image).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from .bundle import read_config
from .data.dataset import load_dataset
from .detector import Detector
from .ensemble import (
    COMBINE_MODES,
    ENSEMBLE_FILE,
    LOGIT_EPS,
    EnsembleConfig,
    check_ensemble_dir,
    check_members,
    clipped_logit,
    is_ensemble,
    save_ensemble,
)
from .errors import BundleError, DatasetError, InvalidArgumentError
from .evaluation import score_each
from .metrics import compute_metrics
from .threshold import choose_threshold

LOGISTIC_C = 1.0  # scikit-learn's default L2 strength: keeps weights sane on small validation sets
MEMBER_METRICS = ("roc_auc_score", "average_precision_score", "balanced_accuracy_score", "log_loss")


def _log(message: str, progress: bool) -> None:
    if progress:
        tqdm.write(message, file=sys.stderr)


def _member_names(sources: Sequence[Path]) -> list[str]:
    """A folder name inside the ensemble for each member: its own folder's name, numbered when taken."""
    names: list[str] = []
    for source in sources:
        base = source.resolve().name or "member"
        name, k = base, 2
        while name in names or name == ENSEMBLE_FILE:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def fit_combination(combine: str, y_true: np.ndarray, member_p_fake: np.ndarray) -> dict[str, Any]:
    """The fitted parameters of a combination rule, as ``EnsembleConfig`` keywords.

    ``member_p_fake`` is ``members x samples``. ``"mean"`` has none; ``"logistic"`` gets
    ``coefficients`` (one per member) and ``intercept`` from a logistic regression of the
    labels on the members' clipped logits.
    """
    if combine not in COMBINE_MODES:
        raise InvalidArgumentError(f"The 'combine' parameter must be one of {COMBINE_MODES}; got {combine!r}.")
    if combine == "mean":
        return {}
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=LOGISTIC_C, max_iter=1000).fit(clipped_logit(member_p_fake).T, y_true)
    return {"coefficients": [float(c) for c in model.coef_[0]], "intercept": float(model.intercept_[0])}


def build_ensemble(
    bundles: Sequence[str | Path],
    val_data: str | Path,
    out_dir: str | Path,
    *,
    combine: str = "mean",
    faces: str = "auto",
    uncertain: dict[str, Any] | None = None,
    batch_size: int = 32,
    workers: int | None = None,
    device: str = "auto",
    progress: bool = True,
) -> Path:
    """Combine member ``bundles`` into an ensemble fitted on ``val_data`` (a real/fake folder
    or a CSV manifest) and write it to ``out_dir``; returns the ensemble's path.

    ``faces`` is the Detector's face mode for scoring the validation data (``"off"`` for a
    folder of face crops made by ``crop-faces``). ``uncertain`` is the ensemble's uncertain
    rule (default: no band, no re-encoding check, as a freshly trained bundle has).
    Samples that some member cannot score are left out of the fit and reported on stderr.
    """
    if combine not in COMBINE_MODES:
        raise InvalidArgumentError(f"The 'combine' parameter must be one of {COMBINE_MODES}; got {combine!r}.")
    sources = [Path(b) for b in bundles]
    if not sources:
        raise InvalidArgumentError("An ensemble needs at least one member bundle; got none.")
    for source in sources:
        if is_ensemble(source):
            raise BundleError(f"{source}: is an ensemble; the members of an ensemble must be bundles.")
    configs = [read_config(source) for source in sources]
    check_members([(str(s), c) for s, c in zip(sources, configs)], "ensemble members")
    names = _member_names(sources)
    out = check_ensemble_dir(out_dir)  # refuse a bad output folder before the long part
    samples = load_dataset(val_data)

    rows, errors = [], []
    for i, (name, source) in enumerate(zip(names, sources), start=1):
        _log(f"Member {i}/{len(sources)} ({name}): scoring {len(samples)} validation images with {source}", progress)
        p, failed = score_each(
            Detector.load(source, device=device),
            samples,
            batch_size=batch_size,
            workers=workers,
            progress=progress,
            desc=name,
            faces=faces,
        )
        rows.append(p)
        errors.extend(failed)
    for message in dict.fromkeys(errors):
        print(f"warning: not scored: {message}", file=sys.stderr)
    member_p = np.stack(rows)
    scored = ~np.isnan(member_p).any(axis=0)
    y = np.asarray([s.target for s in samples], int)[scored]
    member_p = member_p[:, scored]
    n_fake = int(y.sum())
    if n_fake in (0, len(y)):
        raise DatasetError(
            f"{val_data}: an ensemble is fitted on validation data with both classes; "
            f"{len(y) - n_fake} real and {n_fake} fake image(s) could be scored by every member."
        )

    fitted = EnsembleConfig(members=names, combine=combine, **fit_combination(combine, y, member_p))
    p = fitted.combine_scores(member_p)
    threshold = choose_threshold(y, p)
    groups = [s.group for s, ok in zip(samples, scored) if ok]
    metrics = {
        "validation": compute_metrics(y, p, threshold, groups),
        "members": {
            name: {k: v for k, v in compute_metrics(y, row, c.threshold).items() if k in MEMBER_METRICS}
            for name, row, c in zip(names, member_p, configs)
        },
    }
    from . import __version__

    training = {
        "val_data": str(val_data),
        "n_val": len(samples),
        "n_scored": int(scored.sum()),
        "faces": faces,
        "fit": "mean of the members' p_fake"
        if combine == "mean"
        else f"scikit-learn LogisticRegression(C={LOGISTIC_C:g}) on each member's logit(p_fake), "
        f"p_fake clipped to [{LOGIT_EPS:g}, 1 - {LOGIT_EPS:g}]",
        "members": [
            {"name": name, "source": str(source), "arch": c.arch, "data": c.training.get("data")}
            for name, source, c in zip(names, sources, configs)
        ],
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "package_version": __version__,
    }
    config = replace(
        fitted,
        threshold=threshold,
        uncertain=uncertain if uncertain is not None else {"band": 0.0},
        name=out.name,
        training=training,
        metrics=metrics,
    )
    save_ensemble(out, config, sources)
    members_auc = ", ".join(f"{n} {config.metrics['members'][n]['roc_auc_score']:.4f}" for n in names)
    _log(
        f"Saved {out}: {len(names)} member(s) combined by {combine}, validation ROC AUC "
        f"{config.metrics['validation']['roc_auc_score']:.4f} (members: {members_auc}), "
        f"threshold {config.threshold:.4f}.",
        progress,
    )
    return out
