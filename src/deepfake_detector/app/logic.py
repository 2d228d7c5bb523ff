"""What the web page computes, without Streamlit: models to offer, verdicts on uploads,
rows, downloads and the timeline chart's data.

Every number here comes from the core (``Detector``, ``relabel``, ``Prediction.summary``),
so the page shows and downloads exactly what the command line prints.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np
from PIL import Image

from ..bundle import CONFIG_FILE
from ..ensemble import ENSEMBLE_FILE
from ..errors import BundleError, DeepfakeDetectorError, MediaError, MediaTooLargeError
from ..media.image import IMAGE_SUFFIXES, load_image
from ..media.video import VIDEO_SUFFIXES, is_video_path
from ..results import LABEL_FAKE, LABEL_REAL, LABEL_UNCERTAIN, WHOLE_FRAME_TRACK, Prediction, VideoResult
from . import DEFAULT_MAX_UPLOAD_MB, MAX_UPLOAD_ENV, MODELS_ENV

if TYPE_CHECKING:
    import pandas as pd

    from ..detector import Detector
    from ..explain import Explanation

SHIPPED_LABEL = "shipped detector (default)"
# One process serves every visitor, so the page takes what the REST service takes: a
# 40-megapixel photo decodes to 120 MB of RGB (and several times that with a heat map).
MAX_PIXELS = 40_000_000
MAX_PICTURE_HEIGHT = 2000  # pixels on the page: a 3x20000 strip must not make it two million tall
UPLOAD_TYPES = sorted(s.lstrip(".") for s in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
TABLE_COLUMNS = ("file", "verdict", "p_fake", "faces", "seconds", "note")

Row = dict[str, str | float | int | None]  # one line of the results table
Fact = str | float | Mapping[str, object]  # one line of "About this model"

NO_MODEL_MESSAGE = (
    "No detector to load: {reason} Start the page with a model folder, "
    "`deepfake-detector app --models DIR`, where DIR is a bundle folder or a folder of bundles."
)


@dataclass(frozen=True)
class Settings:
    """The page's settings; read from the environment because ``streamlit run`` owns argv."""

    models_dir: str | None = None
    max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Settings from ``DEEPFAKE_DETECTOR_MODELS`` and ``DEEPFAKE_DETECTOR_MAX_UPLOAD_MB``."""
        raw = environ.get(MAX_UPLOAD_ENV, "").strip()
        try:
            max_upload_mb = int(raw) if raw else DEFAULT_MAX_UPLOAD_MB
        except ValueError:
            max_upload_mb = DEFAULT_MAX_UPLOAD_MB
        return cls(models_dir=environ.get(MODELS_ENV) or None, max_upload_mb=max(1, max_upload_mb))

    @property
    def max_upload_bytes(self) -> int:
        """The cap in bytes, as an upload's length is measured; settings speak MB, as Streamlit's do."""
        return self.max_upload_mb * 1024 * 1024


def _is_model_folder(folder: Path) -> bool:
    """A bundle folder, or an ensemble folder (offered like a bundle)."""
    return (folder / CONFIG_FILE).is_file() or (folder / ENSEMBLE_FILE).is_file()


def find_models(models_dir: str | os.PathLike[str] | None) -> tuple[dict[str, Path], str | None]:
    """The models to offer, label -> folder, and why the shipped one is missing (or None).

    The shipped detector comes first when this install has it; ``models_dir`` adds itself
    when it is a bundle (or ensemble) folder, else each such folder directly inside it. A
    ``models_dir`` that is missing or holds no model is a :class:`BundleError`.
    """
    from ..shipped import default_model_dir

    models: dict[str, Path] = {}
    shipped_missing = None
    try:
        models[SHIPPED_LABEL] = default_model_dir()
    except BundleError as exc:
        shipped_missing = str(exc)
    if models_dir is None:
        return models, shipped_missing
    folder = Path(models_dir)
    if not folder.is_dir():
        raise BundleError(f"{folder}: model folder not found.")
    found = [folder] if _is_model_folder(folder) else sorted(p for p in folder.iterdir() if p.is_dir())
    found = [p for p in found if _is_model_folder(p)]
    if not found:
        raise BundleError(
            f"{folder}: no model bundle there (a bundle folder holds {CONFIG_FILE} and model.safetensors)."
        )
    for path in found:
        label = path.name if path.name not in models else str(path)
        models[label] = path
    return models, shipped_missing


@dataclass
class Judged:
    """One upload's result as the model gave it (at the bundle's threshold), kept across
    reruns so moving the threshold never runs the model again; heat maps come on demand."""

    prediction: Prediction
    explanations: list[tuple[str, Explanation]] | None = field(default=None, repr=False)


def _failed(name: str, error: str, seconds: float, kind: str) -> Judged:
    """A failure as a result, not an exception, so it takes its row in the table and its
    message on the page like any other upload."""
    return Judged(Prediction.failed(name, error, seconds, kind=kind))


def judge_upload(detector: Detector, name: str, data: bytes, max_bytes: int) -> Judged:
    """The verdict on one uploaded file (image or video); any failure is a failed Prediction
    whose error names the file, never an exception, so the page shows a message."""
    started = time.perf_counter()
    kind = "video" if is_video_path(name) else "image"
    if len(data) > max_bytes:
        error = MediaTooLargeError(
            name, f"{len(data) / 2**20:.1f} MB is over this page's limit of {max_bytes / 2**20:.0f} MB per file."
        )
        return _failed(name, str(error), 0.0, kind)
    try:
        if kind == "video":
            prediction = _judge_video(detector, name, data)
        else:
            image = load_image(data, name=name, min_side=detector.decode_size(), max_pixels=MAX_PIXELS)
            prediction = replace(detector.predict(image, keep_media=True), path=name)
    except DeepfakeDetectorError as exc:
        return _failed(name, str(exc), time.perf_counter() - started, kind)
    except Exception as exc:  # noqa: BLE001 - the page shows a message for any bad file, never a traceback
        error = f"{name}: unexpected error ({type(exc).__name__}: {exc})"
        return _failed(name, error, time.perf_counter() - started, kind)
    return Judged(prediction)


def _judge_video(detector: Detector, name: str, data: bytes) -> Prediction:
    """Videos are read from a file (PyAV seeks); the temporary path never shows in results."""
    with tempfile.TemporaryDirectory(prefix="deepfake-detector-") as folder:
        suffix = Path(name).suffix.lower()  # not the upload's name: it may be longer than a file system allows
        path = Path(folder) / ("upload" + (suffix if suffix in VIDEO_SUFFIXES else ""))
        path.write_bytes(data)
        try:
            prediction = detector.predict(str(path), keep_media=True)
        except MediaError as exc:
            raise type(exc)(name, exc.reason) from exc  # about the upload, not the temporary copy
    return replace(prediction, path=name)


def page_picture(image: np.ndarray, width: int, max_height: int = MAX_PICTURE_HEIGHT) -> np.ndarray:
    """``image`` resized to ``width`` pixels (its height to at most ``max_height``, never under
    one pixel), as the page shows it: Streamlit fails on a picture it would draw 0 pixels
    high (800x1), and sending the browser only what it shows spares memory on large photos."""
    height, old_width = image.shape[:2]
    scale = min(width / old_width, max_height / height)
    size = (max(1, round(old_width * scale)), max(1, round(height * scale)))
    if size == (old_width, height):
        return image
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0))


def plain_text(text: str) -> str:
    """``text`` (an error naming an uploaded file) with Markdown's punctuation escaped and
    line breaks flattened, so a file named ``[x](https://...)`` shows as its name, not a link."""
    return re.sub(r"([\\`*_\[\]<>$~|#!])", r"\\\1", " ".join(text.splitlines()))


def verdict_text(prediction: Prediction) -> str:
    """The Prediction metric's text: the label, or why there is none."""
    if not prediction.ok:
        return "Failed"
    return {LABEL_FAKE: "Fake", LABEL_REAL: "Real", LABEL_UNCERTAIN: "Uncertain"}.get(
        prediction.label or "", "No verdict"
    )


def confidence_text(prediction: Prediction) -> str:
    """The Confidence metric's text: a percentage as the prototype showed it, or a dash when
    there is no verdict to be confident in (a failure, or no face to judge)."""
    return "–" if prediction.confidence is None else f"{prediction.confidence:.1%}"


def seconds_text(prediction: Prediction) -> str:
    """The Processing time metric's text, in seconds to the hundredth: finer would be noise."""
    return f"{prediction.seconds:.2f} s"


def table_rows(predictions: list[Prediction]) -> list[Row]:
    """The results table: file, verdict, p_fake, faces, seconds, and the error or note."""
    rows: list[Row] = []
    for prediction in predictions:
        summary = prediction.summary()
        rows.append(
            {
                "file": prediction.path,
                "verdict": prediction.label if prediction.ok else "failed",
                "p_fake": None if prediction.p_fake is None else round(prediction.p_fake, 4),
                "faces": summary["n_faces"],
                "seconds": round(prediction.seconds, 3),
                "note": prediction.error or prediction.note or "",
            }
        )
    return rows


def csv_bytes(predictions: list[Prediction]) -> bytes:
    """The CSV download: the command line's ``--format csv`` rows."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=Prediction.summary_fields())
    writer.writeheader()
    for prediction in predictions:
        writer.writerow(prediction.summary())
    return out.getvalue().encode()


def json_bytes(predictions: list[Prediction]) -> bytes:
    """The JSON download: a list of full results, each the command line's JSON line."""
    return json.dumps([p.to_dict() for p in predictions], indent=2).encode()


def timeline_frame(video: VideoResult, threshold: float) -> pd.DataFrame:
    """The frame-score chart's data: time (s) against p_fake, one column per face track
    (frames scored whole form "whole frame"), and the threshold as a line of its own."""
    import pandas as pd

    series = video.track_series()
    columns = {}
    for track in sorted(series, key=lambda t: (t == WHOLE_FRAME_TRACK, t)):
        label = "whole frame" if track == WHOLE_FRAME_TRACK else f"face track {track}"
        times, scores = zip(*series[track])
        columns[label] = pd.Series(scores, index=times, dtype=float).groupby(level=0).max()
    frame = pd.DataFrame(columns)
    frame.index.name = "time (s)"
    frame["threshold"] = threshold
    return frame


def model_facts(detector: Detector) -> dict[str, Fact]:
    """The "About this model" panel: what the bundle says about itself, including what it
    was trained on and the terms of use that data came with, since both bound how the
    verdicts may be used."""
    config = detector.config
    summary = detector.summary()
    training = config.training
    uncertain = config.uncertain
    reencode = config.reencode
    return {
        "name": summary["name"],
        "architecture": summary["arch"],
        "input": f"{summary['input']}, {summary['input_size']} px",
        "trained on": summary["trained_on"],
        "terms of use": summary["terms"] or "not recorded",
        "training": ", ".join(
            f"{key} {training[key]}"
            for key in ("recipe", "epochs", "seed", "date", "package_version")
            if key in training
        )
        or "not recorded",
        "threshold": round(config.threshold, 4),
        "uncertain band": f"±{band:g} around the threshold" if (band := uncertain.get("band", 0.0)) else "none",
        "re-encoding check": ", ".join(reencode.names) if reencode is not None else "off",
        "validation scores": config.metrics.get("validation") or config.metrics or "not recorded",
    }
