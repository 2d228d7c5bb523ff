"""Where ``predict`` writes: its result rows (an aligned table, JSON lines or CSV) and the face
crops, annotated pictures and Grad-CAM heat maps it saves beside them.

A row never breaks the table (names are escaped), a failed write names where the results go,
and a picture that cannot be saved is reported for its file while the run goes on.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import os
from pathlib import Path
from typing import IO, Any, Iterator

from .errors import InvalidArgumentError
from .media.files import make_folder
from .results import Prediction

MAX_STEM_BYTES = 100  # bytes of an input's name kept in the names of files written about it


def unique_stem(path: str | None) -> str:
    """A file-name stem for outputs about ``path``, unique even for equal names in other folders."""
    if path is None:
        return "input"
    digest = hashlib.sha1(path.encode(errors="surrogateescape")).hexdigest()[:6]
    # File systems count bytes, not characters; a character cut in two is dropped.
    stem = os.fsencode(Path(path).stem)[:MAX_STEM_BYTES].decode("utf-8", errors="ignore")
    return f"{stem}-{digest}"


def _printable(text: str) -> str:
    """``text`` with control characters (a newline in a file name) and undecodable bytes escaped,
    so that a table keeps one line per input."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class ResultWriter:
    """Streams Predictions as an aligned table, JSON lines (full results) or CSV (flat rows)."""

    def __init__(self, fmt: str, stream: IO[str], path_width: int, destination: str | None = None) -> None:
        self.fmt, self.stream = fmt, stream
        self.destination = destination or "standard output"
        self.path_width = max(4, min(path_width, 80))
        with self.naming_failures():
            if fmt == "csv":
                self.csv = csv.DictWriter(stream, fieldnames=Prediction.summary_fields())
                self.csv.writeheader()
            elif fmt == "table":
                w = self.path_width
                columns = f"{'label':<9}  {'p_fake':>7}  {'confidence':>10}  {'faces':>5}  {'seconds':>8}  note"
                stream.write(f"{'path':<{w}}  {columns}\n")

    @contextlib.contextmanager
    def naming_failures(self) -> Iterator[None]:
        """A failed write (a full disk, a closed pipe) as an error that names where the results go."""
        try:
            yield
        except OSError as exc:
            raise InvalidArgumentError(
                f"{self.destination}: cannot write the results ({exc.strerror or exc})."
            ) from exc

    def write(self, pred: Prediction) -> None:
        with self.naming_failures():
            self._write(pred)

    def _write(self, pred: Prediction) -> None:
        if self.fmt == "jsonl":
            self.stream.write(pred.to_json() + "\n")
        elif self.fmt == "csv":
            self.csv.writerow(pred.summary())
        else:
            w = self.path_width
            path = _printable(pred.path or "")
            if len(path) > w:
                path = "..." + path[-(w - 3) :]
            label = pred.label or "-"
            p = "-" if pred.p_fake is None else f"{pred.p_fake:.4f}"
            conf = "-" if pred.confidence is None else f"{pred.confidence:.4f}"
            n_faces = pred.summary()["n_faces"]
            note = _printable(pred.error or pred.note or "")
            if pred.kind == "video" and pred.video is not None:
                note = f"video, {pred.video.frames_sampled} frames" + (f"; {note}" if note else "")
            self.stream.write(
                f"{path:<{w}}  {label:<9}  {p:>7}  {conf:>10}  {n_faces:>5}  {pred.seconds:>8.3f}  {note}\n"
            )
        self.stream.flush()


class RunOutputs:
    """Face crops, annotated pictures and Grad-CAM heat maps written beside a predict run."""

    def __init__(self, crops: str | None, annotate: str | None, explain: str | None = None) -> None:
        self.crops = Path(crops) if crops else None
        self.annotate = Path(annotate) if annotate else None
        self.explain = Path(explain) if explain else None
        for folder in (self.crops, self.annotate, self.explain):
            if folder is not None:
                make_folder(folder, "a folder for saved pictures")

        self.unsaved: list[str] = []

    def save_crop(self, path: str | None, name: str, crop: Any) -> None:
        from PIL import Image

        assert self.crops is not None
        target = self.crops / f"{unique_stem(path)}_{name}.png"
        try:
            Image.fromarray(crop).save(target)
        except OSError as exc:  # a full disk or a name the file system refuses: this file only
            self.unsaved.append(f"{path}: face crop not saved to {target} ({exc.strerror or exc})")

    def save_annotated(self, pred: Prediction) -> None:
        from .annotate import annotated_pictures
        from .plots import plot_video_timeline

        if self.annotate is None or pred.artifacts is None:
            return
        stem = unique_stem(pred.path)
        try:
            for name, picture in annotated_pictures(pred):
                picture.save(self.annotate / f"{stem}_{name}.jpg", quality=90)
            if pred.video is not None and pred.threshold is not None:
                plot_video_timeline(pred.video, self.annotate / f"{stem}_timeline.png", pred.threshold)
        except OSError as exc:
            self.unsaved.append(f"{pred.path}: annotated picture not saved in {self.annotate} ({exc.strerror or exc})")

    def take_unsaved(self) -> list[str]:
        """What could not be saved since the last call, one message per file: reported, not fatal."""
        messages, self.unsaved = self.unsaved, []
        return messages

    def save_explained(self, pred: Prediction, explainer: Any) -> str | None:
        """One Grad-CAM overlay PNG per scored face (or whole image) of each picture kept.

        Returns why the heat maps could not be made, naming the file, or None: one picture's
        explanation failing must not stop a run over a folder.
        """
        if self.explain is None or pred.artifacts is None:
            return None
        stem = unique_stem(pred.path)
        try:
            for picture, explanation in explainer.explain_prediction(pred):
                prefix = "" if picture == "image" else f"{picture}_"
                for heat in explanation.heat_maps:
                    heat.overlay().save(self.explain / f"{stem}_{prefix}{heat.name}_gradcam.png")
        except Exception as exc:  # noqa: BLE001 - reported per file, like a file that fails to score
            return f"{pred.path}: no Grad-CAM heat map ({type(exc).__name__}: {exc})"
        return None
