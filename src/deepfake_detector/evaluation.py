"""Evaluation: a bundle and a labelled data set in, metrics, plots and ``report.md`` out.

With ``launder=True`` the same images are also scored after being shrunk to at most
512 px and re-saved as JPEG quality 80, both classes alike: a model that learnt a format
or size shortcut instead of the manipulation loses its score there.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .data.dataset import Sample, load_dataset, scan_folder
from .detector import Detector
from .errors import DatasetError
from .media.files import make_folder
from .media.image import launder as launder_image
from .media.image import load_image
from .metrics import compute_metrics
from .plots import (
    plot_confusion_matrix,
    plot_precision_recall_curve,
    plot_roc_curve,
    plot_score_histogram,
    plot_training_curves,
)
from .report import write_report

LAUNDER_MAX_SIDE = 512
LAUNDER_QUALITY = 80


def _laundered(path: Any) -> np.ndarray:
    return launder_image(load_image(path), max_side=LAUNDER_MAX_SIDE, quality=LAUNDER_QUALITY)


def score_each(
    detector: Detector,
    samples: list[Sample],
    *,
    launder: bool = False,
    batch_size: int = 32,
    workers: int | None = None,
    progress: bool = True,
    desc: str = "scoring",
    faces: str = "auto",
) -> tuple[np.ndarray, list[str]]:
    """``(p_fake, errors)``: one score per sample, in sample order, NaN for a sample with no
    verdict, so that several detectors' scores of the same samples line up.

    ``errors`` lists why those got none: unreadable files, and inputs with nothing to
    judge (for example only faces too small), each as ``"<path>: <reason>"``.
    """
    loader = _laundered if launder else None  # None: the Detector's own decoding
    p = np.full(len(samples), np.nan)
    errors = []
    results = detector.predict_many(
        (s.path for s in samples),
        batch_size=batch_size,
        workers=workers,
        loader=loader,
        faces=faces,
        reencode_check=False,  # metrics use p_fake only: the re-encoded copies would be work for nothing
    )
    for i, (sample, pred) in enumerate(
        tqdm(zip(samples, results), total=len(samples), desc=desc, disable=not progress, file=sys.stderr, leave=False)
    ):
        if pred.ok and pred.p_fake is not None:
            p[i] = pred.p_fake
        else:
            errors.append(pred.error or f"{sample.path}: no verdict ({pred.note})")
    return p, errors


def score_samples(
    detector: Detector,
    samples: list[Sample],
    *,
    launder: bool = False,
    batch_size: int = 32,
    workers: int | None = None,
    progress: bool = True,
    desc: str = "scoring",
    faces: str = "auto",
) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """``(y_true, p_fake, groups, errors)`` over the samples that got a verdict; ``errors``
    as in :func:`score_each`."""
    p, errors = score_each(
        detector,
        samples,
        launder=launder,
        batch_size=batch_size,
        workers=workers,
        progress=progress,
        desc=desc,
        faces=faces,
    )
    scored = ~np.isnan(p)
    y = np.asarray([s.target for s in samples], int)
    groups = [s.group for s, ok in zip(samples, scored) if ok]
    return y[scored], p[scored], groups, errors


def evaluate(
    model: str | Path | Detector,
    data: str | Path,
    out_dir: str | Path,
    *,
    launder: bool = False,
    threshold: float | None = None,
    batch_size: int = 32,
    workers: int | None = None,
    progress: bool = True,
    faces: str = "auto",
) -> dict[str, Any]:
    """Score ``data`` with ``model`` and write metrics, plots and ``report.md`` to ``out_dir``.

    ``faces`` is the Detector's face mode: for a face-crop bundle evaluated on a folder of
    crops made by ``crop-faces``, ``"off"`` scores each crop as it is, as validation did.

    Returns ``{"sections": [...], "model": {...}, "report": path}``; each section holds the
    metrics of one variant of the data ("as-is", and "laundered" when asked).
    """
    detector = model if isinstance(model, Detector) else Detector.load(model)
    t = detector.threshold if threshold is None else threshold
    samples = load_dataset(data)
    if Path(data).is_dir():
        videos = len(scan_folder(data, videos=True)) - len(samples)
        if videos:
            print(
                f"warning: {data}: {videos} video(s) under its real/fake folders are not evaluated "
                "(evaluate judges images; predict and benchmarks/video.py judge videos).",
                file=sys.stderr,
            )
    out = make_folder(out_dir, "the report's folder (--out)")

    variants = [("as-is", False)] + ([("laundered", True)] if launder else [])
    sections: list[dict[str, Any]] = []
    plots: dict[str, str | None] = {}
    history = detector.config.training.get("history")
    if history:
        plots["Training loss and accuracy"] = plot_training_curves(history, out / "training_curves.png").name
    for name, do_launder in variants:
        y, p, groups, errors = score_samples(
            detector,
            samples,
            launder=do_launder,
            batch_size=batch_size,
            workers=workers,
            progress=progress,
            desc=name,
            faces=faces,
        )
        for message in errors:
            print(f"warning: not scored: {message}", file=sys.stderr)
        if len(y) == 0:
            raise DatasetError(f"{data}: none of the {len(samples)} images could be scored.")
        metrics = compute_metrics(y, p, t, groups)
        metrics["n_failed"] = len(errors)
        sections.append({"name": name, "metrics": metrics, "errors": errors})
        slug = name.replace(" ", "_").replace("-", "_")
        plots[f"Confusion matrix ({name})"] = plot_confusion_matrix(metrics, out / f"confusion_matrix_{slug}.png").name
        plots[f"ROC curve ({name})"] = plot_roc_curve(
            y, p, out / f"roc_curve_{slug}.png", eer=metrics["equal_error_rate"]
        ).name
        plots[f"Precision-recall curve ({name})"] = plot_precision_recall_curve(y, p, out / f"pr_curve_{slug}.png").name
        plots[f"Score histogram ({name})"] = plot_score_histogram(y, p, out / f"score_histogram_{slug}.png", t).name
    model_summary = {**detector.summary(), "threshold": t, "evaluated_on": str(data), "n_images": len(samples)}
    report = write_report(
        out, sections, title=f"Evaluation of {detector.name}", model_summary=model_summary, plots=plots
    )
    return {"sections": sections, "model": model_summary, "report": str(report)}
