"""The figures of a training run and an evaluation, each written to one PNG.

Figures are built from :class:`matplotlib.figure.Figure` directly, never through pyplot,
so no global figure state or GUI backend is touched (safe in servers and worker threads)
and nothing stays open after a function returns. Curves that need both classes say in the
picture that they are undefined rather than raising, so a one-class evaluation still
produces its full set of files.
"""

from __future__ import annotations

import math
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from numpy.typing import ArrayLike
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from .metrics import equal_error_rate, validate_scores
from .results import LABEL_FAKE, LABEL_REAL, LABELS, WHOLE_FRAME_TRACK, VideoResult

_DPI = 120
_FIGSIZE = (6.0, 4.5)
_COLORS = {LABEL_REAL: "tab:blue", LABEL_FAKE: "tab:red"}


def _save(fig: Figure, path: str | PathLike[str]) -> Path:
    """Write ``fig`` as PNG, creating the folder, and return the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=_DPI)
    return out


def _say_undefined(ax: Axes, message: str) -> None:
    """Put ``message`` where the curve would be."""
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _one_class_message(y: np.ndarray, curve: str) -> str | None:
    """Why ``curve`` cannot be drawn, or ``None`` when both classes are present."""
    if np.unique(y).size == 2:
        return None
    return f"{curve} undefined:\nonly {LABELS[int(y[0])]!r} samples present"


def _series(history: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of ``key``, skipping rows where it is missing, None or NaN."""
    xs, ys = [], []
    for i, row in enumerate(history):
        value = row.get(key)
        if value is None or not math.isfinite(value):
            continue
        epoch = row.get("epoch")
        xs.append(float(epoch) if epoch is not None else float(i + 1))
        ys.append(float(value))
    return xs, ys


def _plot_panel(ax: Axes, history: list[dict[str, Any]], keys: tuple[str, ...], ylabel: str) -> None:
    """Draw each of ``keys`` that has data; say so when none has."""
    drawn = False
    for key in keys:
        xs, ys = _series(history, key)
        if xs:
            ax.plot(xs, ys, marker="o", markersize=3, label=key)
            drawn = True
    if not drawn:
        _say_undefined(ax, f"no {ylabel.lower()} recorded")
        return
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()


def plot_training_curves(history: list[dict[str, Any]], path: str | PathLike[str]) -> Path:
    """Loss and accuracy (with validation AUC) per epoch, to spot over- and under-fitting.

    Rows may lack any key or hold ``None`` (a run without validation, a resumed run).
    """
    fig = Figure(figsize=(11.0, 4.5))
    loss_ax, acc_ax = fig.subplots(1, 2)
    _plot_panel(loss_ax, history, ("train_loss", "val_loss"), "Loss")
    loss_ax.set_title("Loss")
    _plot_panel(acc_ax, history, ("train_accuracy", "val_accuracy", "val_roc_auc"), "Score")
    acc_ax.set_title("Accuracy and validation ROC AUC")
    fig.tight_layout()
    return _save(fig, path)


def plot_confusion_matrix(metrics: dict[str, Any], path: str | PathLike[str]) -> Path:
    """The confusion matrix of :func:`~deepfake_detector.metrics.compute_metrics`, counts in cells.

    Each cell also shows its share of the true class, which is what to read when the
    classes are imbalanced.
    """
    cm = metrics["confusion_matrix"]
    matrix = np.asarray(cm["matrix"], dtype=int)
    labels = cm["labels"]
    row_totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, row_totals, out=np.zeros(matrix.shape), where=row_totals > 0)

    fig = Figure(figsize=(5.0, 4.5))
    ax = fig.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, label="share of true class")
    for (row, col), count in np.ndenumerate(matrix):
        color = "white" if shares[row, col] > 0.5 else "black"
        ax.text(col, row, f"{count}\n({shares[row, col]:.1%})", ha="center", va="center", color=color)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Confusion matrix (threshold {metrics.get('threshold', float('nan')):.4f})")
    fig.tight_layout()
    return _save(fig, path)


def plot_roc_curve(y_true: ArrayLike, p_fake: ArrayLike, path: str | PathLike[str], eer: float | None = None) -> Path:
    """The ROC curve (fake is positive) with its AUC and the equal-error point.

    ``eer`` is the value from ``compute_metrics`` when at hand; otherwise it is computed.
    """
    y, p = validate_scores(y_true, p_fake)
    fig = Figure(figsize=_FIGSIZE)
    ax = fig.subplots()
    undefined = _one_class_message(y, "ROC curve")
    if undefined:
        _say_undefined(ax, undefined)
    else:
        fpr, tpr, _ = roc_curve(y, p, pos_label=1)
        if eer is None:
            eer, _ = equal_error_rate(y, p)
        ax.plot(fpr, tpr, color=_COLORS[LABEL_FAKE], label=f"ROC (AUC = {roc_auc_score(y, p):.4f})")
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="chance")
        ax.plot([eer], [1.0 - eer], "ko", label=f"EER = {eer:.4f}")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_xlabel("false positive rate (reals called fake)")
        ax.set_ylabel("true positive rate (fakes caught)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    ax.set_title("ROC curve")
    fig.tight_layout()
    return _save(fig, path)


def plot_precision_recall_curve(y_true: ArrayLike, p_fake: ArrayLike, path: str | PathLike[str]) -> Path:
    """Precision against recall of fakes, with average precision; the prevalence is the chance line."""
    y, p = validate_scores(y_true, p_fake)
    fig = Figure(figsize=_FIGSIZE)
    ax = fig.subplots()
    undefined = _one_class_message(y, "Precision-recall curve")
    if undefined:
        _say_undefined(ax, undefined)
    else:
        precision, recall, _ = precision_recall_curve(y, p, pos_label=1)
        ap = average_precision_score(y, p, pos_label=1)
        ax.step(recall, precision, where="post", color=_COLORS[LABEL_FAKE], label=f"AP = {ap:.4f}")
        prevalence = float(y.mean())
        ax.axhline(prevalence, color="grey", linestyle="--", linewidth=1, label=f"chance = {prevalence:.4f}")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_xlabel("recall (fakes caught)")
        ax.set_ylabel("precision (flagged that are fake)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left")
    ax.set_title("Precision-recall curve (fake is positive)")
    fig.tight_layout()
    return _save(fig, path)


def plot_score_histogram(y_true: ArrayLike, p_fake: ArrayLike, path: str | PathLike[str], threshold: float) -> Path:
    """How ``p_fake`` is spread for each true class, with the decision threshold.

    Shows at a glance whether errors are near-misses at the threshold or confident mistakes.
    """
    y, p = validate_scores(y_true, p_fake)
    fig = Figure(figsize=_FIGSIZE)
    ax = fig.subplots()
    bins = np.linspace(0.0, 1.0, 26)
    for value, name in enumerate(LABELS):
        scores = p[y == value]
        if scores.size:
            ax.hist(scores, bins=bins, alpha=0.55, color=_COLORS[name], label=f"{name} (n={scores.size})")
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold = {threshold:.4f}")
    ax.set_xlim(0, 1)
    ax.set_xlabel("p_fake")
    ax.set_ylabel("count")
    ax.set_title("Score distribution by true class")
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def plot_video_timeline(video: VideoResult, path: str | PathLike[str], threshold: float) -> Path:
    """p_fake of every sampled frame over time, one line per face track, with the threshold."""
    fig = Figure(figsize=(8.0, 3.5))
    ax = fig.add_subplot()
    series = video.track_series()
    for track in sorted(series, key=lambda t: (t == WHOLE_FRAME_TRACK, t)):
        times, scores = zip(*series[track])
        label = "whole frame" if track == WHOLE_FRAME_TRACK else f"face track {track}"
        ax.plot(times, scores, marker="o", markersize=3, label=label)
    if not series:
        _say_undefined(ax, "no frame could be scored")
    ax.axhline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:.2f}")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("p_fake")
    ax.set_title("Frame scores over time")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    return _save(fig, path)
