"""How face and frame scores combine into the verdict on an image or a video.

Image: fake when any face is fake (``max`` of the face scores), or the ``mean`` when
asked. Video: each track (one person) scores the mean of its ``TOP_K`` highest frame
scores, so one odd frame does not decide and a manipulation shown in a few frames still
counts; the video scores its highest deciding track, so it is fake when any person in it
is. A track seen in fewer frames than ``TOP_K`` (or than the longest track, if that is
shorter) is a passing face or a false detection: it decides only when no longer track
exists.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .errors import InvalidArgumentError

AGGREGATES = ("max", "mean")
TOP_K = 3
VIDEO_RULE = (
    f"track score = mean of the track's {TOP_K} highest frame scores; tracks seen in fewer than "
    f"min({TOP_K}, longest track) frames are ignored when a longer one exists; "
    "video p_fake = highest track score (fake when any person is fake)"
)


def check_aggregate(how: str) -> str:
    if how not in AGGREGATES:
        raise InvalidArgumentError(f"The 'aggregate' parameter must be one of {AGGREGATES}; got {how!r}.")
    return how


def aggregate_faces(p_fake: Sequence[float], how: str = "max") -> float:
    """The image's p_fake from its faces' p_fake."""
    check_aggregate(how)
    if not len(p_fake):
        raise InvalidArgumentError("aggregate_faces needs at least one face score.")
    return float(np.max(p_fake) if how == "max" else np.mean(p_fake))


def track_score(frame_scores: Sequence[float], top_k: int = TOP_K) -> float:
    """Mean of a track's ``top_k`` highest frame scores (all of them when it has fewer)."""
    if not len(frame_scores):
        raise InvalidArgumentError("track_score needs at least one frame score.")
    top = np.sort(np.asarray(frame_scores, dtype=float))[::-1][:top_k]
    return float(top.mean())


def deciding_tracks(frame_counts: dict[int, int]) -> list[int]:
    """The tracks (by id) long enough to take part in the video's verdict."""
    if not frame_counts:
        return []
    needed = min(TOP_K, max(frame_counts.values()))
    return sorted(t for t, n in frame_counts.items() if n >= needed)


def video_score(track_scores: Sequence[float]) -> float:
    """The video's p_fake: its most suspicious track."""
    if not len(track_scores):
        raise InvalidArgumentError("video_score needs at least one track score.")
    return float(max(track_scores))
