"""The one result schema: what every front end prints, serves or downloads.

Plain dataclasses with no torch import, so that light front ends can use them.
``p_fake`` is always the probability that the input is fake. ``to_dict`` gives the full,
nested form (JSON lines, REST); ``summary`` gives the flat row (tables, CSV).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

LABEL_REAL = "real"
LABEL_FAKE = "fake"
LABELS = (LABEL_REAL, LABEL_FAKE)
LABEL_UNCERTAIN = "uncertain"  # p_fake too close to the threshold to call (see threshold.label_for)

# What a verdict was computed from.
SCORED_FACES = "faces"
SCORED_WHOLE_IMAGE = "whole_image"
SCORED_NOTHING = "nothing"

FACE_SCORED = "scored"
FACE_TOO_SMALL = "too_small"

WHOLE_FRAME_TRACK = -1  # the pseudo-track of video frames scored whole (no face in them)


@dataclass
class FaceResult:
    """One face: its box in pixels of the original image (x, y, w, h), the face
    detector's score, and the detector's verdict on it. A face under the minimum size
    has ``status="too_small"`` and no score: it is reported, not guessed."""

    box: tuple[float, float, float, float]
    detector_score: float
    status: str = FACE_SCORED
    p_fake: float | None = None
    label: str | None = None
    track: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["box"] = dict(zip(("x", "y", "w", "h"), (round(float(v), 1) for v in self.box)))
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FaceResult:
        box = d["box"]
        return cls(**{**d, "box": (box["x"], box["y"], box["w"], box["h"])})


@dataclass
class FrameResult:
    """One sampled video frame: its place in the video and what was found in it."""

    index: int
    time: float
    p_fake: float | None
    faces: list[FaceResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "time": round(self.time, 3),
            "p_fake": self.p_fake,
            "faces": [f.to_dict() for f in self.faces],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FrameResult:
        return cls(**{**d, "faces": [FaceResult.from_dict(f) for f in d["faces"]]})


@dataclass
class TrackResult:
    """One person followed across frames (or the whole frame when no face was found)."""

    track: int
    n_frames: int
    p_fake: float | None
    label: str | None
    first_time: float
    last_time: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class VideoResult:
    """What a video's verdict rests on: its tracks and its frame-score timeline."""

    fps: float
    duration: float | None
    frames_sampled: int
    width: int
    height: int
    rotation: int
    sampling: dict[str, Any]
    rule: str
    tracks: list[TrackResult] = field(default_factory=list)
    timeline: list[FrameResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k not in ("tracks", "timeline")}
        d["tracks"] = [t.to_dict() for t in self.tracks]
        d["timeline"] = [f.to_dict() for f in self.timeline]
        return d

    def track_series(self) -> dict[int, list[tuple[float, float]]]:
        """``(time, p_fake)`` of each track over the timeline; frames scored whole form track -1."""
        series: dict[int, list[tuple[float, float]]] = {}
        for frame in self.timeline:
            scored = [f for f in frame.faces if f.p_fake is not None and f.track is not None]
            for face in scored:
                series.setdefault(face.track, []).append((frame.time, face.p_fake))
            if not frame.faces and frame.p_fake is not None:
                series.setdefault(WHOLE_FRAME_TRACK, []).append((frame.time, frame.p_fake))
        return series

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VideoResult:
        return cls(
            **{
                **d,
                "tracks": [TrackResult(**t) for t in d["tracks"]],
                "timeline": [FrameResult.from_dict(f) for f in d["timeline"]],
            }
        )


@dataclass
class Artifacts:
    """Pixels behind a result, kept only when asked for (to draw or save them); never serialised.

    ``images`` holds ``(name, image, faces)``: the decoded image for a picture, or the most
    suspicious frames of a video (``frame<index>``), each with the faces found in it.
    """

    images: list[tuple[str, np.ndarray, list[FaceResult]]] = field(default_factory=list)


@dataclass
class Prediction:
    """The verdict on one input (an image or a video).

    ``label`` is ``"fake"`` when ``p_fake`` is at or above ``threshold``, else ``"real"``;
    ``"uncertain"`` when ``p_fake`` lies within the bundle's uncertain band of the threshold.
    ``confidence`` says how firmly ``p_fake`` sits on its side of the threshold, from 0.5 at the threshold
    to 1 at 0 or 1 (:func:`~deepfake_detector.threshold.confidence_for`). ``scored_on`` says whether
    the verdict rests on faces or on the whole image (no face found, or faces off).
    A failed input has ``error`` set and no label; an input with nothing to judge (only
    faces too small, or no face with ``faces="only"``) has no label and a ``note``.
    """

    path: str | None
    label: str | None
    p_fake: float | None
    confidence: float | None
    seconds: float
    threshold: float | None = None
    model: str | None = None
    error: str | None = None
    kind: str = "image"
    scored_on: str | None = None
    note: str | None = None
    faces: list[FaceResult] = field(default_factory=list)
    video: VideoResult | None = None
    artifacts: Artifacts | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """True when the input could be read (it may still have had nothing to judge)."""
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """The full result, nested; the CLI's JSON lines are exactly this."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("faces", "video", "artifacts")}
        d["faces"] = [f.to_dict() for f in self.faces]
        d["video"] = self.video.to_dict() if self.video is not None else None
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Prediction:
        """The inverse of :meth:`to_dict` (for clients reading JSON lines or REST responses).

        Keys that are not fields are left out, so a row with extra columns (the service's
        ``heat_maps``, a content hash) still reads."""
        video = d.get("video")
        known = {f.name for f in fields(cls)}
        return cls(
            **{
                **{k: v for k, v in d.items() if k in known},
                "faces": [FaceResult.from_dict(f) for f in d.get("faces", [])],
                "video": VideoResult.from_dict(video) if video is not None else None,
            }
        )

    def summary(self) -> dict[str, Any]:
        """The flat row for tables and CSV: every scalar field plus the number of faces
        (of a video: the number of face tracks, that is of people followed)."""
        d = {k: v for k, v in self.to_dict().items() if k not in ("faces", "video")}
        d["n_faces"] = (
            len(self.faces)
            if self.video is None
            else len([t for t in self.video.tracks if t.track != WHOLE_FRAME_TRACK])
        )
        return d

    @classmethod
    def summary_fields(cls) -> list[str]:
        """Column order for tables and CSV."""
        return list(cls.failed(None, "").summary())

    @classmethod
    def failed(
        cls, path: str | None, error: str, seconds: float = 0.0, model: str | None = None, kind: str = "image"
    ) -> Prediction:
        """The row for an input that could not be read."""
        return cls(
            path=path, label=None, p_fake=None, confidence=None, seconds=seconds, model=model, error=error, kind=kind
        )
