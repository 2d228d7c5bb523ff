"""Judge a video: stream its sampled frames through faces, tracks and the model.

Frames are decoded one at a time; model inputs are batched across frames; only small
per-frame records (boxes and scores) are kept, plus, when asked, the few most
suspicious frames, so memory does not grow with the video's length. The verdict rule
lives in :mod:`deepfake_detector.verdict`. The uncertain rule is the band alone: the
re-encoding check is not run on frames, as a video's verdict already rests on several
frames, and re-encoded copies of every face would multiply the model's work.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Callable

import numpy as np

from .media.video import FrameSampling, iter_frames, probe_video
from .results import (
    SCORED_FACES,
    SCORED_NOTHING,
    SCORED_WHOLE_IMAGE,
    WHOLE_FRAME_TRACK,
    Artifacts,
    FaceResult,
    FrameResult,
    Prediction,
    TrackResult,
    VideoResult,
)
from .threshold import label_for
from .tracking import FaceTracker
from .verdict import VIDEO_RULE, deciding_tracks, track_score, video_score

if TYPE_CHECKING:
    from .detector import Detector, Options, _Analysed

VideoProgress = Callable[[str, int, int | None], None]
SUSPICIOUS_FRAMES = 3


class _Suspicious:
    """The few highest-scoring frames of one kind (face-scored or whole), with their pixels."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, np.ndarray, list[FaceResult]]] = []

    def offer(self, p: float, index: int, image: np.ndarray, faces: list[FaceResult]) -> None:
        entry = (p, -index, image, faces)
        if len(self._heap) < SUSPICIOUS_FRAMES:
            heapq.heappush(self._heap, entry)
        elif entry[:2] > self._heap[0][:2]:
            heapq.heapreplace(self._heap, entry)

    def ranked(self) -> list[tuple[str, np.ndarray, list[FaceResult]]]:
        ordered = sorted(self._heap, key=lambda e: (-e[0], -e[1]))
        return [(f"frame{-neg_index}", image, faces) for _, neg_index, image, faces in ordered]


def expected_frames(frame_count: int | None, fps: float, sampling: FrameSampling) -> int | None:
    """How many frames sampling will give, for progress bars (None when unknown)."""
    if frame_count is None:
        return sampling.max_frames
    if sampling.max_frames is not None:
        return min(sampling.max_frames, frame_count)
    if sampling.every_n is not None:
        return -(-frame_count // sampling.every_n)
    if sampling.per_second is not None and fps > 0:
        return max(1, int(frame_count / fps * sampling.per_second))
    return None


def judge_video(
    detector: Detector,
    path: str,
    opts: Options,
    sampling: FrameSampling,
    batch_size: int,
    progress: VideoProgress | None,
) -> Prediction:
    """The Prediction for one video file (raises typed errors for unreadable ones)."""
    started = time.perf_counter()
    opts = replace(opts, reencode=None)  # the band only: see the module's docstring
    info = probe_video(path)
    expected = expected_frames(info.frame_count, info.fps, sampling)
    uses_faces = detector.uses_faces(opts.faces)
    tracker = FaceTracker()
    timeline: list[FrameResult] = []
    buffer: list[tuple[FrameResult, _Analysed, np.ndarray | None]] = []
    buffered_inputs = 0
    faces_seen = False
    suspicious = {SCORED_FACES: _Suspicious(), SCORED_WHOLE_IMAGE: _Suspicious()}

    def flush() -> None:
        scores = detector._p_fake([x for _, analysed, _ in buffer for x in analysed.inputs])
        offset = 0
        for frame, analysed, image in buffer:
            n = len(analysed.inputs)
            frame.p_fake = detector._apply_scores(analysed, scores[offset : offset + n], opts, path)
            offset += n
            if image is not None and frame.p_fake is not None:
                suspicious[analysed.scored_on].offer(frame.p_fake, frame.index, image, frame.faces)
        buffer.clear()

    for n_done, frame in enumerate(iter_frames(path, sampling), start=1):
        analysed = detector._analyse(frame.image, opts, prefix=f"frame{frame.index}_")
        if uses_faces:
            # Every sampled frame counts for the tracker, so a track unseen for long ends.
            ids = tracker.update([f.box for f in analysed.faces])
            for face, track in zip(analysed.faces, ids):
                face.track = track
            faces_seen = faces_seen or bool(analysed.faces)
        result = FrameResult(frame.index, frame.time, None, analysed.faces)
        timeline.append(result)
        buffer.append((result, analysed, frame.image if opts.keep_media else None))
        buffered_inputs += len(analysed.inputs)
        if buffered_inputs >= batch_size or len(buffer) >= batch_size:
            flush()
            buffered_inputs = 0
        if progress is not None:
            progress(path, n_done, expected)
    flush()

    video = VideoResult(
        fps=info.fps,
        duration=info.duration,
        frames_sampled=len(timeline),
        width=info.width,
        height=info.height,
        rotation=info.rotation,
        sampling=sampling.to_dict(),
        rule=VIDEO_RULE,
    )
    video.timeline = timeline
    series = video.track_series()
    face_series = {t: v for t, v in series.items() if t != WHOLE_FRAME_TRACK}
    if face_series:
        scored_on, note, candidates = SCORED_FACES, None, face_series
    elif faces_seen:
        # Faces were there but all too small: the frames around them are not judged instead.
        scored_on, candidates = SCORED_NOTHING, {}
        note = f"faces found, all under {detector.min_face} px: too small to judge"
    elif series:
        scored_on, candidates = SCORED_WHOLE_IMAGE, series
        note = "no face found; whole frames were scored" if uses_faces else None
    else:
        scored_on, candidates = SCORED_NOTHING, {}
        note = "no face found" if timeline else "no frame could be sampled"
    deciding = set(deciding_tracks({t: len(v) for t, v in candidates.items()}))
    video.tracks = [
        TrackResult(
            track=t,
            n_frames=len(values),
            p_fake=(p := track_score([v for _, v in values])),
            label=label_for(p, opts.threshold, opts.band),
            first_time=values[0][0],
            last_time=values[-1][0],
        )
        for t, values in sorted(series.items())
    ]
    deciding_scores = [t.p_fake for t in video.tracks if t.track in deciding and t.p_fake is not None]
    p_video = video_score(deciding_scores) if deciding_scores else None
    artifacts = None
    if opts.keep_media:
        kind = SCORED_WHOLE_IMAGE if scored_on == SCORED_WHOLE_IMAGE else SCORED_FACES
        artifacts = Artifacts(images=suspicious[kind].ranked())
    return detector._prediction(
        path,
        p_video,
        time.perf_counter() - started,
        opts,
        kind="video",
        scored_on=scored_on,
        note=note,
        video=video,
        artifacts=artifacts,
    )
